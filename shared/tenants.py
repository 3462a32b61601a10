"""Operator-side creation of organizations, projects and social accounts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from shared import ids
from shared.errors import Validation
from shared.keys import IssuedKey, create_key
from shared.models import SANDBOX_ADAPTER, Organization, Platform, Project, SocialAccount


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    project_id: str
    key: IssuedKey
    social_accounts: list[SocialAccount]


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


def create_tenant(
    session: Session, name: str, platforms: list[str], *, sandbox_url: str, env: str = "live"
) -> Tenant:
    """An organization, one project, one sandbox-bound account per platform, a full-scope key."""
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
    accounts = [
        add_social_account(
            session,
            org.id,
            project.id,
            platform,
            f"{name.lower().replace(' ', '_')}_{platform}",
            base_url=sandbox_url,
        )
        for platform in dict.fromkeys(platforms)
    ]
    key = create_key(session, org.id, ["*"], env=env, name="tenant bootstrap")
    session.flush()
    return Tenant(org.id, project.id, key, accounts)
