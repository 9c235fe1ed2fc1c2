"""Covering indexes for the monitoring views over a million loans on PostgreSQL.

``ix_outcomes_month_state`` replaces ``ix_outcomes_month``: it still starts with the calendar
month, and it carries every column the month-filtered views read (the loan, its month on book,
days past due, balance, charge-off), so PostgreSQL answers them with an index-only scan instead
of visiting one heap page per row (a month's rows are spread over the whole table, because a
loan's months are imported together). ``ix_decisions_scores`` does the same for the matured-loan
views, which read only the decision's role, score and PD beside its id.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Replace the month index of ``outcomes`` by a covering one; add ``ix_decisions_scores``."""
    op.drop_index("ix_outcomes_month", table_name="outcomes")
    op.create_index(
        "ix_outcomes_month_state",
        "outcomes",
        ["month", "decision_id", "month_on_book", "dpd", "balance", "charge_off"],
    )
    op.create_index(
        "ix_decisions_scores", "decisions", ["decision_id", "role", "score", "probability"]
    )


def downgrade() -> None:
    """Back to the plain month index (the views are correct either way, only slower)."""
    op.drop_index("ix_decisions_scores", table_name="decisions")
    op.drop_index("ix_outcomes_month_state", table_name="outcomes")
    op.create_index("ix_outcomes_month", "outcomes", ["month"])
