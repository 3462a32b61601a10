"""rate-limit tiers: a tier on every organization and key, a long-running limit of a key's
own, and an organization's own daily write cap

Every organization and key that exists before this revision becomes `pilot`, not the
`standard` new ones get: the limits keys had until now were 1,200 reads and 300 writes a
minute, and pilot's 1,200 read-light and 600 write-light cut neither, where standard's
120 and 60 would. A key's own read and write limits are kept as they were.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIER_CHECK = "tier IN ('standard', 'pilot', 'partner')"


def upgrade() -> None:
    for table in ("organizations", "api_keys"):
        # Existing rows take `pilot` as the column is added, then new ones default to standard.
        op.add_column(
            table, sa.Column("tier", sa.String(length=16), server_default="pilot", nullable=False)
        )
        op.alter_column(table, "tier", server_default="standard")
        op.create_check_constraint(op.f(f"ck_{table}_tier"), table, TIER_CHECK)
    op.add_column("organizations", sa.Column("daily_write_cap", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("rate_limit_long_running", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "rate_limit_long_running")
    op.drop_column("organizations", "daily_write_cap")
    for table in ("api_keys", "organizations"):
        op.drop_constraint(op.f(f"ck_{table}_tier"), table, type_="check")
        op.drop_column(table, "tier")
