"""Schema migrations of the scoring database: Alembic configured in code, run at every start.

The scripts live in ``db/migrations`` and ship with the package, so nothing is read from an
``alembic.ini``. :func:`upgrade_database` brings any database to the latest revision:

- an empty database gets every table from the migrations;
- a database created before migrations existed (the ten baseline tables, made by
  ``metadata.create_all``, and no ``alembic_version`` table) is stamped with the baseline
  revision, which is exactly that schema, and then upgraded: no table is recreated, no row lost;
- a versioned database is upgraded from its revision.

A new revision (after changing ``tables.py``), from a source checkout::

    from alembic import command
    from server.scoring.db.engine import make_engine, write_connection
    from server.scoring.db.migrate import alembic_config

    with write_connection(make_engine(URL)) as connection:
        command.revision(alembic_config(connection), message="...", autogenerate=True)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection

from server.scoring.db.engine import write_connection
from server.scoring.errors import SchemaVersionError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
"""Alembic script directory (``env.py``, ``versions/``)."""

BASELINE_REVISION = "0001"
"""Revision whose schema is the one the service created before it had migrations."""

BASELINE_TABLES = frozenset(
    {
        "decisions",
        "audit_log",
        "audit_head",
        "review_items",
        "fraud_links",
        "fraud_list_entries",
        "model_assignments",
        "model_events",
        "registered_models",
        "batch_jobs",
    }
)
"""Tables of :data:`BASELINE_REVISION`, i.e. of every database created before migrations."""

VERSION_TABLE = "alembic_version"

_MIGRATION_LOCK = 0x66656472  # "fedr": PostgreSQL advisory-lock key held while migrating

SchemaState = Literal["empty", "unversioned", "versioned"]


def alembic_config(connection: Connection) -> Config:
    """Alembic configuration that runs the packaged scripts on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Latest revision of the packaged migrations."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:
        raise SchemaVersionError(f"migrations in {MIGRATIONS_DIR} must have one head; got none")
    return head


def current_revision(connection: Connection) -> str | None:
    """Revision recorded in the database, or None when it is not versioned."""
    return MigrationContext.configure(connection).get_current_revision()


def schema_state(connection: Connection) -> SchemaState:
    """Whether the database is empty, an unversioned pre-migration one, or versioned.

    Raises
    ------
    SchemaVersionError
        Some baseline tables exist without a version table, but not all of them: this is not a
        database the service created, and stamping it would hide the missing tables.
    """
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables:
        return "versioned"
    found = tables & BASELINE_TABLES
    if not found:
        return "empty"
    missing = BASELINE_TABLES - tables
    if missing:
        raise SchemaVersionError(
            "an unversioned scoring database must hold every table the service created before "
            f"migrations; missing {sorted(missing)} (found {sorted(found)})"
        )
    return "unversioned"


def upgrade_database(engine: Engine) -> str:
    """Bring the database to the latest revision (idempotent); returns that revision.

    Runs in one transaction holding the database's write lock (``BEGIN IMMEDIATE`` on SQLite, an
    advisory lock on PostgreSQL), so a service and a CLI command starting together migrate
    one after the other, and a failed migration leaves the database as it was.

    Raises
    ------
    SchemaVersionError
        The database is at a revision these migrations do not know (a newer release migrated
        it), or holds part of the baseline tables only.
    """
    with write_connection(engine) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = alembic_config(connection)
        state = schema_state(connection)
        try:
            if state == "unversioned":
                logger.warning(
                    "database has the pre-migration schema and no %s table: stamping it as "
                    "revision %s, then upgrading",
                    VERSION_TABLE,
                    BASELINE_REVISION,
                )
                command.stamp(config, BASELINE_REVISION)
            before = current_revision(connection)
            command.upgrade(config, "head")
        except CommandError as e:
            raise SchemaVersionError(
                f"database revision must be one of these migrations (head {head_revision()}); "
                f"cannot upgrade: {e}"
            ) from e
        after = current_revision(connection)
    if after is None:
        raise SchemaVersionError("database revision must be set after upgrading; got none")
    if before != after:
        logger.info("database migrated from revision %s to %s", before, after)
    return after
