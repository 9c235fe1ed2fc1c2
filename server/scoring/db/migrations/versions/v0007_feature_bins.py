"""Per-feature reference bins of each decision, for CSI: the ``decision_feature_bins`` table.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``decision_feature_bins`` (decision, feature, bin index); existing decisions keep
    no bins, since their feature values were never stored."""
    op.create_table(
        "decision_feature_bins",
        sa.Column("decision_id", sa.String(32), primary_key=True),
        sa.Column("feature", sa.String(200), primary_key=True),
        sa.Column("bin", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    """Drop ``decision_feature_bins`` (CSI is lost with it; decisions are untouched)."""
    op.drop_table("decision_feature_bins")
