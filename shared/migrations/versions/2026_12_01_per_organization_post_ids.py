"""per-organization scheduled post ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("scheduled_posts", sa.Column("public_id", sa.String(length=64), nullable=True))
    # Every existing post was created with one global id space: its wire id is its key.
    op.execute("UPDATE scheduled_posts SET public_id = id")
    op.alter_column("scheduled_posts", "public_id", nullable=False)
    op.create_index(
        "uq_scheduled_posts_org_public_id",
        "scheduled_posts",
        ["organization_id", "public_id"],
        unique=True,
    )
    op.drop_index("ix_scheduled_posts_project_sched", table_name="scheduled_posts")
    op.create_index(
        "ix_scheduled_posts_project_sched",
        "scheduled_posts",
        ["project_id", "scheduled_for", "public_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_posts_project_sched", table_name="scheduled_posts")
    op.create_index(
        "ix_scheduled_posts_project_sched", "scheduled_posts", ["project_id", "scheduled_for", "id"]
    )
    op.drop_index("uq_scheduled_posts_org_public_id", table_name="scheduled_posts")
    op.drop_column("scheduled_posts", "public_id")
