"""Social accounts: bound to a platform adapter and where it posts, always read within one
organization's project."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from shared.kit import ids
from shared.models import SANDBOX_ADAPTER, SocialAccount


def add_social_account(
    session: Session,
    organization_id: str,
    project_id: str,
    platform: str,
    handle: str,
    *,
    base_url: str,
    adapter: str = SANDBOX_ADAPTER,
) -> SocialAccount:
    """A social account of the project, bound to a platform adapter and where it posts."""
    account = SocialAccount(
        id=ids.new_id(ids.SOCIAL_ACCOUNT),
        organization_id=organization_id,
        project_id=project_id,
        platform=platform,
        handle=handle,
        adapter=adapter,
        base_url=base_url.rstrip("/"),
    )
    session.add(account)
    return account


def accounts_query(
    organization_id: str,
    project_id: str,
    platform: str | None,
    after: tuple[datetime, str] | None,
    *,
    sandbox_only: bool = False,
) -> Select[SocialAccount]:
    """A project's social accounts, oldest first, keyset-paginated on (created_at, id)."""
    q = select(SocialAccount).where(
        SocialAccount.organization_id == organization_id, SocialAccount.project_id == project_id
    )
    if platform is not None:
        q = q.where(SocialAccount.platform == platform)
    if sandbox_only:
        q = q.where(SocialAccount.adapter == SANDBOX_ADAPTER)
    if after is not None:
        q = q.where(tuple_(SocialAccount.created_at, SocialAccount.id) > tuple_(after[0], after[1]))
    return q.order_by(SocialAccount.created_at, SocialAccount.id)
