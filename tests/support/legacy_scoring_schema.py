"""The scoring database exactly as the service created it before it had migrations (frozen DDL).

Until Alembic migrations, ``create_schema`` ran ``metadata.create_all``; this is the DDL that call
emitted on SQLite and PostgreSQL (they differ only in ``SERIAL`` for the auto-numbered keys).
Frozen here, independent of today's ``tables.py`` and migrations, so the upgrade tests keep
starting from the schema real deployments have even after both move on.
"""

from __future__ import annotations

from sqlalchemy import Engine

_DDL = """
CREATE TABLE audit_head (
    id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE audit_log (
    seq INTEGER NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    kind VARCHAR(40) NOT NULL,
    payload TEXT NOT NULL,
    prev_hash VARCHAR(64) NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (seq)
);
CREATE TABLE batch_jobs (
    job_id VARCHAR(32) NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    stage VARCHAR(16) NOT NULL,
    model_id VARCHAR(200) NOT NULL,
    input_sha256 VARCHAR(64) NOT NULL,
    rows INTEGER NOT NULL,
    audit_seq INTEGER NOT NULL,
    PRIMARY KEY (job_id)
);
CREATE TABLE decisions (
    decision_id VARCHAR(32) NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    stage VARCHAR(16) NOT NULL,
    subject_hash VARCHAR(64) NOT NULL,
    fingerprint VARCHAR(64) NOT NULL,
    model_id VARCHAR(200) NOT NULL,
    role VARCHAR(16) NOT NULL,
    score FLOAT,
    probability FLOAT,
    outcome VARCHAR(32) NOT NULL,
    reasons JSON NOT NULL,
    rules_hit JSON NOT NULL,
    details JSON NOT NULL,
    audit_seq INTEGER NOT NULL,
    PRIMARY KEY (decision_id)
);
CREATE INDEX ix_decisions_created ON decisions (created_at);
CREATE TABLE fraud_links (
    link_id {serial} NOT NULL,
    application_key VARCHAR(64) NOT NULL,
    decision_id VARCHAR(32) NOT NULL,
    identifiers JSON NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (link_id)
);
CREATE TABLE fraud_list_entries (
    list_name VARCHAR(64) NOT NULL,
    value VARCHAR(200) NOT NULL,
    added_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (list_name, value)
);
CREATE TABLE model_assignments (
    stage VARCHAR(16) NOT NULL,
    champion_id VARCHAR(200),
    challenger_id VARCHAR(200),
    challenger_share FLOAT NOT NULL,
    history JSON NOT NULL,
    updated_at VARCHAR(40) NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (stage)
);
CREATE TABLE model_events (
    event_id {serial} NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    stage VARCHAR(16) NOT NULL,
    action VARCHAR(32) NOT NULL,
    model_id VARCHAR(200),
    previous_model_id VARCHAR(200),
    actor VARCHAR(200) NOT NULL,
    note TEXT NOT NULL,
    audit_seq INTEGER NOT NULL,
    PRIMARY KEY (event_id)
);
CREATE TABLE registered_models (
    model_id VARCHAR(200) NOT NULL,
    stage VARCHAR(16) NOT NULL,
    artifact_sha256 VARCHAR(64) NOT NULL,
    registered_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (model_id)
);
CREATE TABLE review_items (
    item_id {serial} NOT NULL,
    decision_id VARCHAR(32) NOT NULL,
    stage VARCHAR(16) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    reason TEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    reviewer VARCHAR(200),
    claimed_at VARCHAR(40),
    resolved_at VARCHAR(40),
    resolution VARCHAR(32),
    note TEXT,
    PRIMARY KEY (item_id),
    CONSTRAINT uq_review_decision_kind UNIQUE (decision_id, kind)
);
CREATE INDEX ix_review_status ON review_items (status);
"""

LEGACY_TABLES = (
    "audit_head",
    "audit_log",
    "batch_jobs",
    "decisions",
    "fraud_links",
    "fraud_list_entries",
    "model_assignments",
    "model_events",
    "registered_models",
    "review_items",
)
"""Every table of the pre-migration schema."""


def legacy_statements(dialect: str) -> list[str]:
    """The ``CREATE`` statements, one per table or index, for ``sqlite`` or ``postgresql``."""
    serial = {"sqlite": "INTEGER", "postgresql": "SERIAL"}[dialect]
    return [s.strip() for s in _DDL.replace("{serial}", serial).split(";") if s.strip()]


def create_legacy_schema(engine: Engine, *, tables: tuple[str, ...] = LEGACY_TABLES) -> None:
    """Create the pre-migration schema (or only ``tables`` of it), with no ``alembic_version``."""
    with engine.begin() as connection:
        for statement in legacy_statements(engine.dialect.name):
            if _table_of(statement) in tables:
                connection.exec_driver_sql(statement)


def _table_of(statement: str) -> str:
    """Table a ``CREATE TABLE t (`` or ``CREATE INDEX i ON t (`` statement is about."""
    words = statement.split()
    return words[2] if words[1] == "TABLE" else words[words.index("ON") + 1]
