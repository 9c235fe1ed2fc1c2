"""Outcomes: booked ``loans``, their monthly ``outcomes`` and the ``monitoring_alerts`` raised.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEGMENT_LEN = 64


def upgrade() -> None:
    """Create ``loans``, ``outcomes`` and ``monitoring_alerts`` with their indexes."""
    op.create_table(
        "loans",
        sa.Column("decision_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(128), nullable=True),
        sa.Column("originated", sa.String(7), nullable=False),
        sa.Column("principal", sa.Float, nullable=False),
        sa.Column("industry", sa.String(SEGMENT_LEN), nullable=False),
        sa.Column("purpose", sa.String(SEGMENT_LEN), nullable=False),
        sa.Column("purpose_text", sa.Text, nullable=False),
        sa.Column("customer_type", sa.String(SEGMENT_LEN), nullable=False),
        sa.Column("region", sa.String(SEGMENT_LEN), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
        sa.Column("months_on_book", sa.Integer, nullable=False),
        sa.Column("first_bad_mob", sa.Integer, nullable=True),
        sa.Column("income", sa.Float, nullable=False),
        sa.Column("charged_off", sa.Float, nullable=False),
        sa.Column("recovered", sa.Float, nullable=False),
    )
    op.create_index("ix_loans_originated", "loans", ["originated"])
    op.create_table(
        "outcomes",
        sa.Column("decision_id", sa.String(32), primary_key=True),
        sa.Column("month_on_book", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("dpd", sa.Integer, nullable=False),
        sa.Column("balance", sa.Float, nullable=False),
        sa.Column("paid", sa.Float, nullable=False),
        sa.Column("interest_fees", sa.Float, nullable=False),
        sa.Column("charge_off", sa.Float, nullable=False),
        sa.Column("recoveries", sa.Float, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_outcomes_month", "outcomes", ["month"])
    op.create_index("ix_outcomes_audit_seq", "outcomes", ["audit_seq"])
    op.create_table(
        "monitoring_alerts",
        sa.Column("alert_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("as_of", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("retrain_recommended", sa.Boolean, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.UniqueConstraint("kind", "subject", "as_of", name="uq_alert_kind_subject_month"),
    )


def downgrade() -> None:
    """Drop the three tables (every outcome and alert is lost)."""
    op.drop_table("monitoring_alerts")
    op.drop_index("ix_outcomes_audit_seq", table_name="outcomes")
    op.drop_index("ix_outcomes_month", table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_index("ix_loans_originated", table_name="loans")
    op.drop_table("loans")
