"""Baseline: the ten tables the service created with ``metadata.create_all`` before migrations.

A database made by that code (no ``alembic_version`` table) is stamped with this revision by
``server.scoring.db.migrate`` instead of running it, so this revision must stay exactly that
schema: later changes go into new revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

HASH_LEN = 64


def upgrade() -> None:
    """Create the baseline tables."""
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("subject_hash", sa.String(HASH_LEN), nullable=False),
        sa.Column("fingerprint", sa.String(HASH_LEN), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("probability", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("rules_hit", sa.JSON, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_decisions_created", "decisions", ["created_at"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(HASH_LEN), nullable=False),
        sa.Column("hash", sa.String(HASH_LEN), nullable=False),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(HASH_LEN), nullable=False),
    )
    op.create_table(
        "review_items",
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("claimed_at", sa.String(40), nullable=True),
        sa.Column("resolved_at", sa.String(40), nullable=True),
        sa.Column("resolution", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.UniqueConstraint("decision_id", "kind", name="uq_review_decision_kind"),
    )
    op.create_index("ix_review_status", "review_items", ["status"])
    op.create_table(
        "fraud_links",
        sa.Column("link_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("application_key", sa.String(HASH_LEN), nullable=False),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("identifiers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "fraud_list_entries",
        sa.Column("list_name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
        sa.Column("added_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "model_assignments",
        sa.Column("stage", sa.String(16), primary_key=True),
        sa.Column("champion_id", sa.String(200), nullable=True),
        sa.Column("challenger_id", sa.String(200), nullable=True),
        sa.Column("challenger_share", sa.Float, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "model_events",
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=True),
        sa.Column("previous_model_id", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "registered_models",
        sa.Column("model_id", sa.String(200), primary_key=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("artifact_sha256", sa.String(HASH_LEN), nullable=False),
        sa.Column("registered_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "batch_jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("input_sha256", sa.String(HASH_LEN), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    """Drop every baseline table (and so every row)."""
    op.drop_index("ix_review_status", table_name="review_items")
    op.drop_index("ix_decisions_created", table_name="decisions")
    for table in (
        "batch_jobs",
        "registered_models",
        "model_events",
        "model_assignments",
        "fraud_list_entries",
        "fraud_links",
        "review_items",
        "audit_head",
        "audit_log",
        "decisions",
    ):
        op.drop_table(table)
