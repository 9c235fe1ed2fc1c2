"""The scoring service's dashboard: page and chart specs, the SQL behind them, HTML templates.

A page is a list of :class:`~server.scoring.dashboard.charts.ChartSpec`, each fed by a typed
query function (SQLAlchemy Core, run in the database); the routes in ``api/dashboard.py`` render
them with Plotly (its JavaScript served from the installed ``plotly`` wheel, never a CDN) and
serve the same numbers as CSV.
"""
