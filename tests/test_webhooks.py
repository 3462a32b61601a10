"""Webhooks end to end in one process: endpoints through the API, deliveries written with the
events they carry, and their attempts run against a real HTTP receiver that checks every
signature with its own code. The integration tier does the same with real workers
(tests/test_webhooks_live.py)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from chaos.receiver import Receiver, serving, verify
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.errors import Validation
from shared.kit.settings import Settings, get_settings
from shared.models import WebhookDelivery, WebhookEndpoint
from shared.publishing import posts
from shared.publishing.protocol import dispatch_once
from shared.publishing.usecases import cancel_post
from shared.webhooks import deliveries, endpoints, sender
from shared.webhooks.deliveries import run_delivery
from tests.checks import envelope_error, publish_with
from tests.emulators import due_post
from tests.factories import TenantFixture

FAST = Settings(webhook_retry_schedule_s="0,0.05,0.05", webhook_timeout_s=2)
ALL = ["post.scheduled", "post.published", "post.failed", "post.canceled"]


def _register(
    client: TestClient, tenant: TenantFixture, url: str, types: list[str] | None = None
) -> tuple[str, str]:
    r = client.post(
        "/v1/webhook-endpoints",
        headers=tenant.headers,
        json={"url": url, "eventTypes": types or ALL, "description": "test"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["secret"].startswith("whsec_")
    return body["id"], body["secret"]


def _due() -> list[tuple[str, int]]:
    with new_session() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow()
            )
        ).all()
        return [(d.id, d.token) for d in rows]


def _pending() -> int:
    with new_session() as session:
        return len(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.status == "pending")
            ).all()
        )


def _drain(settings: Settings = FAST, timeout: float = 20) -> None:
    """Run every due attempt, as the delivery task would, until none is pending."""
    deadline = time.monotonic() + timeout
    while _pending():
        assert time.monotonic() < deadline, "deliveries still pending"
        for delivery_id, token in _due():
            run_delivery(delivery_id, token, settings=settings)
        time.sleep(0.02)


def _deliveries(client: TestClient, tenant: TenantFixture, endpoint_id: str) -> list[Any]:
    r = client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=tenant.headers)
    assert r.status_code == 200, r.text
    items: list[Any] = r.json()["items"]
    return items


def test_register_shows_the_secret_once(client: TestClient, tenant: TenantFixture) -> None:
    endpoint_id, _ = _register(client, tenant, "https://hooks.example.com/in")
    got = client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=tenant.headers).json()
    assert "secret" not in got
    assert (got["status"], got["eventTypes"], got["url"]) == (
        "enabled",
        ALL,
        "https://hooks.example.com/in",
    )
    listed = client.get("/v1/webhook-endpoints", headers=tenant.headers).json()["items"]
    assert [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]
    with new_session() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None and b"whsec_" not in row.secret  # sealed at rest


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"url": "ftp://x.example.com", "eventTypes": ["post.published"]}, "url"),
        ({"url": "https://u:p@x.example.com", "eventTypes": ["post.published"]}, "url"),
        ({"url": "https://x.example.com", "eventTypes": []}, "eventTypes"),
        ({"url": "https://x.example.com", "eventTypes": ["post.claimed"]}, "eventTypes[0]"),
    ],
)
def test_bad_endpoints_are_refused(
    client: TestClient, tenant: TenantFixture, body: dict[str, Any], path: str
) -> None:
    r = client.post("/v1/webhook-endpoints", headers=tenant.headers, json=body)
    err = envelope_error(r, 422, "VALIDATION")
    assert path in [i["path"] for i in err["details"]["issues"]], err


def test_webhooks_need_their_own_scopes(client: TestClient, tenant: TenantFixture) -> None:
    reader = tenant.key_with("publish:read", "webhooks:read")
    r = client.post(
        "/v1/webhook-endpoints",
        headers=reader,
        json={"url": "https://x.example.com", "eventTypes": ["post.published"]},
    )
    assert envelope_error(r, 403, "FORBIDDEN_SCOPE")["details"]["requiredScope"] == (
        "webhooks:write"
    )
    assert client.get("/v1/webhook-endpoints", headers=reader).status_code == 200
    publisher = tenant.key_with("publish:read")
    r = client.get("/v1/webhook-endpoints", headers=publisher)
    assert envelope_error(r, 403, "FORBIDDEN_SCOPE")["details"]["requiredScope"] == (
        "webhooks:read"
    )


def test_production_refuses_private_and_plain_http_endpoints() -> None:
    production = Settings(
        environment="production",
        flower_password="not-the-default",  # noqa: S106 - a test value
        credential_keys="r0Yy4dWYrZ0Ok9aTDXV0cWdK3Ioz0b9Q4hlRH0xwfAs=",
    )
    for url in ("http://hooks.example.com/in", "https://127.0.0.1/in", "https://10.1.2.3/in"):
        with pytest.raises(Validation) as refused:
            endpoints.check_url(url, production)
        [issue] = refused.value.details["issues"]
        assert issue["message"] in ("https only", endpoints.NOT_PUBLIC), issue
    endpoints.check_url("https://hooks.example.com/in", production)
    # And at delivery: a name is resolved, and a private address never connected to.
    answer = sender.post("https://localhost:9/in", b"{}", {}, timeout=1, public_only=True)
    assert answer.refused and answer.status_code is None
    assert "non-public" in (answer.error or "")


def test_every_outcome_is_delivered_once_signed_and_deduplicable(
    client: TestClient, tenant: TenantFixture
) -> None:
    with serving(Receiver()) as rx:
        endpoint_id, secret = _register(client, tenant, rx.url)
        rx.secrets = [secret]
        published, token = due_post(tenant, "goes out", platform="tiktok")
        failed, failed_token = due_post(tenant, "refused", platform="tiktok")
        canceled, _ = due_post(tenant, "canceled", platform="tiktok")
        assert publish_with(published, token) == "published"
        assert publish_with(failed, failed_token, refuse=True) == "failed"
        actor = Actor(tenant.organization_id, tenant.key_id, "req-1")
        cancel_post(actor, canceled, "not today", now=utcnow())
        _drain()
    kept = rx.delivered()
    assert all(r.verified for r in rx.received)
    assert all(r.body["id"] == r.event_id for r in rx.received)
    by_post: dict[tuple[str, str], int] = {}
    for r in kept.values():
        key = (r.body["data"]["scheduledPostId"], r.body["type"])
        by_post[key] = by_post.get(key, 0) + 1
    assert by_post == {
        (published, "post.scheduled"): 1,
        (failed, "post.scheduled"): 1,
        (canceled, "post.scheduled"): 1,
        (published, "post.published"): 1,
        (failed, "post.failed"): 1,
        (canceled, "post.canceled"): 1,
    }
    done = next(r for r in kept.values() if r.body["type"] == "post.published")
    assert done.body["data"]["status"] == "published"
    assert done.body["data"]["externalId"] == f"ext-{published}"
    assert set(done.body) == {"id", "type", "createdAt", "data"}
    assert done.body["id"].startswith("evt_") and len(done.body["id"]) == 30
    shown = _deliveries(client, tenant, endpoint_id)
    assert {d["status"] for d in shown} == {"succeeded"}
    assert all(len(d["attempts"]) == 1 and d["attempts"][0]["statusCode"] == 200 for d in shown)


def test_retries_keep_the_event_id_until_the_receiver_takes_it(
    client: TestClient, tenant: TenantFixture
) -> None:
    with serving(Receiver(fail_first=2, fail_status=503)) as rx:
        endpoint_id, secret = _register(client, tenant, rx.url, ["post.scheduled"])
        rx.secrets = [secret]
        due_post(tenant, "retried", platform="tiktok")
        _drain()
    assert [r.answered for r in rx.received] == [503, 503, 200]
    assert len({r.event_id for r in rx.received}) == 1
    [shown] = _deliveries(client, tenant, endpoint_id)
    assert shown["status"] == "succeeded"
    assert [a["statusCode"] for a in shown["attempts"]] == [503, 503, 200]
    assert [a["number"] for a in shown["attempts"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("status", "final", "tries"),
    [(400, "failed", 1), (410, "failed", 1), (429, "abandoned", 3), (408, "abandoned", 3)],
)
def test_a_4xx_is_final_except_408_and_429(
    client: TestClient, tenant: TenantFixture, status: int, final: str, tries: int
) -> None:
    with serving(Receiver(fail_first=99, fail_status=status)) as rx:
        endpoint_id, _ = _register(client, tenant, rx.url, ["post.scheduled"])
        due_post(tenant, "refused", platform="tiktok")
        _drain()
    [shown] = _deliveries(client, tenant, endpoint_id)
    assert shown["status"] == final
    assert len(rx.received) == tries == len(shown["attempts"])


def test_a_receiver_that_never_answers_in_time_is_retried(
    client: TestClient, tenant: TenantFixture
) -> None:
    slow = FAST.model_copy(update={"webhook_timeout_s": 0.2, "webhook_retry_schedule_s": "0,0.05"})
    with serving(Receiver(hang_s=0.6)) as rx:
        endpoint_id, _ = _register(client, tenant, rx.url, ["post.scheduled"])
        due_post(tenant, "slow", platform="tiktok")
        _drain(slow)
    [shown] = _deliveries(client, tenant, endpoint_id)
    assert shown["status"] == "abandoned"
    assert all("no answer within" in (a["error"] or "") for a in shown["attempts"])


def test_an_endpoint_failing_in_a_row_is_auto_paused_and_resumes_when_enabled(
    client: TestClient, tenant: TenantFixture
) -> None:
    pausing = FAST.model_copy(
        update={"webhook_pause_after": 3, "webhook_retry_schedule_s": "0,0.05,0.05,0.05"}
    )
    with serving(Receiver(fail_first=99)) as rx:
        endpoint_id, secret = _register(client, tenant, rx.url, ["post.scheduled"])
        due_post(tenant, "one", platform="tiktok")
        deadline = time.monotonic() + 10
        while len(rx.received) < 3:
            assert time.monotonic() < deadline
            for delivery_id, token in _due():
                run_delivery(delivery_id, token, settings=pausing)
            time.sleep(0.02)
        for delivery_id, token in _due():
            assert run_delivery(delivery_id, token, settings=pausing) == "paused"
        got = client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=tenant.headers).json()
        assert (got["status"], got["consecutiveFailures"]) == ("auto_paused", 3)
        # Paused: new events make no deliveries for it.
        due_post(tenant, "two", platform="tiktok")
        assert _pending() == 1
        rx.fail_first, rx.secrets = 0, [secret]
        r = client.patch(
            f"/v1/webhook-endpoints/{endpoint_id}",
            headers=tenant.headers,
            json={"status": "enabled"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["consecutiveFailures"] == 0
        _drain(pausing)
    [shown] = _deliveries(client, tenant, endpoint_id)
    assert shown["status"] == "succeeded"
    assert rx.received[-1].verified


def test_a_rotated_secret_keeps_verifying_for_a_day(
    client: TestClient, tenant: TenantFixture
) -> None:
    with serving(Receiver()) as rx:
        endpoint_id, old = _register(client, tenant, rx.url, ["post.scheduled"])
        r = client.post(
            f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new != old and r.json()["previousSecretExpiresAt"]
        rx.secrets = [old]  # a receiver that has not switched yet
        due_post(tenant, "rotated", platform="tiktok")
        _drain()
    [got] = rx.received
    assert got.verified
    with new_session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        now = utcnow()
        assert endpoints.signing_secrets(endpoint, FAST, now) == [new, old]
        assert endpoints.signing_secrets(endpoint, FAST, now + timedelta(hours=25)) == [new]


def test_a_replay_is_a_new_event_that_names_the_original(
    client: TestClient, tenant: TenantFixture
) -> None:
    with serving(Receiver()) as rx:
        endpoint_id, secret = _register(client, tenant, rx.url, ["post.scheduled"])
        rx.secrets = [secret]
        due_post(tenant, "replayed", platform="tiktok")
        _drain()
        [first] = _deliveries(client, tenant, endpoint_id)
        r = client.post(f"/v1/webhook-deliveries/{first['id']}/replay", headers=tenant.headers)
        assert r.status_code == 201, r.text
        assert r.json()["replayOf"] == first["eventId"]
        _drain()
    original, again = rx.received
    assert again.event_id != original.event_id
    assert again.body["replayOf"] == original.event_id
    assert again.body["data"] == original.body["data"]
    assert again.verified
    # A foreign delivery id looks like a missing one.
    r = client.post(
        "/v1/webhook-deliveries/wd_00000000-0000-0000-0000-000000000000/replay",
        headers=tenant.headers,
    )
    envelope_error(r, 404, "NOT_FOUND")


def test_nothing_is_delivered_for_a_transition_that_rolled_back(
    client: TestClient, tenant: TenantFixture
) -> None:
    with serving(Receiver()) as rx:
        _register(client, tenant, rx.url, ["post.canceled"])
        post_id, _ = due_post(tenant, "kept", platform="tiktok")
        actor = Actor(tenant.organization_id, tenant.key_id, "req")

        class Abort(Exception):
            pass

        with pytest.raises(Abort), transaction() as tx:
            posts.cancel(tx.session, actor, post_id, "never", now=utcnow())
            tx.session.flush()
            raise Abort
        assert _pending() == 0
        _drain()
    assert rx.received == []


def test_a_lost_delivery_message_is_re_armed_and_the_old_one_does_nothing(
    client: TestClient, tenant: TenantFixture
) -> None:
    """The dispatcher re-arms an overdue delivery with a copy of its task (same token); the
    copy that runs first delivers, and the other, should it surface, does nothing."""
    with serving(Receiver()) as rx:
        _register(client, tenant, rx.url, ["post.scheduled"])
        due_post(tenant, "lost", platform="tiktok")
        [(delivery_id, token)] = _due()
        # The task was lost with Redis: the dispatcher's tick finds it overdue.
        with transaction() as tx:
            delivery = tx.session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            delivery.next_attempt_at = utcnow() - timedelta(minutes=5)
        dispatch_once()
        [(same, copy_token)] = _due()
        assert (same, copy_token) == (delivery_id, token)
        assert run_delivery(delivery_id, copy_token, settings=FAST) == "succeeded"
        # Delivered once: the lost one surfacing, or the same task again, does nothing.
        assert run_delivery(delivery_id, token, settings=FAST) == "stale"
        assert run_delivery(delivery_id, copy_token, settings=FAST) == "stale"
    assert len(rx.received) == 1


def test_disabled_endpoints_get_nothing_and_other_organizations_see_nothing(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    endpoint_id, _ = _register(client, tenant, "https://hooks.example.com/in")
    r = client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", headers=tenant.headers, json={"status": "disabled"}
    )
    assert r.json()["status"] == "disabled"
    due_post(tenant, "quiet", platform="tiktok")
    assert _pending() == 0
    for path in (
        f"/v1/webhook-endpoints/{endpoint_id}",
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
    ):
        envelope_error(client.get(path, headers=other_tenant.headers), 404, "NOT_FOUND")
    assert client.get("/v1/webhook-endpoints", headers=other_tenant.headers).json()["items"] == []


def test_signatures_follow_the_documented_scheme() -> None:
    """The product's signer against the receiver's own verifier: one secret, two during a
    rotation, a stale timestamp, a tampered body."""
    from shared.webhooks.signing import signature

    body = b'{"id":"evt_1"}'
    now = int(time.time())
    header = signature(["whsec_a", "whsec_b"], body, now)
    assert header.startswith(f"t={now},v1=") and header.count("v1=") == 2
    assert verify(["whsec_a"], header, body) and verify(["whsec_b"], header, body)
    assert not verify(["whsec_c"], header, body)
    assert not verify(["whsec_a"], header, body + b" ")
    assert not verify(["whsec_a"], signature(["whsec_a"], body, now - 301), body)


def test_delivery_listing_pages(client: TestClient, tenant: TenantFixture) -> None:
    endpoint_id, _ = _register(client, tenant, "https://hooks.example.com/in", ["post.scheduled"])
    for i in range(3):
        due_post(tenant, f"paged {i}", platform="tiktok")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(
            f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=tenant.headers, params=params
        )
        assert r.status_code == 200, r.text
        seen += [d["id"] for d in r.json()["items"]]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 3
    with new_session() as session:
        assert deliveries.attempts_of(session, seen) == {d: [] for d in seen}


def test_a_ping_reaches_one_endpoint_signed(client: TestClient, tenant: TenantFixture) -> None:
    with serving(Receiver()) as rx, serving(Receiver()) as other:
        endpoint_id, secret = _register(client, tenant, rx.url, ["post.published"])
        _register(client, tenant, other.url, ["post.published"])
        rx.secrets = [secret]
        r = client.post(f"/v1/webhook-endpoints/{endpoint_id}/ping", headers=tenant.headers)
        assert r.status_code == 202, r.text
        assert (r.json()["eventType"], r.json()["status"]) == ("test.ping", "pending")
        _drain()
    [got] = rx.received
    assert got.verified and got.body["type"] == "test.ping"
    assert got.body["data"] == {"endpointId": endpoint_id}
    assert other.received == []  # a ping is for the endpoint pinged alone
    client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", headers=tenant.headers, json={"status": "disabled"}
    )
    r = client.post(f"/v1/webhook-endpoints/{endpoint_id}/ping", headers=tenant.headers)
    assert envelope_error(r, 409, "CONFLICT")["details"]["status"] == "disabled"


def test_each_re_arm_of_one_delivery_waits_twice_as_long(
    client: TestClient, tenant: TenantFixture
) -> None:
    """A delivery re-armed as lost gets a copy of its task under the same token, again only
    after twice the grace, then four times, eight, sixteen, until an attempt of it begins,
    which takes the token from every other copy: a backlog slower than the grace still
    drains (shared/kit/redispatch.py), and a message lost after that is replaced within one
    grace again. All in one transaction, rolled back, whose row lock keeps any running
    dispatcher off it."""
    _register(client, tenant, "https://hooks.example.com/in", ["post.scheduled"])
    due_post(tenant, "backlog", platform="tiktok")
    grace = timedelta(seconds=60)
    with new_session() as session:
        [delivery] = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.organization_id == tenant.organization_id)
            .with_for_update()
        ).all()
        t = utcnow()
        delivery.next_attempt_at = t - grace - timedelta(seconds=1)
        session.flush()
        first = delivery.token

        def rearmed(at: datetime) -> bool:
            jobs = deliveries.rearm_lost(session, now=at, grace=grace, limit=100_000)
            session.flush()
            copies = [j for j in jobs if j.delivery_id == delivery.id]
            assert all(j.token == delivery.token for j in copies)
            return bool(copies)

        assert rearmed(t)  # the first time: one grace overdue
        for times in (2, 4, 8, 16):
            armed_at = delivery.next_attempt_at
            assert armed_at is not None
            assert not rearmed(armed_at + grace * times - timedelta(seconds=1))
            assert rearmed(armed_at + grace * times + timedelta(seconds=1))
        assert (delivery.rearms, delivery.token) == (5, first)
        began_at = delivery.next_attempt_at
        assert began_at is not None
        taken = deliveries.begin_attempt(
            session, delivery.id, delivery.token, settings=get_settings(), now=began_at
        )
        assert isinstance(taken, deliveries.Attempt)
        assert (delivery.rearms, taken.token) == (0, first + 1)
        # Any other copy of the task, reached later, finds the token taken.
        late = deliveries.begin_attempt(
            session, delivery.id, first, settings=get_settings(), now=began_at
        )
        assert late is deliveries.Skip.STALE
        # Its worker died mid-attempt: the attempt is overdue once its timeout has passed,
        # and one grace later it is re-armed.
        overdue = delivery.next_attempt_at
        assert overdue is not None
        assert rearmed(overdue + grace + timedelta(seconds=1))
        session.rollback()
