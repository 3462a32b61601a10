"""Webhooks with real processes: the API and workers of the stack, the webhook deliveries'
own worker, beat re-arming what Redis lost, and two receivers over HTTP (one that fails every
event's first two attempts). Every post's outcome reaches each endpoint exactly once after
deduplication by event id, signed, and a slow receiver holds up no publish."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from chaos.receiver import Receiver, serving
from harness.stack import Stack, wait_until
from shared.kit.clock import utcnow
from shared.kit.db import new_session
from shared.models import TERMINAL, ScheduledPost, WebhookDelivery
from tests.factories import TenantFixture, at_one_instant, iso_ms, make_tenant, upload

pytestmark = pytest.mark.integration

OUTCOME = {"published": "post.published", "failed": "post.failed", "canceled": "post.canceled"}


def _register(api: httpx.Client, tenant: TenantFixture, url: str) -> str:
    r = api.post(
        "/v1/webhook-endpoints",
        headers=tenant.headers,
        json={"url": url, "eventTypes": ["post.scheduled", *OUTCOME.values()]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def _final(post_ids: list[str]) -> dict[str, str] | None:
    with new_session() as session:
        rows = session.scalars(select(ScheduledPost).where(ScheduledPost.id.in_(post_ids))).all()
    if all(r.status in TERMINAL for r in rows):
        return {r.id: r.status for r in rows}
    return None


def _all_delivered() -> bool:
    with new_session() as session:
        left = session.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.status == "pending")
        ).all()
    return not left


def test_every_outcome_reaches_every_endpoint_once_through_faults(
    stack: Stack, api: httpx.Client
) -> None:
    tenant = make_tenant("Hooked", sandbox_url=stack.sandbox_url, extra_accounts=9)
    accounts = tenant.extra_accounts
    with serving(Receiver()) as steady, serving(Receiver(fail_first=2)) as flaky:
        steady.secrets = [_register(api, tenant, steady.url)]
        flaky.secrets = [_register(api, tenant, flaky.url)]
        # 36 posts due in 3 s; a third canceled before their time, and the broker wiped
        # once while deliveries are in flight (their messages are lost, the log is not).
        containers = [upload(api, tenant, caption=f"hooked {i}") for i in range(4)]
        post_ids, _ = at_one_instant(api, tenant, containers, accounts, 3)
        canceled = post_ids[::3]
        for pid in canceled:
            r = api.request("DELETE", f"/v1/scheduled-posts/{pid}", headers=tenant.headers, json={})
            assert r.status_code == 200, r.text
        wait_until(lambda: len(flaky.received) >= 10, 30, what="deliveries under way")
        stack.redis.restart_empty()  # type: ignore[union-attr]
        final = wait_until(lambda: _final(post_ids), 90, what="every post terminal")
        # Re-armed after REDISPATCH_GRACE_S by the dispatcher, retried on the schedule.
        wait_until(_all_delivered, 90, interval=0.5, what="every delivery done")
    assert {final[p] for p in canceled} == {"canceled"}
    for receiver in (steady, flaky):
        assert all(r.verified for r in receiver.received)
        kept = receiver.delivered()
        outcomes = Counter(
            (r.body["data"]["scheduledPostId"], r.body["type"]) for r in kept.values()
        )
        expected = Counter({(pid, OUTCOME[status]): 1 for pid, status in final.items()})
        expected.update({(pid, "post.scheduled"): 1 for pid in post_ids})
        assert outcomes == expected
        # Delivered means the data says so: the event's status is the post's final one.
        for r in kept.values():
            if r.body["type"] != "post.scheduled":
                assert r.body["data"]["status"] == final[r.body["data"]["scheduledPostId"]]
    # The flaky receiver saw each event three times, under one id each time.
    tries = Counter(r.event_id for r in flaky.received)
    assert tries and all(n >= 3 for n in tries.values()), tries


def test_a_receiver_that_hangs_holds_up_no_publish(stack: Stack, api: httpx.Client) -> None:
    """Every delivery to this receiver times out (WEBHOOK_TIMEOUT_S is 3 s in the stack), on
    the webhook worker; posts still publish on time, on their own workers."""
    tenant = make_tenant("Hung", sandbox_url=stack.sandbox_url, extra_accounts=8)
    with serving(Receiver(hang_s=5)) as hung:
        _register(api, tenant, hung.url)
        instant = utcnow().replace(microsecond=0) + timedelta(seconds=3)
        cid = upload(api, tenant, caption="not held up")
        r = api.post(
            f"/v1/content/{cid}/schedule",
            headers=tenant.headers,
            json={
                "scheduledFor": iso_ms(instant),
                "targets": [{"socialAccountId": a} for a in tenant.extra_accounts],
            },
        )
        assert r.status_code == 201, r.text
        post_ids = [p["id"] for p in r.json()["items"]]
        final = wait_until(lambda: _final(post_ids), 30, what="every post terminal")
        assert set(final.values()) == {"published"}
        with new_session() as session:
            published = session.scalars(
                select(ScheduledPost.published_at).where(ScheduledPost.id.in_(post_ids))
            ).all()
        late = max((p - instant).total_seconds() for p in published if p is not None)
        print(f"\nslowest publish {late:.2f}s after its time, the receiver hanging")
        # Meanwhile the deliveries time out, one attempt after another.
        wait_until(lambda: len(hung.received) >= 2, 30, what="timed-out attempts")
