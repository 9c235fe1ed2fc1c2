"""Portfolio monitoring computed in the database: drift, performance, vintages, roll rates,
direction analysis, champion vs challenger, and the alerts raised from them.

============== ==================================================================
``models``     typed results (pydantic) the API, the dashboard and the report share
``statistics`` PSI, AUC, KS and DeLong variance from counts the SQL aggregated
``queries``    the SQL (SQLAlchemy Core, the same on SQLite and PostgreSQL)
``alerts``     alert rules, the ``monitoring_alerts`` table, webhook delivery
``report``     the whole monitoring summary, its JSON and static HTML
============== ==================================================================
"""
