"""End to end through real processes: API, Celery workers, beat, and the sandbox platform."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from harness.stack import Stack, wait_until
from shared.kit.db import new_session
from shared.models import TERMINAL, Event
from tests.factories import TenantFixture, at, schedule, upload

pytestmark = pytest.mark.integration


def _get(api: httpx.Client, tenant: TenantFixture, post_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_terminal(
    api: httpx.Client, tenant: TenantFixture, post_id: str, timeout: float = 20
) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: (p := _get(api, tenant, post_id))["status"] in TERMINAL and p,
            timeout,
            what=f"{post_id} terminal",
        )
    )


def _ledger_by_key(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in stack.ledger()["posts"]:
        out.setdefault(entry["idempotencyKey"], []).append(entry)
    return out


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_scheduled_post_is_published_and_matches_the_ledger(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    cid = upload(api, live_tenant)
    accounts = [live_tenant.accounts["tiktok"], live_tenant.accounts["instagram"]]
    posts = schedule(api, live_tenant, cid, at(2), accounts)
    for post in posts:
        done = _wait_terminal(api, live_tenant, post["id"])
        assert done["status"] == "published", done
        entries = _ledger_by_key(stack)[post["id"]]
        assert len(entries) == 1
        assert entries[0]["externalId"] == done["externalId"]
        assert done["externalUrl"]
        assert _parse(entries[0]["receivedAt"]) >= _parse(post["scheduledFor"]) - timedelta(
            milliseconds=100
        )


def test_draft_mode_ends_as_draft(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    cid = upload(api, live_tenant)
    (post,) = schedule(api, live_tenant, cid, at(1), mode="draft")
    done = _wait_terminal(api, live_tenant, post["id"])
    assert done["status"] == "draft"
    assert _ledger_by_key(stack)[post["id"]][0]["mode"] == "draft"


def test_cancel_after_publish_is_409(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    cid = upload(api, live_tenant)
    (post,) = schedule(api, live_tenant, cid, at(1))
    assert _wait_terminal(api, live_tenant, post["id"])["status"] == "published"
    r = api.delete(f"/v1/scheduled-posts/{post['id']}", headers=live_tenant.headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "CONFLICT"
    assert _get(api, live_tenant, post["id"])["status"] == "published"


def test_platform_rejection_fails_with_platform_code(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    # What can be known at schedule time (a caption over the platform's limit) is a 422 there
    # (tests/test_hardening.py); a refusal only the platform knows ends the post failed.
    stack.set_faults(rate_400=1.0)
    cid = upload(api, live_tenant)
    (post,) = schedule(api, live_tenant, cid, at(1))
    done = _wait_terminal(api, live_tenant, post["id"])
    assert done["status"] == "failed"
    assert done["lastError"]["code"] == "PLATFORM_ERROR"
    assert done["lastError"]["platformCode"] == "rejected_by_platform"
    assert post["id"] not in _ledger_by_key(stack)


def test_publish_now_cancel_and_reschedule_timeline(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """One 35 s timeline: publish-now canceled inside its 30 s window never goes out; the
    uncanceled one goes out after its window; a rescheduled post goes out at the new time,
    not the old one."""
    cid = upload(api, live_tenant)
    r = api.post(
        f"/v1/content/{cid}/publish",
        headers=live_tenant.headers,
        json={"targets": [{"socialAccountId": a} for a in live_tenant.accounts.values()]},
    )
    assert r.status_code == 201, r.text
    to_cancel, to_publish = r.json()["items"]
    assert _parse(to_cancel["scheduledFor"]) - _parse(to_cancel["createdAt"]) >= timedelta(
        seconds=29
    )

    (moved,) = schedule(api, live_tenant, cid, at(3))
    new_time = at(32)
    r = api.post(
        f"/v1/scheduled-posts/{moved['id']}/reschedule",
        headers=live_tenant.headers,
        json={"scheduledFor": new_time},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"

    r = api.request(
        "DELETE",
        f"/v1/scheduled-posts/{to_cancel['id']}",
        headers=live_tenant.headers,
        json={"reason": "wrong video"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": to_cancel["id"],
        "status": "canceled",
        "canceledAt": r.json()["canceledAt"],
    }

    # Past the old time: the rescheduled post has not gone out.
    wait_until(
        lambda: datetime.now().astimezone() > _parse(moved["scheduledFor"]) + timedelta(seconds=3),
        10,
    )
    assert _get(api, live_tenant, moved["id"])["status"] == "queued"
    assert moved["id"] not in _ledger_by_key(stack)

    published = _wait_terminal(api, live_tenant, to_publish["id"], timeout=45)
    assert published["status"] == "published"
    rescheduled = _wait_terminal(api, live_tenant, moved["id"], timeout=20)
    assert rescheduled["status"] == "published"

    ledger = _ledger_by_key(stack)
    assert set(ledger) == {to_publish["id"], moved["id"]}
    assert _parse(ledger[moved["id"]][0]["receivedAt"]) >= _parse(new_time) - timedelta(
        milliseconds=100
    )
    assert _parse(ledger[to_publish["id"]][0]["receivedAt"]) >= _parse(
        to_publish["scheduledFor"]
    ) - timedelta(milliseconds=100)

    # The canceled one stays visible, and its ETA task, which still fired, did nothing.
    canceled = _get(api, live_tenant, to_cancel["id"])
    assert canceled["status"] == "canceled"
    assert canceled["attemptedAt"] is None
    with new_session() as session:
        reasons = session.scalars(
            select(Event.reason).where(
                Event.subject_id == to_cancel["id"], Event.type == "post.canceled"
            )
        ).all()
    assert reasons == ["wrong video"]
