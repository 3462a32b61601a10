"""The caller-facing operations on scheduled posts, one function each: schedule, publish
now, reschedule and cancel. Each owns its unit of work (or joins the caller's, which the
API's Idempotency-Key handling needs), sends or revokes its tasks after commit, writes its
log lines and metrics, and returns what happened. The routes and the tests call these;
the state changes themselves are transitions in `shared/publishing/posts.py`.

The worker's operations (publish, reconcile, the dispatcher and the reaper) are in
`shared/publishing/protocol.py`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial

from shared.content.containers import get_container
from shared.events import Actor
from shared.kit import logs, metrics
from shared.kit.clock import iso
from shared.kit.db import Tx, transaction
from shared.kit.errors import Validation
from shared.kit.settings import get_settings
from shared.models import ScheduledPost
from shared.publishing import posts, tasks
from shared.publishing.posts import Canceled, CancelResult, Rescheduled, Target

# A reschedule must land at least 30 s ahead; this much of it absorbs the request's own transit.
RESCHEDULE_TRANSIT_GRACE = timedelta(seconds=2)


@contextmanager
def _unit(tx: Tx | None) -> Iterator[Tx]:
    """The caller's unit of work, or one of our own that commits when we are done."""
    if tx is not None:
        yield tx
        return
    with transaction() as own:
        yield own


def _create(
    tx: Tx,
    actor: Actor,
    container_id: str,
    scheduled_for: datetime,
    targets: list[Target],
    *,
    now: datetime,
    sandbox_only: bool,
    send_now: bool,
) -> list[ScheduledPost]:
    container = get_container(tx.session, actor.organization_id, container_id)
    scheduled = posts.schedule(
        tx.session,
        actor,
        container,
        scheduled_for,
        targets,
        now=now,
        task_id_for_now=send_now,
        sandbox_only=sandbox_only,
    )
    for post in scheduled.posts:
        tx.after_commit(
            partial(
                logs.transition,
                post.id,
                actor.organization_id,
                "->queued",
                scheduledFor=iso(post.scheduled_for),
                # The wire id, where a caller chose it: every later line names the key only.
                publicId=post.public_id,
            )
        )
    for dispatch in scheduled.dispatches:
        tx.after_commit(partial(tasks.send_publish, dispatch))
    return scheduled.posts


def schedule_posts(
    actor: Actor,
    container_id: str,
    scheduled_for: datetime,
    targets: list[Target],
    *,
    now: datetime,
    sandbox_only: bool = False,
    tx: Tx | None = None,
) -> list[ScheduledPost]:
    """One `queued` post per target at `scheduled_for`, all or none; the dispatcher sends
    each post's task shortly before its time."""
    skew = timedelta(seconds=get_settings().schedule_skew_s)
    if scheduled_for < now - skew:
        raise Validation.at("scheduledFor", "scheduledFor must be in the future")
    with _unit(tx) as unit:
        return _create(
            unit,
            actor,
            container_id,
            scheduled_for,
            targets,
            now=now,
            sandbox_only=sandbox_only,
            send_now=False,
        )


def publish_now(
    actor: Actor,
    container_id: str,
    targets: list[Target],
    *,
    now: datetime,
    sandbox_only: bool = False,
    tx: Tx | None = None,
) -> list[ScheduledPost]:
    """Posts due in PUBLISH_NOW_DELAY_S (30 s, the caller's window to cancel a mistaken
    publish), their tasks sent as soon as the posts are committed."""
    due = now + timedelta(seconds=get_settings().publish_now_delay_s)
    with _unit(tx) as unit:
        return _create(
            unit,
            actor,
            container_id,
            due,
            targets,
            now=now,
            sandbox_only=sandbox_only,
            send_now=True,
        )


def reschedule_post(
    actor: Actor, post_id: str, scheduled_for: datetime, *, now: datetime, tx: Tx | None = None
) -> Rescheduled:
    """Move a `queued` post (at least 30 s ahead); its old task is disarmed by the new fencing
    token and revoked after commit. A post past `queued` is a Conflict."""
    lead = timedelta(seconds=get_settings().publish_now_delay_s)
    if scheduled_for < now + lead - RESCHEDULE_TRANSIT_GRACE:
        raise Validation.at("scheduledFor", "scheduledFor must be at least 30 seconds ahead")
    with _unit(tx) as unit:
        done = posts.reschedule(unit.session, actor, post_id, scheduled_for, now=now)
        if done.revoke_task_id:
            unit.after_commit(partial(tasks.revoke, done.revoke_task_id))
        unit.after_commit(
            partial(
                logs.transition,
                done.post.id,
                actor.organization_id,
                "queued->queued",
                scheduledFor=iso(done.post.scheduled_for),
            )
        )
    return done


def cancel_post(actor: Actor, post_id: str, reason: str | None, *, now: datetime) -> Canceled:
    """Cancel, in a transaction of its own: `won` means the post never reaches the platform
    (committed before this returns); `lost_to_upload` and `terminal` changed nothing."""
    with transaction() as tx:
        done = posts.cancel(tx.session, actor, post_id, reason, now=now)
        if done.result == CancelResult.WON and done.revoke_task_id:
            tx.after_commit(partial(tasks.revoke, done.revoke_task_id))
    metrics.CANCELS.labels(done.result.value).inc()
    if done.result == CancelResult.WON:
        logs.transition(done.post.id, actor.organization_id, done.previous_status + "->canceled")
    return done
