"""Database of the scoring service: tables, engine, and the Alembic migrations that build them."""
