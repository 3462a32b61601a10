"""The caller-facing operations on scheduled posts, one function each: schedule, publish
now, reschedule and cancel. Each owns its unit of work (or joins the caller's, which the
API's Idempotency-Key handling needs), sends or revokes its tasks after commit, writes its
log lines and metrics, and returns what happened. The routes and the tests call these;
the state changes themselves are transitions in `shared/publishing/posts.py`.

The worker's operations (publish, reconcile, the dispatcher and the reaper) are in
`shared/publishing/protocol.py`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial

from shared.content import approval
from shared.content.containers import lock_container
from shared.events import Actor
from shared.kit import logs, metrics
from shared.kit.clock import iso
from shared.kit.db import Tx, transaction
from shared.kit.errors import ApprovalRequired, ContentRejected, Validation
from shared.kit.settings import get_settings
from shared.models import ContainerStatus, ScheduledPost, ScheduleIntent
from shared.publishing import posts, tasks
from shared.publishing.posts import Canceled, CancelResult, Rescheduled, Target

log = logging.getLogger("publisher.approval")

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


def _log_queued(tx: Tx, organization_id: str, created: list[ScheduledPost]) -> None:
    for post in created:
        tx.after_commit(
            partial(
                logs.transition,
                post.id,
                organization_id,
                "->queued",
                scheduledFor=iso(post.scheduled_for),
                # The wire id, where a caller chose it: every later line names the key only.
                publicId=post.public_id,
            )
        )


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
) -> list[ScheduledPost] | ScheduleIntent:
    # Shared: an approval or rejection (which takes it for update) waits for this commit and
    # then sees the intent saved here; a schedule after the decision sees the decision.
    container = lock_container(tx.session, actor.organization_id, container_id, share=True)
    if container.status == ContainerStatus.REJECTED:
        raise ContentRejected(
            "This content was rejected and cannot be scheduled", {"status": container.status}
        )
    if container.status == ContainerStatus.PENDING_APPROVAL:
        if send_now:
            raise ApprovalRequired(
                "This content awaits approval: approve it, or schedule it to publish once approved",
                {"status": container.status},
            )
        return approval.save_intent(
            tx.session,
            actor,
            container,
            scheduled_for,
            targets,
            now=now,
            sandbox_only=sandbox_only,
        )
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
    _log_queued(tx, actor.organization_id, scheduled.posts)
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
) -> list[ScheduledPost] | ScheduleIntent:
    """One `queued` post per target at `scheduled_for`, all or none; the dispatcher sends
    each post's task shortly before its time. Content awaiting approval gets a `blocked`
    intent instead, which its approval turns into those posts."""
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
    publish), their tasks sent as soon as the posts are committed. Content awaiting approval
    is 403 APPROVAL_REQUIRED, and nothing is saved."""
    due = now + timedelta(seconds=get_settings().publish_now_delay_s)
    with _unit(tx) as unit:
        created = _create(
            unit,
            actor,
            container_id,
            due,
            targets,
            now=now,
            sandbox_only=sandbox_only,
            send_now=True,
        )
        assert isinstance(created, list)  # pending content was refused
        return created


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


def decide_content(
    actor: Actor, container_id: str, reason: str | None, *, approve: bool, now: datetime, tx: Tx
) -> approval.Decided:
    """Approve (promoting the content's blocked intents to posts) or reject, in the caller's
    unit of work; the promoted posts' log lines follow the commit."""
    decide = approval.approve if approve else approval.reject
    done = decide(tx.session, actor, container_id, reason, now=now)
    if done.changed:
        _log_decided(tx, done)
    return done


def _log_decided(tx: Tx, done: approval.Decided) -> None:
    container = done.container
    line = {
        "containerId": container.id,
        "postOrganizationId": container.organization_id,
        "transition": "pending_approval->" + container.status,
        "auto": container.auto_approved,
        "posts": len(done.posts),
        "failedIntents": len(done.failed),
    }
    tx.after_commit(partial(log.info, "content decided", extra=line))
    _log_queued(tx, container.organization_id, done.posts)


def cancel_intent(
    actor: Actor, intent_id: str, reason: str | None, *, now: datetime
) -> ScheduleIntent:
    """Cancel a blocked intent, in a transaction of its own."""
    with transaction() as tx:
        intent = approval.cancel_intent(tx.session, actor, intent_id, reason, now=now)
    log.info(
        "schedule intent canceled",
        extra={"intentId": intent.id, "postOrganizationId": actor.organization_id},
    )
    return intent


def auto_approve(tx: Tx, *, now: datetime, limit: int) -> int:
    """The dispatcher's sweep of content past its project's `autoApproveAfter`."""
    decided = approval.auto_approve_due(tx.session, now=now, limit=limit)
    for done in decided:
        _log_decided(tx, done)
    return len(decided)
