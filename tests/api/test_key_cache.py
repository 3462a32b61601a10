"""The API remembers authenticated keys (api/keycache.py) and still refuses a revoked key,
and limits a key anew, from the moment the change returns: on a warm cache, after a Redis
wipe, with Redis unreachable, and for a change that lands between the generation's read and
the database's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.deps import key_cache_of
from cli.main import main
from shared.kit.clock import utcnow
from shared.kit.db import engine, transaction
from shared.kit.settings import get_settings
from shared.tenancy.keys import authenticate, invalidate_cached_keys, revoke_key, set_key_limit
from shared.tenancy.tiers import EndpointClass
from tests.checks import envelope_error
from tests.factories import TenantFixture


@pytest.fixture
def key_reads() -> Iterator[list[str]]:
    """The statements that read api_keys, as they run."""
    seen: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_keys" in statement:
            seen.append(statement)

    event.listen(engine(), "before_cursor_execute", on_statement)
    yield seen
    event.remove(engine(), "before_cursor_execute", on_statement)


def _url(tenant: TenantFixture) -> str:
    return f"/v1/projects/{tenant.project_id}/social-accounts"


def test_a_remembered_key_costs_no_database_read(
    client: TestClient, tenant: TenantFixture, key_reads: list[str]
) -> None:
    for _ in range(4):
        assert client.get(_url(tenant), headers=tenant.headers).status_code == 200
    assert len(key_reads) == 1


def test_a_revoked_key_is_refused_on_a_warm_cache(
    client: TestClient, tenant: TenantFixture
) -> None:
    headers = tenant.key_with("*")
    for _ in range(3):
        assert client.get(_url(tenant), headers=headers).status_code == 200
    with transaction() as tx:
        assert revoke_key(tx.session, headers["Authorization"].split("_")[2], now=utcnow())
    envelope_error(client.get(_url(tenant), headers=headers), 401, "UNAUTHENTICATED")
    # The organization's other key was remembered too; it works on, read anew.
    assert client.get(_url(tenant), headers=tenant.headers).status_code == 200


def test_a_changed_limit_applies_to_the_next_request(
    client: TestClient, tenant: TenantFixture
) -> None:
    before = client.get(_url(tenant), headers=tenant.headers)
    assert before.headers["x-ratelimit-limit"] != "7"
    with transaction() as tx:
        set_key_limit(tx.session, tenant.key_id, EndpointClass.READ_LIGHT, 7)
    assert client.get(_url(tenant), headers=tenant.headers).headers["x-ratelimit-limit"] == "7"


def test_a_redis_wipe_forgets_every_remembered_key(
    client: TestClient, tenant: TenantFixture, key_reads: list[str]
) -> None:
    assert client.get(_url(tenant), headers=tenant.headers).status_code == 200
    wiped = redis.Redis.from_url(get_settings().redis_url)
    wiped.flushdb()
    wiped.close()
    assert client.get(_url(tenant), headers=tenant.headers).status_code == 200
    assert client.get(_url(tenant), headers=tenant.headers).status_code == 200
    # Read again once after the wipe (a new generation), then remembered under it.
    assert len(key_reads) == 2


def test_without_redis_every_request_reads_its_key(
    client: TestClient,
    tenant: TenantFixture,
    key_reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = key_cache_of(client.app.state)  # type: ignore[attr-defined]
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(cache, "_client", nowhere)
    headers = tenant.key_with("*")
    for _ in range(3):
        assert client.get(_url(tenant), headers=headers).status_code == 200
    assert len(key_reads) == 3
    with transaction() as tx:
        assert revoke_key(tx.session, headers["Authorization"].split("_")[2], now=utcnow())
    envelope_error(client.get(_url(tenant), headers=headers), 401, "UNAUTHENTICATED")


def test_a_revocation_between_the_generation_and_the_read_is_not_remembered(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request reads the generation, then the key (still live); the revocation commits
    (and moves the generation) just after that read. The key was remembered under the old
    generation, so the next request reads it anew and is refused."""
    headers = tenant.key_with("*")
    key_id = headers["Authorization"].split("_")[2]
    revoked: list[bool] = []

    def then_revoke(*args: Any, **kw: Any) -> Any:
        found = authenticate(*args, **kw)
        if found[0].id == key_id and not revoked:
            with transaction() as tx:
                revoked.append(revoke_key(tx.session, key_id, now=utcnow()))
        return found

    # Used once first: its `last_used_at` is fresh, so the read below writes nothing that
    # the revocation would wait for. Then forgotten, so the next request reads it.
    assert client.get(_url(tenant), headers=headers).status_code == 200
    invalidate_cached_keys(get_settings().redis_url)
    monkeypatch.setattr("api.deps.authenticate", then_revoke)
    assert client.get(_url(tenant), headers=headers).status_code == 200
    assert revoked == [True]
    envelope_error(client.get(_url(tenant), headers=headers), 401, "UNAUTHENTICATED")


def test_the_cli_says_when_api_processes_could_not_be_told(
    client: TestClient,
    tenant: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`keys revoke` with Redis unreachable: the key is revoked, and the command exits 1
    saying the API processes apply it within the cache's TTL, not at once."""
    headers = tenant.key_with("*")
    key_id = headers["Authorization"].split("_")[2]
    monkeypatch.setattr(get_settings(), "redis_url", "redis://127.0.0.1:1/0")
    assert main(["keys", "revoke", key_id]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("publisher: saved, but the API processes could not be told")
    monkeypatch.undo()
    assert main(["keys", "revoke", key_id]) != 0  # already revoked: nothing to do
    envelope_error(client.get(_url(tenant), headers=headers), 401, "UNAUTHENTICATED")
