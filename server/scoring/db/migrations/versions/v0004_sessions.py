"""Browser sessions: the ``browser_sessions`` table behind the dashboard's login cookie.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``browser_sessions`` (SHA-256 of the session token, key id, CSRF token, times)."""
    op.create_table(
        "browser_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_browser_sessions_key", "browser_sessions", ["key_id"])


def downgrade() -> None:
    """Drop ``browser_sessions`` (everyone signed in to the dashboard is signed out)."""
    op.drop_index("ix_browser_sessions_key", table_name="browser_sessions")
    op.drop_table("browser_sessions")
