"""Operator-side creation of organizations and their projects, with a first key and accounts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from shared.accounts.accounts import add_social_account
from shared.kit import ids
from shared.kit.errors import Validation
from shared.models import Organization, Platform, Project, SocialAccount
from shared.tenancy.keys import IssuedKey, create_key


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    project_id: str
    key: IssuedKey
    social_accounts: list[SocialAccount]  # one per platform asked for
    extra_accounts: list[SocialAccount]  # more, tiktok and instagram in turn


def create_tenant(
    session: Session,
    name: str,
    platforms: list[str],
    *,
    sandbox_url: str,
    env: str = "live",
    extra_accounts: int = 0,
) -> Tenant:
    """An organization, one project, one sandbox-bound account per platform (and
    `extra_accounts` more, for load and tests), and a full-scope key."""
    if not name.strip():
        raise Validation.at("name", "name must not be empty")
    known = {p.value for p in Platform}
    unknown = [p for p in platforms if p not in known]
    if unknown or not platforms:
        raise Validation.at("platforms", f"platforms must be among {sorted(known)}")
    org = Organization(id=ids.new_id(ids.ORG), name=name)
    project = Project(id=ids.new_id(ids.PROJECT), organization_id=org.id, name=f"{name} project")
    session.add_all([org, project])
    session.flush()
    slug = name.lower().replace(" ", "_")
    accounts = [
        add_social_account(
            session,
            org.id,
            project.id,
            platform,
            f"{slug}_{platform}",
            base_url=sandbox_url,
        )
        for platform in dict.fromkeys(platforms)
    ]
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
