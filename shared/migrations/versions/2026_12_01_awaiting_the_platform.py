"""posts awaiting the platform's asynchronous completion

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "scheduled_posts",
        sa.Column("awaiting_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "scheduled_posts", sa.Column("poll_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "scheduled_posts", sa.Column("polls", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_index(
        "ix_scheduled_posts_awaiting_poll",
        "scheduled_posts",
        ["poll_at"],
        postgresql_where=sa.text("status = 'publishing' AND awaiting_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_posts_awaiting_poll", table_name="scheduled_posts")
    op.drop_column("scheduled_posts", "polls")
    op.drop_column("scheduled_posts", "poll_at")
    op.drop_column("scheduled_posts", "awaiting_since")
