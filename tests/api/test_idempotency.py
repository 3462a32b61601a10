"""Idempotency-Key: byte-for-byte replays, conflicts, scope per organization, expiry,
and concurrent requests with one key."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.routes import scheduled_posts as routes
from shared.kit.db import engine
from tests.api.helpers import BY_NAME, MEDIA, Endpoint, _body, _broker_messages, _own_id
from tests.checks import count as _count
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.checks import issue_paths as _paths
from tests.factories import TenantFixture, at, upload

MUTATING_POSTS = ["upload", "schedule", "publish", "reschedule"]


def _idem_request(
    client: TestClient, ep: Endpoint, tenant: TenantFixture
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(url, body, a different body) for one of the mutating POSTs of `tenant`."""
    id_ = _own_id(client, ep, tenant)
    body = _body(ep, tenant)
    assert body is not None
    other = json.loads(json.dumps(body))
    if ep.name == "upload":
        other["caption"] = "another caption"
    elif ep.name == "reschedule":
        other["scheduledFor"] = at(9000)
    else:
        other["targets"][0]["mode"] = "draft"
    return ep.url(id_), body, other


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_idempotency_key_replays_byte_for_byte(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, different = _idem_request(client, ep, tenant)
    key = {"Idempotency-Key": f"idem-{name}"}
    headers = {**tenant.headers, **key}

    first = client.post(url, headers=headers, json=body)
    assert first.status_code == ep.ok, first.text
    after_first = _counts()
    messages = len(_broker_messages())

    again = client.post(url, headers=headers, json=body)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert _counts() == after_first
    assert len(_broker_messages()) == messages  # a replay sends no second task

    err = _error(client.post(url, headers=headers, json=different), 409, "IDEMPOTENCY_CONFLICT")
    assert err["details"] == {"idempotencyKey": key["Idempotency-Key"]}
    assert _counts() == after_first

    # Keys are per organization: another API key of the same org gets the replay ...
    sibling = {**tenant.key_with("*"), **key}
    assert client.post(url, headers=sibling, json=body).content == first.content
    assert _counts() == after_first
    # ... while another org's same key runs its own request.
    o_url, o_body, _ = _idem_request(client, ep, other_tenant)
    theirs = client.post(o_url, headers={**other_tenant.headers, **key}, json=o_body)
    assert theirs.status_code == ep.ok, theirs.text
    assert theirs.content != first.content
    # ... and did not disturb ours.
    assert client.post(url, headers=headers, json=body).content == first.content


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_without_a_key_every_request_runs(
    client: TestClient, tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    before = _counts()
    first = client.post(url, headers=tenant.headers, json=body)
    second = client.post(url, headers=tenant.headers, json=body)
    assert (first.status_code, second.status_code) == (ep.ok, ep.ok)
    after = _counts()
    assert after["idempotency_keys"] == before["idempotency_keys"]
    if name == "upload":
        assert after["content_containers"] == before["content_containers"] + 2
    elif name in ("schedule", "publish"):
        assert after["scheduled_posts"] == before["scheduled_posts"] + 2
    else:
        assert after["events"] == before["events"] + 2
    if name != "reschedule":
        assert first.json() != second.json()


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_idempotency_key_too_long(client: TestClient, tenant: TenantFixture, name: str) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    before = _counts()
    r = client.post(url, headers={**tenant.headers, "Idempotency-Key": "k" * 256}, json=body)
    assert _paths(r) == ["Idempotency-Key"]
    assert _counts() == before
    r = client.post(url, headers={**tenant.headers, "Idempotency-Key": "k" * 255}, json=body)
    assert r.status_code == ep.ok, r.text


def test_idempotency_key_expires_after_24_hours(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/content/upload"
    headers = {**tenant.headers, "Idempotency-Key": "old"}
    first = client.post(url, headers=headers, json={"caption": "a", "media": MEDIA})
    assert first.status_code == 201
    with engine().begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    fresh = client.post(url, headers=headers, json={"caption": "b", "media": MEDIA})
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["caption"] == "b"
    assert _count("content_containers") == 2


def test_a_failed_request_is_not_remembered(client: TestClient, tenant: TenantFixture) -> None:
    container = upload(client, tenant)
    url = f"/v1/content/{container}/schedule"
    headers = {**tenant.headers, "Idempotency-Key": "retry-me"}
    body = {"scheduledFor": at(600), "targets": [{"socialAccountId": f"sa_{uuid.uuid4()}"}]}
    assert client.post(url, headers=headers, json=body).status_code == 422
    body["targets"] = [{"socialAccountId": tenant.accounts["tiktok"]}]
    r = client.post(url, headers=headers, json=body)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("name", "when", "later"), [("schedule", -10, 60), ("reschedule", 45, 30)])
def test_a_retry_replays_even_after_its_time_has_come(
    client: TestClient,
    tenant: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    when: int,
    later: int,
) -> None:
    """A client retrying after a lost response must get the replay, not a fresh 422."""
    ep = BY_NAME[name]
    id_ = _own_id(client, ep, tenant)
    body: dict[str, Any] = {"scheduledFor": at(when)}
    if name == "schedule":
        body["targets"] = [{"socialAccountId": tenant.accounts["tiktok"]}]
    headers = {**tenant.headers, "Idempotency-Key": "lost-response"}
    first = client.post(ep.url(id_), headers=headers, json=body)
    assert first.status_code == ep.ok, first.text
    after_first = _counts()

    monkeypatch.setattr(routes, "utcnow", lambda: datetime.now(UTC) + timedelta(seconds=later))
    again = client.post(ep.url(id_), headers=headers, json=body)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert _counts() == after_first


@pytest.mark.parametrize("name", ["upload", "publish"])
def test_concurrent_requests_with_one_key_do_the_work_once(
    client: TestClient, tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    if name == "publish":
        body["targets"].append({"socialAccountId": tenant.accounts["instagram"]})
    before = _counts()
    headers = {**tenant.headers, "Idempotency-Key": "race"}
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def worker() -> None:
        own = TestClient(client.app, raise_server_exceptions=False)
        barrier.wait()
        r = own.post(url, headers=headers, json=body)
        with lock:
            results.append((r.status_code, r.content))

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == threads_n
    assert {status for status, _ in results} == {ep.ok}, results
    assert len({content for _, content in results}) == 1
    after = _counts()
    assert after["idempotency_keys"] == before["idempotency_keys"] + 1
    if name == "upload":
        assert after["content_containers"] == before["content_containers"] + 1
    else:
        assert after["scheduled_posts"] == before["scheduled_posts"] + 2
        assert len(_broker_messages()) == 2
