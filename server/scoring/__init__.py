"""Lender-facing scoring service (FastAPI). Imports the fedrisk core only.

=================== =============================================================================
``app``             ``create_app(settings)``: the FastAPI app, its lifespan and error handlers
``settings``        every setting and environment variable (``FEDRISK_*``), read once
``startup``         the components built from the settings, one named step each
``context``         what the routes share at run time (``ServiceContext``)
``deps``            request dependencies: ``ServiceDep``, the stage in a path
``apikeys``         roles, API keys (argon2-hashed), their verification and its cache
``access``          the role each route needs, checking a request's key, access audit records
``api/``            one router per resource (decisions, reviews, batch, models, stages, ...)
``payloads``        request and response bodies
``middleware``      body-size limits and request metrics at the edge
``telemetry``       Prometheus metrics
``errors``          the service's errors, one HTTP status each
``service``         the A-, B- and C-card decision paths
``registry``        verified, signed model artifacts; champion and challenger routing
``batch``           batch scoring of CSV and Parquet uploads
``antifraud``       fraud rules, relationship graph, keyed identifier hashes
``store``           database reads and audited writes (review queue, model assignments, lists)
``writer``          the group-commit writer of decisions
``audit``           the hash-chained audit log and its verification
``db/``             tables, engine, and the Alembic migrations run at every start
``cli``             ``serve``, ``serve keys ...``, ``audit verify``, ``models ...``
=================== =============================================================================
"""
