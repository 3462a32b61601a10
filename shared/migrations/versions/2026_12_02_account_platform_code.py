"""an account the platform refused keeps the platform's code, for publish-now's PLATFORM_ERROR

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("social_accounts", sa.Column("status_platform_code", sa.Text()))
    # Accounts marked before this column: the code each platform answers a dead token with.
    op.execute(
        "UPDATE social_accounts SET status_platform_code = CASE platform"
        " WHEN 'instagram' THEN '190' ELSE 'access_token_invalid' END"
        " WHERE status = 'reauth_required'"
    )


def downgrade() -> None:
    op.drop_column("social_accounts", "status_platform_code")
