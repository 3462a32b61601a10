"""A project's social accounts: listing, the platform filter, pagination."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from shared.kit.db import engine
from tests.api.helpers import ISO_Z
from tests.checks import issue_paths as _paths
from tests.factories import TenantFixture, make_tenant


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
        assert set(account) == {"id", "projectId", "platform", "handle", "createdAt"}
        assert account["projectId"] == tenant.project_id
        assert tenant.accounts[account["platform"]] == account["id"]
        assert account["handle"]
        assert ISO_Z.match(account["createdAt"])

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
