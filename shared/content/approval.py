"""The approval gate: each project's policy, the decision on a container, and the schedules
saved while content waits for it.

Under a policy a new container starts `pending_approval`. Scheduling it saves the request as a
`blocked` intent (checked like a schedule, all targets or none); approving the content turns
every blocked intent into `queued` posts through the one schedule transition
(`posts.schedule`); rejecting it ends them. Every decision takes the container's row lock, a
schedule shares it, and a cancel of an intent takes the intent's: an approval racing a second
approval, a rejection, a schedule or a cancel has one outcome, whichever commits first.

    pending_approval --approve (or the policy's delay)--> completed
            '--reject--> rejected (final)
    intent: blocked --approve--> promoted | failed;  --reject--> rejected;  --cancel--> canceled
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import Session

from shared.content.containers import get_project, lock_container
from shared.events import Actor, EventType, Subject, append
from shared.kit import ids
from shared.kit.clock import ceil_second, iso
from shared.kit.errors import Conflict, NotFound, PublisherError
from shared.models import (
    ContainerStatus,
    ContentContainer,
    IntentStatus,
    Mode,
    Project,
    ScheduledPost,
    ScheduleIntent,
)
from shared.publishing import posts
from shared.publishing.posts import Target


@dataclass(frozen=True)
class Policy:
    """A project's approval policy, as `GET|PUT /v1/projects/:id/approval-policy` shows it."""

    requires_approval: bool = False
    first_n_blocked: int = 0
    auto_approve_after: timedelta | None = None


def policy_of(project: Project) -> Policy:
    after = project.auto_approve_after_s
    return Policy(
        project.approval_required,
        project.approval_first_n,
        timedelta(seconds=after) if after is not None else None,
    )


def set_policy(
    session: Session, actor: Actor, project_id: str, policy: Policy, *, now: datetime
) -> Policy:
    """Replace the project's policy. It decides how new containers start; content already
    waiting stays waiting (a later `autoApproveAfter` does apply to it)."""
    project = get_project(session, actor.organization_id, project_id)
    session.refresh(project, with_for_update=True)
    before = policy_of(project)
    project.approval_required = policy.requires_approval
    project.approval_first_n = policy.first_n_blocked
    after = policy.auto_approve_after
    project.auto_approve_after_s = int(after.total_seconds()) if after is not None else None
    if policy != before:
        subject = Subject(project.organization_id, "project", project.id)
        append(session, EventType.APPROVAL_POLICY_UPDATED, subject, _policy_data(policy), actor)
    return policy_of(project)


def _policy_data(policy: Policy) -> dict[str, Any]:
    after = policy.auto_approve_after
    return {
        "requiresApproval": policy.requires_approval,
        "firstNPostsBlocked": policy.first_n_blocked,
        "autoApproveAfterSeconds": int(after.total_seconds()) if after is not None else None,
    }


# --- intents -------------------------------------------------------------------------------


def _wire_target(target: Target) -> dict[str, Any]:
    return {
        "socialAccountId": target.social_account_id,
        "mode": target.mode.value,
        "scheduledPostId": target.scheduled_post_id,
        "captionOverride": target.caption_override,
        "firstCommentOverride": target.first_comment_override,
    }


def targets_of(intent: ScheduleIntent) -> list[Target]:
    """The intent's targets as the schedule transition takes them."""
    return [
        Target(
            social_account_id=t["socialAccountId"],
            mode=Mode(t["mode"]),
            scheduled_post_id=t["scheduledPostId"],
            caption_override=t["captionOverride"],
            first_comment_override=t["firstCommentOverride"],
        )
        for t in intent.targets
    ]


def _intent_event(
    session: Session,
    type_: EventType,
    intent: ScheduleIntent,
    actor: Actor | None = None,
    reason: str | None = None,
) -> None:
    data: dict[str, Any] = {
        "intentId": intent.id,
        "containerId": intent.container_id,
        "status": intent.status,
        "scheduledFor": iso(intent.scheduled_for),
    }
    if intent.scheduled_post_ids:
        data["scheduledPostIds"] = list(intent.scheduled_post_ids)
    if intent.last_error is not None:
        data["lastError"] = intent.last_error
    subject = Subject(intent.organization_id, "schedule_intent", intent.id)
    append(session, type_, subject, data, actor, reason)


def save_intent(
    session: Session,
    actor: Actor,
    container: ContentContainer,
    scheduled_for: datetime,
    targets: list[Target],
    *,
    now: datetime,
    sandbox_only: bool,
) -> ScheduleIntent:
    """A schedule of content awaiting approval, kept `blocked`: checked now as a schedule is
    (a 422 saves nothing), promoted or ended by the decision. The caller holds the container's
    shared lock, so no decision lands between the check of its status and this commit."""
    posts.check_targets(session, actor, container, targets, sandbox_only=sandbox_only)
    intent = ScheduleIntent(
        id=ids.new_id(ids.SCHEDULE_INTENT),
        organization_id=container.organization_id,
        project_id=container.project_id,
        container_id=container.id,
        status=IntentStatus.BLOCKED.value,
        scheduled_for=ceil_second(scheduled_for),
        targets=[_wire_target(t) for t in targets],
        sandbox_only=sandbox_only,
        actor_key_id=actor.key_id,
        request_id=actor.request_id,
        created_at=now,
        updated_at=now,
    )
    session.add(intent)
    session.flush()
    _intent_event(session, EventType.INTENT_SAVED, intent, actor)
    return intent


def get_intent(
    session: Session, organization_id: str, intent_id: str, *, lock: bool = False
) -> ScheduleIntent:
    """The intent in this organization (row-locked with `lock`), or NotFound."""
    if ids.is_valid(intent_id, ids.SCHEDULE_INTENT):
        query = select(ScheduleIntent).where(
            ScheduleIntent.id == intent_id, ScheduleIntent.organization_id == organization_id
        )
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        found = session.scalars(query).one_or_none()
        if found is not None:
            return found
    raise NotFound("Schedule intent not found")


def cancel_intent(
    session: Session, actor: Actor, intent_id: str, reason: str | None, *, now: datetime
) -> ScheduleIntent:
    """Cancel a `blocked` intent under its row lock: its content's approval then makes no post
    of it. Once promoted (or ended) it is a Conflict naming its posts, which are then
    canceled one by one like any post."""
    intent = get_intent(session, actor.organization_id, intent_id, lock=True)
    if intent.status != IntentStatus.BLOCKED:
        details: dict[str, Any] = {"status": intent.status}
        if intent.scheduled_post_ids:
            details["scheduledPostIds"] = list(intent.scheduled_post_ids)
        raise Conflict(
            f"Only blocked intents can be canceled; this one is {intent.status}", details
        )
    intent.status = IntentStatus.CANCELED.value
    intent.cancel_reason = reason
    intent.updated_at = now
    _intent_event(session, EventType.INTENT_CANCELED, intent, actor, reason)
    return intent


def intents_query(
    organization_id: str, container_id: str, after: tuple[datetime, str] | None
) -> Select[ScheduleIntent]:
    """A container's intents, oldest first, past a keyset position."""
    query = select(ScheduleIntent).where(
        ScheduleIntent.organization_id == organization_id,
        ScheduleIntent.container_id == container_id,
    )
    if after is not None:
        query = query.where(tuple_(ScheduleIntent.created_at, ScheduleIntent.id) > after)
    return query.order_by(ScheduleIntent.created_at, ScheduleIntent.id)


# --- decisions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    """A decision's effect: `changed` is False when the content was already so decided (a
    second approval changes nothing); the posts its intents became, and the intents that
    could no longer be scheduled."""

    container: ContentContainer
    changed: bool
    posts: list[ScheduledPost] = field(default_factory=list)
    failed: list[ScheduleIntent] = field(default_factory=list)


def _decision_data(container: ContentContainer) -> dict[str, Any]:
    return {
        "containerId": container.id,
        "projectId": container.project_id,
        "status": container.status,
        "decidedAt": iso(container.decided_at),
        "auto": container.auto_approved,
    }


def _blocked_intents(session: Session, container_id: str) -> list[ScheduleIntent]:
    # Each intent's lock waits out a cancel in flight; one it canceled is then not `blocked`.
    return list(
        session.scalars(
            select(ScheduleIntent)
            .where(
                ScheduleIntent.container_id == container_id,
                ScheduleIntent.status == IntentStatus.BLOCKED,
            )
            .order_by(ScheduleIntent.created_at, ScheduleIntent.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def _undecided(container: ContentContainer, wanted: ContainerStatus) -> bool:
    """True when the container awaits this decision; False when it already has it; a Conflict
    when it has the other one, or never needed one."""
    if container.status == ContainerStatus.PENDING_APPROVAL:
        return True
    if container.approval_required and container.status == wanted:
        return False
    if not container.approval_required:
        raise Conflict("This content does not need approval", {"status": container.status})
    decided = "approved" if container.status == ContainerStatus.COMPLETED else container.status
    raise Conflict(f"This content is already {decided}", {"status": container.status})


def _decide(
    container: ContentContainer,
    status: ContainerStatus,
    actor: Actor,
    reason: str | None,
    now: datetime,
    *,
    auto: bool = False,
) -> None:
    container.status = status.value
    container.decided_at = now
    container.decided_by = actor.key_id
    container.auto_approved = auto
    container.decision_reason = reason


def approve(
    session: Session, actor: Actor, container_id: str, reason: str | None, *, now: datetime
) -> Decided:
    """Approve pending content under its row lock and promote its blocked intents."""
    container = lock_container(session, actor.organization_id, container_id)
    return _approve_locked(session, actor, container, reason, now)


def _approve_locked(
    session: Session,
    actor: Actor,
    container: ContentContainer,
    reason: str | None,
    now: datetime,
    *,
    auto: bool = False,
) -> Decided:
    if not _undecided(container, ContainerStatus.COMPLETED):
        return Decided(container, changed=False)
    _decide(container, ContainerStatus.COMPLETED, actor, reason, now, auto=auto)
    subject = Subject(container.organization_id, "content", container.id)
    append(session, EventType.CONTENT_APPROVED, subject, _decision_data(container), actor, reason)
    made: list[ScheduledPost] = []
    failed: list[ScheduleIntent] = []
    for intent in _blocked_intents(session, container.id):
        promoted = _promote(session, intent, container, now)
        if promoted is None:
            failed.append(intent)
        else:
            made += promoted
    return Decided(container, True, made, failed)


# A promoted post is due at its intended time, or this long after the approval if that time
# is nearer: the caller keeps publish-now's window to cancel.
PROMOTION_LEAD = timedelta(seconds=30)


def _promote(
    session: Session, intent: ScheduleIntent, container: ContentContainer, now: datetime
) -> list[ScheduledPost] | None:
    """The intent's posts, created by the schedule transition as its scheduler asked (their
    `post.scheduled` events name that key and request); None, with the intent `failed`, if
    its targets no longer schedule (an account disconnected since, an id taken since)."""
    due = max(intent.scheduled_for, now + PROMOTION_LEAD)
    scheduler = Actor(intent.organization_id, intent.actor_key_id, intent.request_id)
    try:
        # A savepoint: a refused intent leaves nothing behind, the approval and the others
        # stand. The checks refuse before anything is written.
        with session.begin_nested():
            scheduled = posts.schedule(
                session,
                scheduler,
                container,
                due,
                targets_of(intent),
                now=now,
                sandbox_only=intent.sandbox_only,
            )
    except PublisherError as exc:
        intent.status = IntentStatus.FAILED.value
        intent.last_error = {"code": exc.code, "message": exc.message, "details": exc.details}
        intent.updated_at = now
        _intent_event(session, EventType.INTENT_FAILED, intent)
        return None
    intent.status = IntentStatus.PROMOTED.value
    intent.scheduled_post_ids = [p.public_id for p in scheduled.posts]
    intent.updated_at = now
    _intent_event(session, EventType.INTENT_PROMOTED, intent)
    return scheduled.posts


def reject(
    session: Session, actor: Actor, container_id: str, reason: str | None, *, now: datetime
) -> Decided:
    """Reject pending content under its row lock; its blocked intents end `rejected`. Final:
    the content is never scheduled (409 CONTENT_REJECTED)."""
    container = lock_container(session, actor.organization_id, container_id)
    if not _undecided(container, ContainerStatus.REJECTED):
        return Decided(container, changed=False)
    _decide(container, ContainerStatus.REJECTED, actor, reason, now)
    subject = Subject(container.organization_id, "content", container.id)
    data = _decision_data(container)
    append(session, EventType.CONTENT_REJECTED, subject, data, actor, reason)
    for intent in _blocked_intents(session, container.id):
        intent.status = IntentStatus.REJECTED.value
        intent.updated_at = now
        _intent_event(session, EventType.INTENT_REJECTED, intent, actor, reason)
    return Decided(container, True)


def auto_approve_due(session: Session, *, now: datetime, limit: int) -> list[Decided]:
    """The dispatcher's sweep: approve each container pending for its project's
    `autoApproveAfter`, as an approval by no key (`auto`). Rows another transaction holds
    (an approval in flight) are skipped and seen again next tick."""
    # make_interval(years, months, weeks, days, hours, mins, secs)
    delay = func.make_interval(0, 0, 0, 0, 0, 0, Project.auto_approve_after_s)
    rows = session.scalars(
        select(ContentContainer)
        .join(Project, Project.id == ContentContainer.project_id)
        .where(
            ContentContainer.status == ContainerStatus.PENDING_APPROVAL,
            Project.auto_approve_after_s.is_not(None),
            ContentContainer.created_at + delay <= now,
        )
        .order_by(ContentContainer.created_at)
        .limit(limit)
        .with_for_update(of=ContentContainer, skip_locked=True)
    ).all()
    return [
        _approve_locked(session, Actor(c.organization_id, None, None), c, None, now, auto=True)
        for c in rows
    ]
