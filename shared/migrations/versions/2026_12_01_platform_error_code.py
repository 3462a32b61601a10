"""a platform's refusal is lastError.code PLATFORM_ERROR, the contract's name

Posts that failed with the code this product used before (PLATFORM_REJECTED) are renamed,
so a client branching on the code sees one name for one meaning. The event log keeps what
it recorded at the time: it is append-only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rename(old: str, new: str) -> None:
    op.execute(
        sa.text(
            "UPDATE scheduled_posts SET last_error = jsonb_set(last_error, '{code}',"
            " to_jsonb(CAST(:new AS text))) WHERE last_error ->> 'code' = :old"
        ).bindparams(old=old, new=new)
    )


def upgrade() -> None:
    _rename("PLATFORM_REJECTED", "PLATFORM_ERROR")


def downgrade() -> None:
    _rename("PLATFORM_ERROR", "PLATFORM_REJECTED")
