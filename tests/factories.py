"""Small builders for test data, going through the same functions the product uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from shared.accounts.accounts import add_social_account
from shared.accounts.credentials import Credentials
from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.models import INSTAGRAM_ADAPTER
from shared.tenancy.keys import create_key
from shared.tenancy.tenants import Tenant, create_tenant

DEFAULT_SANDBOX = "http://127.0.0.1:8900"


@dataclass
class TenantFixture:
    organization_id: str
    project_id: str
    token: str
    key_id: str
    accounts: dict[str, str]  # platform -> social account id
    extra_accounts: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def key_with(self, *scopes: str, **limits: int) -> dict[str, str]:
        """Headers for a fresh key of this organization with exactly these scopes."""
        with transaction() as tx:
            key = create_key(tx.session, self.organization_id, list(scopes), **limits)
        return {"Authorization": f"Bearer {key.token}"}


def make_tenant(
    name: str, sandbox_url: str = DEFAULT_SANDBOX, extra_accounts: int = 0
) -> TenantFixture:
    """A tenant as `publisher tenants create` makes it, plus optional extra tiktok accounts."""
    with transaction() as tx:
        t = create_tenant(
            tx.session,
            name,
            ["tiktok", "instagram"],
            sandbox_url=sandbox_url,
            extra_accounts=extra_accounts,
        )
    return fixture_of(t)


def fixture_of(t: Tenant) -> TenantFixture:
    """What a test keeps of a tenant it made."""
    return TenantFixture(
        t.organization_id,
        t.project_id,
        t.key.token,
        t.key.id,
        {a.platform: a.id for a in t.social_accounts},
        [a.id for a in t.extra_accounts],
    )


def upload(client: Any, tenant: TenantFixture, caption: str = "hello world") -> str:
    """A content container; returns its id. `client` is a TestClient or an httpx.Client."""
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=tenant.headers,
        json={"caption": caption, "media": [{"url": "https://cdn.example.com/clip.mp4"}]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def set_policy(client: Any, tenant: TenantFixture, **policy: Any) -> dict[str, Any]:
    """PUT the project's approval policy (camelCase fields); returns what the API answered."""
    r = client.put(
        f"/v1/projects/{tenant.project_id}/approval-policy", headers=tenant.headers, json=policy
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def pending_upload(client: Any, tenant: TenantFixture, caption: str = "for review") -> str:
    """A container awaiting approval; the project's policy is left off again afterwards."""
    set_policy(client, tenant, requiresApproval=True)
    try:
        return upload(client, tenant, caption)
    finally:
        set_policy(client, tenant)


def blocked_intent(
    client: Any, tenant: TenantFixture, container_id: str, when: str, accounts: list[str] | None
) -> dict[str, Any]:
    """Schedule content awaiting approval: the 202's saved intent."""
    targets = [{"socialAccountId": a} for a in (accounts or [tenant.accounts["tiktok"]])]
    r = client.post(
        f"/v1/content/{container_id}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": when, "targets": targets},
    )
    assert r.status_code == 202, r.text
    intent: dict[str, Any] = r.json()["intent"]
    return intent


def at(seconds: float) -> str:
    """An ISO 8601 UTC time `seconds` from now, with milliseconds."""
    return iso_ms(utcnow() + timedelta(seconds=seconds))


def iso_ms(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def schedule(
    client: TestClient | Any,
    tenant: TenantFixture,
    container_id: str,
    when: str,
    accounts: list[str] | None = None,
    **target_fields: Any,
) -> list[dict[str, Any]]:
    """Schedule the container for the given accounts (default: the tiktok one)."""
    targets = [
        {"socialAccountId": a, **target_fields} for a in (accounts or [tenant.accounts["tiktok"]])
    ]
    r = client.post(
        f"/v1/content/{container_id}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": when, "targets": targets},
    )
    assert r.status_code == 201, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def instagram_account(
    tenant: TenantFixture, credentials: Credentials, expires_in: float = 3600
) -> str:
    """An Instagram account of the tenant's project holding `credentials` (sealed), with a
    token expiring `expires_in` seconds from now; its id. Nothing is asked of a platform."""
    with transaction() as tx:
        account = add_social_account(
            tx.session,
            tenant.organization_id,
            tenant.project_id,
            "instagram",
            "brand_ig",
            base_url="http://127.0.0.1:8901",
            adapter=INSTAGRAM_ADAPTER,
            platform_user_id="17841400000000001",
            credentials=credentials,
            expires_in=expires_in,
        )
    return account.id


def at_one_instant(
    api: Any,
    tenant: TenantFixture,
    containers: list[str],
    accounts: list[str],
    lead_s: float,
) -> tuple[list[str], datetime]:
    """Every container scheduled on every account for one instant `lead_s` from now: the
    posts' ids, and the instant as stored (whole seconds), which is what workers claim at."""
    instant = utcnow().replace(microsecond=0) + timedelta(seconds=lead_s)
    post_ids: list[str] = []
    for cid in containers:
        r = api.post(
            f"/v1/content/{cid}/schedule",
            headers=tenant.headers,
            json={
                "scheduledFor": iso_ms(instant),
                "targets": [{"socialAccountId": a} for a in accounts],
            },
        )
        assert r.status_code == 201, r.text
        post_ids += [p["id"] for p in r.json()["items"]]
        instant = datetime.fromisoformat(
            r.json()["items"][0]["scheduledFor"].replace("Z", "+00:00")
        )
    return post_ids, instant
