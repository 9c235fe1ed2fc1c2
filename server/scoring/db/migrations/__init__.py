"""Alembic scripts of the scoring database (``env.py`` and ``versions/``), run by ``db.migrate``."""
