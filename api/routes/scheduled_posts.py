"""Scheduled posts: schedule, publish now, read, list, reschedule and cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime

from api import pagination, schemas
from api.deps import Principal, ReadSession, require
from api.presenters import intent_body, json_response, post_body
from api.routes.common import IdempotencyKey, errors, run_mutation
from api.schemas import (
    BlockedOnApproval,
    CanceledOut,
    CancelIn,
    PublishIn,
    RescheduledOut,
    RescheduleIn,
    ScheduledPostList,
    ScheduledPostOut,
    ScheduledPostsCreated,
    ScheduleIn,
    ScheduleIntentList,
    ScheduleIntentOut,
    TargetIn,
    Text,
)
from shared.content import approval, containers
from shared.kit.clock import iso, utcnow
from shared.kit.db import Tx
from shared.kit.errors import Conflict, Validation
from shared.models import Mode, PostStatus, ScheduledPost, ScheduleIntent
from shared.publishing import posts, usecases
from shared.publishing.posts import CancelResult

router = APIRouter(prefix="/v1", tags=["publishing"])


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


def _created(created: list[ScheduledPost] | ScheduleIntent) -> Response:
    if isinstance(created, ScheduleIntent):
        body = {
            "gateStatus": "blocked_on_approval",
            "containerId": created.container_id,
            "intent": intent_body(created),
        }
        return json_response(body, 202)
    return json_response({"items": [post_body(p) for p in created]}, 201)


@router.post(
    "/content/{containerId}/schedule",
    status_code=201,
    response_model=ScheduledPostsCreated,
    responses={
        202: {
            "model": BlockedOnApproval,
            "description": "The content awaits approval: the schedule is saved as a blocked "
            "intent, and its approval makes the posts (at `scheduledFor`, or 30 s after the "
            "approval if that is later)",
        },
        **errors("NOT_FOUND", "CONTENT_REJECTED", "IDEMPOTENCY_CONFLICT", body=True),
    },
    operation_id="scheduleContent",
)
def schedule(
    containerId: str,
    body: ScheduleIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue the content for each target at `scheduledFor`; all targets or none. Idempotent.

    Content awaiting approval answers 202 with the saved intent; rejected content is 409
    CONTENT_REJECTED."""
    now = utcnow()

    def work(tx: Tx) -> Response:
        # Checked after the idempotency replay: a retry replays even once this time has passed.
        created = usecases.schedule_posts(
            principal.actor(),
            containerId,
            body.scheduled_for,
            _targets(body.targets),
            now=now,
            sandbox_only=principal.sandbox_only,
            tx=tx,
        )
        return _created(created)

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.post(
    "/content/{containerId}/publish",
    status_code=201,
    response_model=ScheduledPostsCreated,
    responses=errors(
        "APPROVAL_REQUIRED",
        "NOT_FOUND",
        "CONTENT_REJECTED",
        "PLATFORM_ERROR",
        "IDEMPOTENCY_CONFLICT",
        body=True,
    ),
    operation_id="publishContentNow",
)
def publish_now(
    containerId: str,
    body: PublishIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish now: due in 30 s, the caller's window to cancel a mistaken publish. Idempotent.

    Content awaiting approval is 403 APPROVAL_REQUIRED (nothing saved); rejected content is
    409 CONTENT_REJECTED; a target whose platform refuses the account's token
    (`reauth_required`) is 409 PLATFORM_ERROR with the platform's `details.platformCode`,
    nothing saved: reconnect the account."""
    now = utcnow()

    def work(tx: Tx) -> Response:
        created = usecases.publish_now(
            principal.actor(),
            containerId,
            _targets(body.targets),
            now=now,
            sandbox_only=principal.sandbox_only,
            tx=tx,
        )
        return _created(created)

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.get(
    "/scheduled-posts/{id}",
    response_model=ScheduledPostOut,
    responses=errors("NOT_FOUND"),
    operation_id="getScheduledPost",
)
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
    responses=errors("NOT_FOUND"),
    operation_id="listScheduledPosts",
)
def list_scheduled_posts(
    projectId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("publish:read"))],
    status: Annotated[list[schemas.PostStatus] | None, Query(description="Repeatable")] = None,
    socialAccountId: Annotated[Text | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="scheduledFor >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="scheduledFor <= until")] = None,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """A project's scheduled posts, newest `scheduledFor` first."""
    containers.get_project(session, principal.organization_id, projectId)
    if since is not None and until is not None and since > until:
        raise Validation.at("since", "since must not be after until")
    flt = posts.PostFilter(
        statuses=[PostStatus(s) for s in status or []],
        social_account_id=socialAccountId,
        since=since,
        until=until,
    )
    return pagination.listing(
        session,
        lambda after: posts.list_posts_query(principal.organization_id, projectId, flt, after),
        cursor,
        limit,
        key=lambda p: (p.scheduled_for, p.public_id),
        render=post_body,
    )


@router.post(
    "/scheduled-posts/{id}/reschedule",
    response_model=RescheduledOut,
    responses=errors("NOT_FOUND", "CONFLICT", "IDEMPOTENCY_CONFLICT", body=True),
    operation_id="rescheduleScheduledPost",
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

    def work(tx: Tx) -> Response:
        # Checked after the idempotency replay: a retry replays even once this time is near.
        done = usecases.reschedule_post(principal.actor(), id, body.scheduled_for, now=now, tx=tx)
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
    responses=errors("NOT_FOUND", "CONFLICT", body=True),
    summary="Cancel a queued post before it publishes",
    operation_id="cancelScheduledPost",
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
    done = usecases.cancel_post(principal.actor(), id, body.reason if body else None, now=utcnow())
    if done.result == CancelResult.LOST_TO_UPLOAD:
        raise Conflict(
            "The platform upload has started; the post will complete",
            {"status": done.post.status},
        )
    if done.result == CancelResult.TERMINAL:
        raise Conflict(
            f"Scheduled post is already {done.post.status}", {"status": done.post.status}
        )
    return json_response(
        {
            "id": done.post.public_id,
            "status": "canceled",
            "canceledAt": iso(done.post.canceled_at),
        }
    )


@router.get(
    "/schedule-intents/{intentId}",
    response_model=ScheduleIntentOut,
    responses=errors("NOT_FOUND"),
    operation_id="getScheduleIntent",
)
def get_schedule_intent(
    intentId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("publish:read"))],
) -> Response:
    """One schedule intent: a schedule of content awaiting approval, and what became of it."""
    return json_response(
        intent_body(approval.get_intent(session, principal.organization_id, intentId))
    )


@router.get(
    "/content/{containerId}/schedule-intents",
    response_model=ScheduleIntentList,
    responses=errors("NOT_FOUND"),
    operation_id="listScheduleIntents",
)
def list_schedule_intents(
    containerId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("publish:read"))],
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """A container's schedule intents, oldest first."""
    containers.get_container(session, principal.organization_id, containerId)
    return pagination.listing(
        session,
        lambda after: approval.intents_query(principal.organization_id, containerId, after),
        cursor,
        limit,
        key=lambda i: (i.created_at, i.id),
        render=intent_body,
    )


@router.delete(
    "/schedule-intents/{intentId}",
    response_model=ScheduleIntentOut,
    responses=errors("NOT_FOUND", "CONFLICT", body=True),
    operation_id="cancelScheduleIntent",
)
def cancel_schedule_intent(
    intentId: str,
    principal: Annotated[Principal, Depends(require("publish:write"))],
    body: Annotated[CancelIn | None, Body()] = None,
) -> Response:
    """Cancel a `blocked` intent: its content's approval then makes no post of it. Once
    promoted it is 409 CONFLICT with `details.scheduledPostIds`: cancel those posts."""
    intent = usecases.cancel_intent(
        principal.actor(), intentId, body.reason if body else None, now=utcnow()
    )
    return json_response(intent_body(intent))
