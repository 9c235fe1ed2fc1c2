"""Engine of the scoring database: SQLite tuned for appends, or PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

IMMEDIATE = "fedrisk_sqlite_immediate"
"""Execution option: on SQLite, begin with ``BEGIN IMMEDIATE`` (take the write lock up front)."""


def default_db_url(registry_dir: Path) -> str:
    """SQLite file next to the registry: ``sqlite:///REGISTRY/../scoring.db``."""
    return f"sqlite:///{(registry_dir.resolve().parent / 'scoring.db').as_posix()}"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the SQLAlchemy engine for ``url`` and tune it for an append-heavy workload.

    Parameters
    ----------
    url
        ``sqlite:///path.db`` or ``postgresql+psycopg://user@host:port/db``.
    pool_size
        Connections kept open (PostgreSQL).

    Notes
    -----
    SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives a process crash (the WAL
    is written before the commit returns) and readers never block the writer; only a power loss
    can drop the last commits. The sqlite3 driver's implicit transaction handling is switched off
    so SQLAlchemy's ``BEGIN`` really starts the transaction (``BEGIN IMMEDIATE`` for writers,
    which serialises appends to the audit chain across processes).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30.0},
            poolclass=NullPool if database in ("", ":memory:") else None,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # driver-level autocommit: SQLAlchemy's own BEGIN (below) controls the transaction
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(IMMEDIATE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take the write lock up front (SQLite ``BEGIN IMMEDIATE``)."""
    return engine.connect().execution_options(**{IMMEDIATE: True})
