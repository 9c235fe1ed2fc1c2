"""Loan purposes read from applicants' descriptions: the ``purpose_labels`` table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``purpose_labels`` (text, predicted purpose and confidence, reviewed label)."""
    op.create_table(
        "purpose_labels",
        sa.Column("label_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("predicted", sa.String(32), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("label", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("review_item_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.String(40), nullable=True),
        sa.UniqueConstraint("decision_id", name="uq_purpose_decision"),
    )


def downgrade() -> None:
    """Drop ``purpose_labels`` (the human corrections are lost with it)."""
    op.drop_table("purpose_labels")
