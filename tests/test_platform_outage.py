"""A platform down for longer than the retry budget: the posts due meanwhile wait for it
instead of failing, and go out once each when it is back (settings' PLATFORM_OUTAGE_*).

The product's own publish, reconcile, cancel, dispatcher and reaper against the Instagram
emulator over HTTP, switched `down` (every call a 503 from the edge). Each post is made two
hours late, so its wait is the whole retry cap (an hour here) and a running stack's
dispatcher and reaper, on the same database, leave it to the test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.settings import Settings
from shared.models import Event, ScheduledPost, SocialAccount
from shared.publishing import posts
from shared.publishing.adapters import adapter_for
from shared.publishing.platforms import PlatformAdapter, UploadPayload
from shared.publishing.posts import CancelResult
from shared.publishing.protocol import Outcome, run_publish, run_reconcile
from shared.publishing.usecases import cancel_post
from tests.checks import detached
from tests.emulators import Served, due_post, instagram_tenant, served_instagram
from tests.factories import TenantFixture

SETTINGS = Settings(
    lease_s=60,
    platform_timeout_s=1.0,
    platform_max_tries=3,
    platform_backoff_base_s=0.01,
    platform_backoff_cap_s=0.05,
    platform_outage_retry_cap_s=3600,
    instagram_container_wait_s=20,
)
OWNER = "test-worker"
LATE = timedelta(hours=2)


@pytest.fixture
def ig() -> Iterator[Served]:
    with served_instagram(image_processing_s=0.05, seed=11) as served:
        yield served


@pytest.fixture
def ig_tenant(ig: Served) -> TenantFixture:
    return instagram_tenant("Outage", ig.url, user_id="17840000000000077")


def _late_post(tenant: TenantFixture, caption: str) -> tuple[str, int]:
    post_id, token = due_post(tenant, caption)
    with transaction() as tx:
        tx.session.execute(
            update(ScheduledPost)
            .where(ScheduledPost.id == post_id)
            .values(scheduled_for=ScheduledPost.scheduled_for - LATE)
        )
    return post_id, token


def _row(post_id: str) -> ScheduledPost:
    return detached(ScheduledPost, post_id)


def _waits(post_id: str) -> list[dict[str, Any]]:
    """The post's waits: each event's data, with its reason."""
    with new_session() as session:
        return [
            {**e.data, "reason": e.reason}
            for e in session.scalars(
                select(Event)
                .where(Event.subject_id == post_id, Event.type == "post.waiting_for_platform")
                .order_by(Event.id)
            )
        ]


def _dispatched_at(now_offset: timedelta, post_id: str, retry_at: Any) -> list[posts.Dispatch]:
    """What a dispatcher tick at `retry_at + now_offset` would send for this post (in a
    transaction rolled back: the database keeps nothing of it)."""
    with new_session() as session:
        due = posts.dispatch_due(
            session,
            now=retry_at + now_offset,
            horizon=timedelta(0),
            grace=timedelta(seconds=3),
            limit=10_000,
        )
        session.rollback()
    return [d for d in due if d.post_id == post_id]


def test_a_post_the_platform_is_down_for_waits_in_the_queue_then_goes_out_once(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    post_id, token = _late_post(ig_tenant, "after the outage")
    ig.set_faults(down=True)
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.WAITING_FOR_PLATFORM
    post = _row(post_id)
    assert post.status == "queued" and post.upload_started_at is None
    assert post.retry_at is not None
    wait = post.retry_at - utcnow()
    assert timedelta(minutes=29) < wait <= timedelta(hours=1), wait
    # Waiting spent none of its attempts, and the token moved on: the old task is stale.
    assert post.attempts == 0 and post.dispatch_version == token + 1 and post.task_id is None
    [event] = _waits(post_id)
    assert event["phase"] == "queued" and event["reason"].startswith("PLATFORM_UNAVAILABLE")
    # Not dispatched before its retry_at, and at it with that ETA, not its past time.
    assert _dispatched_at(-timedelta(seconds=1), post_id, post.retry_at) == []
    [dispatch] = _dispatched_at(timedelta(0), post_id, post.retry_at)
    assert dispatch.eta == post.retry_at and dispatch.token == token + 1
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.STALE
    ig.set_faults(down=False)
    assert run_publish(post_id, token + 1, OWNER, settings=SETTINGS) == Outcome.PUBLISHED
    assert [e["caption"] for e in ig.ledger()] == ["after the outage"]
    assert _row(post_id).attempts == 1


def test_a_cancel_of_a_waiting_post_wins(ig: Served, ig_tenant: TenantFixture) -> None:
    post_id, token = _late_post(ig_tenant, "canceled while waiting")
    ig.set_faults(down=True)
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.WAITING_FOR_PLATFORM
    actor = Actor(ig_tenant.organization_id, ig_tenant.key_id, "req-test")
    assert cancel_post(actor, post_id, "not now", now=utcnow()).result == CancelResult.WON
    ig.set_faults(down=False)
    assert run_publish(post_id, token + 1, OWNER, settings=SETTINGS) == Outcome.STALE
    assert ig.ledger() == []


class _DownAtPublish:
    """The real adapter; the platform goes down the moment the first publish call starts."""

    def __init__(self, inner: PlatformAdapter, ig: Served) -> None:
        self.inner, self.ig, self.idempotent = inner, ig, inner.idempotent

    def prepare(self, key: str, payload: UploadPayload, wait: Any) -> Any:
        return self.inner.prepare(key, payload, wait)

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Any:
        self.ig.set_faults(down=True)
        return self.inner.publish(key, payload, handle)

    def lookup(self, key: str, payload: UploadPayload, handle: str | None, since: Any) -> Any:
        return self.inner.lookup(key, payload, handle, since)


def test_past_the_point_of_no_return_a_post_waits_publishing_and_is_reconciled_once(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    post_id, token = _late_post(ig_tenant, "down at the publish")

    def adapter(account: SocialAccount, settings: Settings) -> PlatformAdapter:
        return _DownAtPublish(adapter_for(account, settings), ig)

    outcome = run_publish(post_id, token, OWNER, make_adapter=adapter, settings=SETTINGS)
    assert outcome == Outcome.WAITING_FOR_PLATFORM
    post = _row(post_id)
    # Still publishing with its upload started: the reaper hands it to the reconciler at
    # retry_at (its lease's end), and a cancel loses meanwhile.
    assert post.status == "publishing" and post.upload_started_at is not None
    assert post.retry_at is not None and post.lease_expires_at == post.retry_at
    assert post.retry_at - utcnow() > timedelta(minutes=29)
    assert post.dispatch_version == token + 1 and post.attempts == 0
    assert [e["phase"] for e in _waits(post_id)] == ["reconcile"]
    actor = Actor(ig_tenant.organization_id, ig_tenant.key_id, "req-test")
    assert cancel_post(actor, post_id, "too late", now=utcnow()).result == (
        CancelResult.LOST_TO_UPLOAD
    )
    with new_session() as session:
        early = posts.reap_expired(
            session,
            now=post.retry_at - timedelta(seconds=1),
            lease=timedelta(seconds=60),
            max_attempts=5,
            limit=10_000,
        )
        session.rollback()
    assert post_id not in {r.post_id for r in early.reconcile}
    # The platform is back: the reconciler asks (the container was never published), then
    # publishes it, once.
    ig.set_faults(down=False)
    assert run_reconcile(post_id, token + 1, settings=SETTINGS) == Outcome.PUBLISHED
    assert [e["caption"] for e in ig.ledger()] == ["down at the publish"]
    assert _row(post_id).status == "published"


def test_a_post_too_late_to_wait_more_fails_as_before(ig: Served, ig_tenant: TenantFixture) -> None:
    post_id, token = _late_post(ig_tenant, "waited long enough")
    ig.set_faults(down=True)
    patience = SETTINGS.model_copy(update={"platform_outage_max_delay_s": LATE.total_seconds()})
    assert run_publish(post_id, token, OWNER, settings=patience) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None and post.last_error["code"] == "PLATFORM_UNAVAILABLE"
    assert _waits(post_id) == []
