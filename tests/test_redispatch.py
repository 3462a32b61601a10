"""The dispatcher's give-up of a lost task backs off (shared/kit/redispatch.py): a post whose
task it replaced is replaced again only after twice the grace, then four times, eight,
sixteen, until a task claims it. A backlog slower to drain than the grace would otherwise
have every waiting task made stale before a worker reached it, for ever. In one transaction,
rolled back, whose row lock keeps a running stack's dispatcher (same database) off the
post."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from shared.kit.clock import utcnow
from shared.kit.db import new_session
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
