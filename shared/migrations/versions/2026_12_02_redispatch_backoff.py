"""re-dispatch backs off: how often a post's task or a delivery's was given up as lost

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 02:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "scheduled_posts",
        sa.Column("redispatches", sa.SmallInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "webhook_deliveries",
        sa.Column("rearms", sa.SmallInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "rearms")
    op.drop_column("scheduled_posts", "redispatches")
