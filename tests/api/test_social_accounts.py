"""A project's social accounts: listing, the platform and status filters, pagination, and
what an account shows of its connection (never a token)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from shared.accounts.credentials import Credentials
from shared.kit.clock import utcnow
from shared.kit.db import engine
from tests.api.helpers import ISO_Z
from tests.checks import issue_paths as _paths
from tests.factories import TenantFixture, instagram_account, make_tenant

ACCOUNT_FIELDS = {
    "id",
    "projectId",
    "platform",
    "handle",
    "status",
    "statusReason",
    "connectedAt",
    "tokenExpiresAt",
    "avatarUrl",
    "createdAt",
}
ACCESS_TOKEN = "IGAA-access-7f3c9e1b"  # noqa: S105 - a test value
REFRESH_TOKEN = "IGAA-refresh-2d8a4c6f"  # noqa: S105 - a test value


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_list_social_accounts_and_platform_filter(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    r = client.get(url, headers=tenant.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "nextCursor"}
    assert body["nextCursor"] is None
    assert {a["id"] for a in body["items"]} == set(tenant.accounts.values())
    for account in body["items"]:
        assert set(account) == ACCOUNT_FIELDS
        assert account["projectId"] == tenant.project_id
        assert tenant.accounts[account["platform"]] == account["id"]
        assert account["handle"]
        assert ISO_Z.match(account["createdAt"])
        # Sandbox-bound: connected when made, with no token to expire.
        assert account["status"] == "connected"
        assert account["connectedAt"] == account["createdAt"]
        assert (account["statusReason"], account["tokenExpiresAt"]) == (None, None)
        assert account["avatarUrl"] is None

    for platform in ("tiktok", "instagram"):
        r = client.get(url, headers=tenant.headers, params={"platform": platform})
        assert r.status_code == 200
        assert [a["id"] for a in r.json()["items"]] == [tenant.accounts[platform]]

    assert _paths(client.get(url, headers=tenant.headers, params={"platform": "myspace"})) == [
        "platform"
    ]


def test_social_accounts_paginate_in_creation_order(client: TestClient) -> None:
    big = make_tenant("Big", extra_accounts=5)
    with engine().connect() as conn:
        expected = list(
            conn.execute(
                text(
                    "SELECT id FROM social_accounts WHERE project_id = :p ORDER BY created_at, id"
                ),
                {"p": big.project_id},
            ).scalars()
        )
    assert len(expected) == 7
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(
            f"/v1/projects/{big.project_id}/social-accounts", headers=big.headers, params=params
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected


def test_an_account_shows_its_connection_and_never_a_token(
    client: TestClient, tenant: TenantFixture
) -> None:
    before = utcnow().replace(microsecond=0)
    account_id = instagram_account(tenant, Credentials(ACCESS_TOKEN, REFRESH_TOKEN), 3600)
    after = utcnow()
    r = client.get(f"/v1/projects/{tenant.project_id}/social-accounts", headers=tenant.headers)
    assert r.status_code == 200, r.text
    for leaked in (ACCESS_TOKEN, REFRESH_TOKEN, "accessToken", "refreshToken", "credentials"):
        assert leaked not in r.text
    (account,) = [a for a in r.json()["items"] if a["id"] == account_id]
    assert set(account) == ACCOUNT_FIELDS
    assert (account["platform"], account["handle"], account["status"]) == (
        "instagram",
        "brand_ig",
        "connected",
    )
    assert account["statusReason"] is None
    assert account["avatarUrl"] is None
    assert ISO_Z.match(account["connectedAt"])
    assert ISO_Z.match(account["tokenExpiresAt"])
    expires = _parse(account["tokenExpiresAt"])
    assert before + timedelta(seconds=3600) <= expires <= after + timedelta(seconds=3600)
    # ...and the documented shape has no place for one either.
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SocialAccountOut"]
    assert set(schema["properties"]) == ACCOUNT_FIELDS


def test_status_filter(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    account_id = instagram_account(tenant, Credentials(ACCESS_TOKEN))
    reason = "Instagram refused the token: Session has expired (code 190, subcode 463)"
    with engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE social_accounts SET status = 'reauth_required', status_reason = :r "
                "WHERE id = :id"
            ),
            {"r": reason, "id": account_id},
        )

    def listed(**params: str) -> list[dict[str, Any]]:
        r = client.get(url, headers=tenant.headers, params=params)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    (reauth,) = listed(status="reauth_required")
    assert (reauth["id"], reauth["status"], reauth["statusReason"]) == (
        account_id,
        "reauth_required",
        reason,
    )
    assert {a["id"] for a in listed(status="connected")} == set(tenant.accounts.values())
    assert listed(status="disconnected") == []
    assert [a["id"] for a in listed(status="reauth_required", platform="instagram")] == [account_id]
    assert listed(status="reauth_required", platform="tiktok") == []
    assert len(listed()) == 3

    bad = client.get(url, headers=tenant.headers, params={"status": "expired"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "VALIDATION"
    assert _paths(bad) == ["status"]
