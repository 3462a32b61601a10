"""Operator-side creation of organizations and their projects, with a first key and accounts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.accounts.accounts import (
    IssuedAccount,
    add_issued_account,
    add_social_account,
    emulator_instagram_account,
    emulator_tiktok_account,
)
from shared.kit import ids
from shared.kit.errors import NotFound, Validation
from shared.kit.settings import get_settings
from shared.models import ApiKey, Organization, Platform, Project, SocialAccount
from shared.tenancy.keys import IssuedKey, create_key, keys_changed
from shared.tenancy.tiers import checked_limit, tier_named

# What Instagram accepts as a username; another name lets the emulator choose one.
_INSTAGRAM_USERNAME = re.compile(r"[A-Za-z0-9._]{1,30}")
_TIKTOK_USERNAME = re.compile(r"[a-z0-9._]{2,24}")


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    project_id: str
    key: IssuedKey
    social_accounts: list[SocialAccount]  # one per platform asked for
    extra_accounts: list[SocialAccount]  # more, tiktok and instagram in turn


def _checked(name: str, platforms: list[str]) -> list[str]:
    """The platforms asked for, each once, once the name and every platform are valid."""
    if not name.strip():
        raise Validation.at("name", "name must not be empty")
    known = {p.value for p in Platform}
    unknown = [p for p in platforms if p not in known]
    if unknown or not platforms:
        raise Validation.at("platforms", f"platforms must be among {sorted(known)}")
    return list(dict.fromkeys(platforms))


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def issue_emulator_accounts(
    name: str,
    platforms: list[str],
    *,
    instagram_api_url: str,
    tiktok_api_url: str,
    timeout: float,
) -> dict[str, IssuedAccount]:
    """The new tenant's accounts, each issued by its platform's emulator. Called before the
    tenant's transaction, so none waits on an emulator."""
    wanted = _checked(name, platforms)
    issued = {}
    if Platform.INSTAGRAM in wanted:
        candidate = f"{_slug(name)}_{Platform.INSTAGRAM.value}"
        username = candidate if _INSTAGRAM_USERNAME.fullmatch(candidate) else None
        issued[Platform.INSTAGRAM.value] = emulator_instagram_account(
            instagram_api_url, username, timeout=timeout
        )
    if Platform.TIKTOK in wanted:
        candidate = f"{_slug(name)}_{Platform.TIKTOK.value}"
        username = candidate if _TIKTOK_USERNAME.fullmatch(candidate) else None
        issued[Platform.TIKTOK.value] = emulator_tiktok_account(
            tiktok_api_url, username, timeout=timeout
        )
    return issued


def create_tenant(
    session: Session,
    name: str,
    platforms: list[str],
    *,
    sandbox_url: str,
    env: str = "live",
    extra_accounts: int = 0,
    issued: Mapping[str, IssuedAccount] | None = None,
    tier: str | None = None,
) -> Tenant:
    """An organization in `tier` (default: RATE_LIMIT_DEFAULT_TIER), one project, one account
    per platform (bound to the `issued` account of that platform, else to the sandbox),
    `extra_accounts` more sandbox-bound ones for load and tests, and a full-scope key of the
    organization's tier."""
    wanted = _checked(name, platforms)
    org_tier = tier_named(tier if tier is not None else get_settings().rate_limit_default_tier)
    org = Organization(id=ids.new_id(ids.ORG), name=name, tier=org_tier.value)
    project = Project(id=ids.new_id(ids.PROJECT), organization_id=org.id, name=f"{name} project")
    session.add_all([org, project])
    session.flush()
    slug = _slug(name)
    accounts = []
    for platform in wanted:
        bound = (issued or {}).get(platform)
        if bound is None:
            account = add_social_account(
                session, org.id, project.id, platform, f"{slug}_{platform}", base_url=sandbox_url
            )
        else:
            account = add_issued_account(session, org.id, project.id, platform, bound)
        accounts.append(account)
    extra = [
        add_social_account(
            session,
            org.id,
            project.id,
            Platform.TIKTOK if i % 2 == 0 else Platform.INSTAGRAM,
            f"{slug}_{i}",
            base_url=sandbox_url,
        )
        for i in range(extra_accounts)
    ]
    key = create_key(session, org.id, ["*"], env=env, name="tenant bootstrap")
    session.flush()
    return Tenant(org.id, project.id, key, accounts, extra)


def _organization(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id}")
    return org


def set_organization_tier(
    session: Session, organization_id: str, tier: str, *, keys: bool = False
) -> int:
    """Move an organization to `tier` (its daily write cap, unless it has its own) and, with
    `keys`, every active key of it too; else its keys keep their tiers. How many keys moved."""
    org = _organization(session, organization_id)
    org.tier = tier_named(tier).value
    keys_changed(session)
    if not keys:
        return 0
    moved = session.execute(
        update(ApiKey)
        .where(ApiKey.organization_id == org.id, ApiKey.revoked_at.is_(None))
        .values(tier=org.tier)
    )
    return int(moved.rowcount)  # type: ignore[attr-defined]


def set_daily_write_cap(session: Session, organization_id: str, cap: int | None) -> Organization:
    """Give an organization its own daily write cap, or (None) its tier's again."""
    org = _organization(session, organization_id)
    org.daily_write_cap = checked_limit("dailyWriteCap", cap)
    keys_changed(session)
    return org
