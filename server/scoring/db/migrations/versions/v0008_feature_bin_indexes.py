"""Covering indexes for the CSI views over a million loans on PostgreSQL.

``ix_feature_bins_covering`` carries each decision's bin beside the primary key's (decision,
feature), so the CSI views read their bins from the index alone instead of visiting one heap page
per decision and feature. ``ix_decisions_month_role`` starts with the decision time and carries
the stage, role and id, so the latest month's champion applications are one index range whose
rows need no heap visit either.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``ix_feature_bins_covering`` and ``ix_decisions_month_role``."""
    op.create_index(
        "ix_feature_bins_covering", "decision_feature_bins", ["decision_id", "feature", "bin"]
    )
    op.create_index(
        "ix_decisions_month_role", "decisions", ["created_at", "stage", "role", "decision_id"]
    )


def downgrade() -> None:
    """Drop both (the views are correct either way, only slower)."""
    op.drop_index("ix_decisions_month_role", table_name="decisions")
    op.drop_index("ix_feature_bins_covering", table_name="decision_feature_bins")
