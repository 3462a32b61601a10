"""Per-key rate limits: reads and writes apart, shared by every API process through Redis."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from tests.factories import TenantFixture, upload


def _write(client: TestClient, tenant: TenantFixture, headers: dict[str, str]) -> int:
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=headers,
        json={"caption": "x", "media": [{"url": "https://cdn.example.com/a.png"}]},
    )
    return r.status_code


def test_writes_over_the_keys_limit_are_429_with_headers(
    client: TestClient, tenant: TenantFixture
) -> None:
    headers = tenant.key_with("*", rate_limit_write=3)
    assert [_write(client, tenant, headers) for _ in range(3)] == [201, 201, 201]
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=headers,
        json={"caption": "x", "media": [{"url": "https://cdn.example.com/a.png"}]},
    )
    assert r.status_code == 429
    body = r.json()["error"]
    assert body["code"] == "RATE_LIMITED"
    assert body["requestId"] == r.headers["x-request-id"]
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit"] == "3"
    assert r.headers["x-ratelimit-remaining"] == "0"
    # Reads are a separate budget.
    ok = client.get(f"/v1/projects/{tenant.project_id}/social-accounts", headers=headers)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit"] != "3"


def test_remaining_counts_down_and_keys_are_independent(
    client: TestClient, tenant: TenantFixture
) -> None:
    a = tenant.key_with("*", rate_limit_read=5)
    b = tenant.key_with("*", rate_limit_read=5)
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    remaining = [int(client.get(url, headers=a).headers["x-ratelimit-remaining"]) for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    assert client.get(url, headers=a).status_code == 429
    assert client.get(url, headers=b).status_code == 200


def test_the_limit_holds_across_api_processes(tenant: TenantFixture) -> None:
    """Two app instances (as two API processes would be) share one budget per key."""
    headers = tenant.key_with("*", rate_limit_write=4)
    with (
        TestClient(create_app(), raise_server_exceptions=False) as one,
        TestClient(create_app(), raise_server_exceptions=False) as two,
    ):
        codes = [_write(c, tenant, headers) for c in (one, two, one, two, one, two)]
    assert codes == [201, 201, 201, 201, 429, 429]


def test_the_deployment_default_applies_to_keys_without_their_own(
    client: TestClient, tenant: TenantFixture
) -> None:
    r = client.get(f"/v1/content/{upload(client, tenant)}", headers=tenant.headers)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit"] == "1200"
