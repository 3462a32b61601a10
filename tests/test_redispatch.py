"""The give-up of a lost task backs off (shared/kit/redispatch.py): a post whose publish task
the dispatcher copied is copied again only after twice the grace, then four times, eight,
sixteen, until a task claims it; a reconcile task the reaper sent and nobody took within its
lease gets a copy under the same token, after twice the lease, four times, and so on, until
one is taken. A backlog slower to drain than the grace would otherwise have every waiting
task made stale before a worker reached it, for ever. Each in one transaction, rolled back,
whose row lock keeps a running stack's dispatcher and reaper (same database) off the
post."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from shared.kit.clock import utcnow
from shared.kit.db import new_session
from shared.kit.redispatch import LOST_BACKOFF_MAX, lost_backoff_delay
from shared.models import ScheduledPost
from shared.publishing import posts
from tests.emulators import due_post
from tests.factories import TenantFixture, make_tenant

GRACE = timedelta(seconds=60)


def test_each_give_up_of_one_posts_task_waits_twice_as_long() -> None:
    tenant: TenantFixture = make_tenant("Backlog")
    post_id, token = due_post(tenant, "waiting its turn", platform="tiktok")
    with new_session() as session:
        post = session.scalars(
            select(ScheduledPost).where(ScheduledPost.id == post_id).with_for_update()
        ).one()
        t = utcnow()
        post.scheduled_for = t - timedelta(hours=1)
        post.dispatched_at = t - GRACE - timedelta(seconds=1)
        session.flush()

        def redispatched(at: datetime) -> bool:
            due = posts.dispatch_due(
                session, now=at, horizon=timedelta(seconds=60), grace=GRACE, limit=100_000
            )
            session.flush()
            return post_id in {d.post_id for d in due}

        assert redispatched(t)  # the first give-up: one grace
        # A copy of the task, under the same token: the first, if merely late, stays good.
        assert (post.redispatches, post.dispatch_version) == (1, token)
        for times in (2, 4, 8, 16):
            sent_at = post.dispatched_at
            assert sent_at is not None
            assert not redispatched(sent_at + GRACE * times - timedelta(seconds=1))
            assert redispatched(sent_at + GRACE * times + timedelta(seconds=1))
        assert post.redispatches == 5
        # A task claims it at last: the count starts again.
        claim = posts.claim(
            session, post_id, post.dispatch_version, "w:1:t", now=utcnow(), lease=GRACE
        )
        assert claim.result == posts.ClaimResult.CLAIMED, claim
        session.refresh(post)
        assert (post.status, post.redispatches) == ("publishing", 0)
        session.rollback()


LEASE = timedelta(seconds=10)
SETTLE = timedelta(seconds=5)


def test_a_reconcile_task_nobody_took_is_copied_under_its_token_with_backoff() -> None:
    tenant: TenantFixture = make_tenant("Reconcile backlog")
    post_id, token = due_post(tenant, "past the point of no return", platform="tiktok")
    with new_session() as session:
        t = utcnow()
        assert posts.claim(session, post_id, token, "w:1", now=t, lease=LEASE).post is not None
        assert posts.begin_upload(session, post_id, token, "w:1", now=t, lease=LEASE)
        post = session.scalars(
            select(ScheduledPost).where(ScheduledPost.id == post_id).with_for_update()
        ).one()
        assert post.upload_started_at is not None

        def reaped(at: datetime) -> posts.Reconcile | None:
            out = posts.reap_expired(
                session, now=at, lease=LEASE, max_attempts=5, limit=100_000, settle=SETTLE
            )
            session.flush()
            return next((r for r in out.reconcile if r.post_id == post_id), None)

        # The worker vanished: its lease ends, the reaper hands the post out under a new token.
        first = reaped(t + LEASE + timedelta(seconds=1))
        assert first is not None and first.token == token + 1
        assert (post.owner, post.redispatches) == (f"reconcile:{first.task_id}", 0)
        # Nobody takes it (lost, or behind a backlog): copies under the same token, each
        # after twice as long as the last.
        copies = [first]
        for n in (1, 2, 3, 4):
            due = post.lease_expires_at
            assert due is not None
            assert reaped(due - timedelta(seconds=1)) is None
            copy = reaped(due + timedelta(seconds=1))
            assert copy is not None and copy.token == token + 1, n
            assert copy.task_id != copies[-1].task_id
            assert post.redispatches == n
            assert post.lease_expires_at == due + timedelta(seconds=1) + SETTLE + LEASE * 2**n
            copies.append(copy)
        # The oldest copy surfaces first and takes it; every other copy finds it taken.
        now = utcnow()
        taken = posts.take_for_reconcile(session, post_id, token + 1, now=now, lease=LEASE)
        assert taken is not None and taken.owner == f"reconciling:{copies[-1].task_id}"
        assert taken.redispatches == 0
        for _ in copies[1:]:
            assert (
                posts.take_for_reconcile(session, post_id, token + 1, now=now, lease=LEASE) is None
            )
        # The reconciler itself vanishes: a new hand-out under a new token, not a copy.
        again = reaped(now + LEASE + timedelta(seconds=1))
        assert again is not None and again.token == token + 2
        assert post.redispatches == 0
        session.rollback()


def test_the_backoff_delay_doubles_up_to_its_cap() -> None:
    assert [lost_backoff_delay(LEASE, n) for n in range(4)] == [LEASE * f for f in (1, 2, 4, 8)]
    assert lost_backoff_delay(LEASE, 40) == LEASE * LOST_BACKOFF_MAX
