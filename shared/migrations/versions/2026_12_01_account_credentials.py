"""social account credentials and status; a post's platform handle

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "social_accounts", sa.Column("platform_user_id", sa.String(length=64), nullable=True)
    )
    op.add_column("social_accounts", sa.Column("credentials", sa.LargeBinary(), nullable=True))
    op.add_column(
        "social_accounts",
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "social_accounts",
        sa.Column("token_refreshed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "social_accounts",
        sa.Column("status", sa.String(length=24), server_default="connected", nullable=False),
    )
    op.add_column("social_accounts", sa.Column("status_reason", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_social_accounts_status"),
        "social_accounts",
        "status IN ('connected', 'reauth_required', 'disconnected')",
    )
    op.add_column(
        "social_accounts", sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True)
    )
    # Every existing account was connected when it was made.
    op.execute("UPDATE social_accounts SET connected_at = created_at")
    op.alter_column(
        "social_accounts", "connected_at", nullable=False, server_default=sa.text("now()")
    )
    op.add_column(
        "scheduled_posts", sa.Column("platform_handle", sa.String(length=200), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("scheduled_posts", "platform_handle")
    op.drop_constraint(op.f("ck_social_accounts_status"), "social_accounts", type_="check")
    for column in (
        "connected_at",
        "status_reason",
        "status",
        "token_refreshed_at",
        "token_expires_at",
        "credentials",
        "platform_user_id",
    ):
        op.drop_column("social_accounts", column)
