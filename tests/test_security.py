"""What an attacker would try: keys, test keys, oversized bodies, private media hosts,
default secrets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, text

from shared.accounts.accounts import add_social_account
from shared.kit.clock import utcnow
from shared.kit.db import engine, new_session, transaction
from shared.kit.settings import Settings, get_settings
from shared.models import ApiKey
from shared.tenancy.keys import create_key, revoke_key
from tests.factories import TenantFixture, at, upload


def test_keys_carry_at_least_128_bits_and_only_a_hash_is_stored(tenant: TenantFixture) -> None:
    prefix, env, key_id, secret = tenant.token.split("_")
    assert (prefix, env) == ("lp", "live")
    assert len(secret) * 4 >= 128  # hex
    with engine().connect() as conn:
        dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert secret not in dump
    with new_session() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None and len(key.secret_hash) == 32


def test_a_revoked_key_is_refused_on_its_next_request(
    client: TestClient, tenant: TenantFixture
) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    assert client.get(url, headers=tenant.headers).status_code == 200
    with transaction() as tx:
        assert revoke_key(tx.session, tenant.key_id, now=utcnow())
    r = client.get(url, headers=tenant.headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"


def test_last_used_is_tracked_without_a_write_per_request(
    client: TestClient, tenant: TenantFixture
) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"

    def last_used() -> object:
        with new_session() as session:
            return session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == tenant.key_id))

    client.get(url, headers=tenant.headers)
    first = last_used()
    assert first is not None
    for _ in range(5):
        client.get(url, headers=tenant.headers)
    assert last_used() == first  # no write until the minute has passed


@pytest.fixture
def private_account(tenant: TenantFixture) -> str:
    """An account bound to a real platform adapter, not the sandbox."""
    with transaction() as tx:
        account = add_social_account(
            tx.session,
            tenant.organization_id,
            tenant.project_id,
            "tiktok",
            "brand_live",
            base_url="https://open.tiktokapis.example",
            adapter="tiktok",
        )
    return account.id


def test_test_keys_reach_sandbox_accounts_only(
    client: TestClient, tenant: TenantFixture, private_account: str
) -> None:
    with transaction() as tx:
        test_key = create_key(tx.session, tenant.organization_id, ["*"], env="test")
    headers = {"Authorization": f"Bearer {test_key.token}"}
    listed = client.get(f"/v1/projects/{tenant.project_id}/social-accounts", headers=headers)
    assert private_account not in {a["id"] for a in listed.json()["items"]}
    live = client.get(f"/v1/projects/{tenant.project_id}/social-accounts", headers=tenant.headers)
    assert private_account in {a["id"] for a in live.json()["items"]}

    container = upload(client, tenant)
    body = {"scheduledFor": at(600), "targets": [{"socialAccountId": private_account}]}
    r = client.post(f"/v1/content/{container}/schedule", headers=headers, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["issues"][0]["path"] == "targets[0].socialAccountId"
    sandbox = {"scheduledFor": at(600), "targets": [{"socialAccountId": tenant.accounts["tiktok"]}]}
    assert (
        client.post(f"/v1/content/{container}/schedule", headers=headers, json=sandbox).status_code
        == 201
    )


def test_oversized_bodies_are_refused_before_they_are_read(
    client: TestClient, tenant: TenantFixture
) -> None:
    cap = get_settings().max_body_bytes
    url = f"/v1/projects/{tenant.project_id}/content/upload"
    big = b'{"caption": "' + b"x" * (cap + 10) + b'", "media": []}'
    r = client.post(
        url, headers={**tenant.headers, "Content-Type": "application/json"}, content=big
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert r.json()["error"]["requestId"] == r.headers["x-request-id"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536

    r = client.post(
        url, headers={**tenant.headers, "Content-Type": "application/json"}, content=chunks()
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.mp4",
        "https://10.0.0.5/a.mp4",
        "https://[::1]/a.mp4",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/a.mp4",
        "https://media.internal/a.mp4",
        "https://intranet/a.mp4",
    ],
)
def test_media_on_private_hosts_is_refused_in_production(
    client: TestClient, tenant: TenantFixture, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"/v1/projects/{tenant.project_id}/content/upload"
    body = {"caption": "x", "media": [{"url": url}]}
    assert client.post(path, headers=tenant.headers, json=body).status_code == 201  # dev: ok
    monkeypatch.setattr(get_settings(), "environment", "production")
    r = client.post(path, headers=tenant.headers, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["issues"][0]["path"] == "media[0].url"
    public = {"caption": "x", "media": [{"url": "https://cdn.example.com/a.mp4"}]}
    assert client.post(path, headers=tenant.headers, json=public).status_code == 201


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="FLOWER_PASSWORD"):
        Settings(environment="production")
    chosen = "a-real-one"
    # The credential keys' own refusal is in tests/test_credentials.py.
    keys = Fernet.generate_key().decode()
    settings = Settings(environment="production", flower_password=chosen, credential_keys=keys)
    assert settings.flower_password == chosen


def test_no_secret_in_the_openapi_document(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "flower_password", "flower-9f3c1e7a")
    document = client.get("/openapi.json").text
    secret = tenant.token.rsplit("_", 1)[1]
    for leaked in ("flower-9f3c1e7a", get_settings().database_url, secret):
        assert leaked not in document
