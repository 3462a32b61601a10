"""Scheduled posts: schedule, publish now, read, list, reschedule and cancel."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime

from api import pagination
from api.deps import Principal, ReadSession, require
from api.presenters import json_response, post_body
from api.routes.common import IdempotencyKey, errors, run_mutation
from api.schemas import (
    CanceledOut,
    CancelIn,
    PublishIn,
    RescheduledOut,
    RescheduleIn,
    ScheduledPostList,
    ScheduledPostOut,
    ScheduledPostsCreated,
    ScheduleIn,
    TargetIn,
    Text,
)
from shared import content, logs, metrics, posts
from shared.clock import iso, utcnow
from shared.db import Tx, transaction
from shared.errors import Conflict, Validation
from shared.models import Mode, PostStatus
from shared.posts import Dispatch
from shared.settings import get_settings
from worker.broker import revoke, send_publish

router = APIRouter(prefix="/v1", tags=["scheduled posts"])

# A reschedule must land at least 30 s ahead; this much of it absorbs the request's own transit.
RESCHEDULE_TRANSIT_GRACE = timedelta(seconds=2)


def _targets(targets: list[TargetIn]) -> list[posts.Target]:
    return [
        posts.Target(
            social_account_id=t.social_account_id,
            mode=Mode(t.mode),
            scheduled_post_id=t.scheduled_post_id,
            caption_override=t.caption_override,
            first_comment_override=t.first_comment_override,
        )
        for t in targets
    ]


def _create(
    tx: Tx,
    principal: Principal,
    container_id: str,
    scheduled_for: datetime,
    targets: list[TargetIn],
    *,
    now: datetime,
    send_now: bool,
) -> Response:
    container = content.get_container(tx.session, principal.organization_id, container_id)
    created = posts.schedule(
        tx.session,
        principal.actor(),
        container,
        scheduled_for,
        _targets(targets),
        now=now,
        task_id_for_now=send_now,
        sandbox_only=principal.sandbox_only,
    )
    for post in created:
        tx.after_commit(
            partial(
                logs.transition,
                post.id,
                principal.organization_id,
                "->queued",
                scheduledFor=iso(post.scheduled_for),
                # The wire id, where a caller chose it: every later line names the key only.
                publicId=post.public_id,
            )
        )
    if send_now:
        for post in created:
            assert post.task_id is not None
            dispatch = Dispatch(post.id, post.dispatch_version, post.task_id, post.scheduled_for)
            tx.after_commit(partial(send_publish, dispatch))
    return json_response({"items": [post_body(p) for p in created]}, 201)


@router.post(
    "/content/{containerId}/schedule",
    status_code=201,
    response_model=ScheduledPostsCreated,
    responses=errors(404, 409, 413),
)
def schedule(
    containerId: str,
    body: ScheduleIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue the content for each target at `scheduledFor`; all targets or none. Idempotent."""
    now = utcnow()
    skew = timedelta(seconds=get_settings().schedule_skew_s)

    def work(tx: Tx) -> Response:
        # Checked after the idempotency replay: a retry replays even once this time has passed.
        if body.scheduled_for < now - skew:
            raise Validation.at("scheduledFor", "scheduledFor must be in the future")
        return _create(
            tx, principal, containerId, body.scheduled_for, body.targets, now=now, send_now=False
        )

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.post(
    "/content/{containerId}/publish",
    status_code=201,
    response_model=ScheduledPostsCreated,
    responses=errors(404, 409, 413),
)
def publish_now(
    containerId: str,
    body: PublishIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish now: due in 30 s, the caller's window to cancel a mistaken publish. Idempotent."""
    now = utcnow()
    due = now + timedelta(seconds=get_settings().publish_now_delay_s)
    return run_mutation(
        principal,
        idempotency_key,
        "POST",
        request.url.path,
        body,
        lambda tx: _create(tx, principal, containerId, due, body.targets, now=now, send_now=True),
    )


@router.get("/scheduled-posts/{id}", response_model=ScheduledPostOut, responses=errors(404))
def get_scheduled_post(
    id: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("publish:read"))],
) -> Response:
    """One scheduled post; check its status before canceling."""
    return json_response(post_body(posts.get_post(session, principal.organization_id, id)))


@router.get(
    "/projects/{projectId}/scheduled-posts",
    response_model=ScheduledPostList,
    responses=errors(404),
)
def list_scheduled_posts(
    projectId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("publish:read"))],
    status: Annotated[list[PostStatus] | None, Query(description="Repeatable")] = None,
    socialAccountId: Annotated[Text | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="scheduledFor >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="scheduledFor <= until")] = None,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """A project's scheduled posts, newest `scheduledFor` first."""
    content.get_project(session, principal.organization_id, projectId)
    if since is not None and until is not None and since > until:
        raise Validation.at("since", "since must not be after until")
    flt = posts.PostFilter(
        statuses=status or [],
        social_account_id=socialAccountId,
        since=since,
        until=until,
    )
    after = pagination.decode(cursor)
    query = posts.list_posts_query(principal.organization_id, projectId, flt, after)
    rows = list(session.scalars(query.limit(limit + 1)))
    items, next_cursor = pagination.page(rows, limit, lambda p: (p.scheduled_for, p.public_id))
    return json_response({"items": [post_body(p) for p in items], "nextCursor": next_cursor})


@router.post(
    "/scheduled-posts/{id}/reschedule",
    response_model=RescheduledOut,
    responses=errors(404, 409, 413),
)
def reschedule(
    id: str,
    body: RescheduleIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Move a `queued` post to a new time (at least 30 s ahead). Idempotent."""
    now = utcnow()
    lead = timedelta(seconds=get_settings().publish_now_delay_s)

    def work(tx: Tx) -> Response:
        # Checked after the idempotency replay: a retry replays even once this time is near.
        if body.scheduled_for < now + lead - RESCHEDULE_TRANSIT_GRACE:
            raise Validation.at("scheduledFor", "scheduledFor must be at least 30 seconds ahead")
        done = posts.reschedule(tx.session, principal.actor(), id, body.scheduled_for, now=now)
        if done.revoke_task_id:
            tx.after_commit(partial(revoke, done.revoke_task_id))
        tx.after_commit(
            partial(
                logs.transition,
                done.post.id,
                principal.organization_id,
                "queued->queued",
                scheduledFor=iso(done.post.scheduled_for),
            )
        )
        return json_response(
            {
                "id": done.post.public_id,
                "status": done.post.status,
                "scheduledFor": iso(done.post.scheduled_for),
                "updatedAt": iso(done.post.updated_at),
            }
        )

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.delete(
    "/scheduled-posts/{id}",
    response_model=CanceledOut,
    responses=errors(404, 409, 413),
    summary="Cancel a queued post before it publishes",
)
def cancel(
    id: str,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    body: Annotated[CancelIn | None, Body()] = None,
) -> Response:
    """Cancel a post that hasn't started publishing yet; it stays visible as `canceled`.

    Wins against a worker that has not started the platform upload; once the upload has
    started, or the post is terminal, answers 409 CONFLICT. `reason` goes to the audit log.
    """
    try:
        with transaction() as tx:
            done = posts.cancel(
                tx.session, principal.actor(), id, body.reason if body else None, now=utcnow()
            )
            if done.revoke_task_id:
                tx.after_commit(partial(revoke, done.revoke_task_id))
    except Conflict as exc:
        lost = exc.details.get("status") == PostStatus.PUBLISHING
        metrics.CANCELS.labels("lost_to_upload" if lost else "terminal").inc()
        raise
    metrics.CANCELS.labels("won").inc()
    logs.transition(done.post.id, principal.organization_id, done.previous_status + "->canceled")
    return json_response(
        {
            "id": done.post.public_id,
            "status": "canceled",
            "canceledAt": iso(done.post.canceled_at),
        }
    )
