"""Content containers: upload (caption and media references), read, and the approval gate:
each project's policy, and the decision on content awaiting approval."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from api.deps import Principal, ReadSession, require
from api.presenters import container_body, json_response, policy_body
from api.routes.common import IdempotencyKey, errors, run_mutation
from api.schemas import (
    ApprovalPolicyIn,
    ApprovalPolicyOut,
    ContainerOut,
    ContentUploadIn,
    DecisionIn,
)
from shared.content import approval, containers
from shared.kit.clock import parse_duration, utcnow
from shared.kit.db import Tx, transaction
from shared.publishing import usecases

router = APIRouter(prefix="/v1", tags=["content"])


@router.post(
    "/projects/{projectId}/content/upload",
    status_code=201,
    response_model=ContainerOut,
    responses=errors("NOT_FOUND", "IDEMPOTENCY_CONFLICT", body=True),
    operation_id="uploadContent",
)
def upload_content(
    projectId: str,
    body: ContentUploadIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("content:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a content container (caption and media URLs) in a project. Idempotent."""

    def work(tx: Tx) -> Response:
        project = containers.get_project(tx.session, principal.organization_id, projectId)
        container = containers.create_container(
            tx.session, project, body.caption, [(m.url, m.type) for m in body.media], now=utcnow()
        )
        return json_response(container_body(container), 201)

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.get(
    "/content/{containerId}",
    response_model=ContainerOut,
    responses=errors("NOT_FOUND"),
    operation_id="getContent",
)
def get_content(
    containerId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("content:read"))],
) -> Response:
    """One content container."""
    return json_response(
        container_body(containers.get_container(session, principal.organization_id, containerId))
    )


@router.get(
    "/projects/{projectId}/approval-policy",
    response_model=ApprovalPolicyOut,
    responses=errors("NOT_FOUND"),
    operation_id="getApprovalPolicy",
)
def get_approval_policy(
    projectId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("content:read"))],
) -> Response:
    """The project's approval policy: which new content waits for a decision."""
    project = containers.get_project(session, principal.organization_id, projectId)
    return json_response(policy_body(approval.policy_of(project)))


@router.put(
    "/projects/{projectId}/approval-policy",
    response_model=ApprovalPolicyOut,
    responses=errors("NOT_FOUND", body=True),
    operation_id="setApprovalPolicy",
)
def put_approval_policy(
    projectId: str,
    body: ApprovalPolicyIn,
    principal: Annotated[Principal, Depends(require("content:write"))],
) -> Response:
    """Replace the project's approval policy (fields left out take their defaults: off).

    `requiresApproval` holds every new container for a decision; `firstNPostsBlocked` holds
    them while the project has fewer than N; `autoApproveAfter` approves any still pending
    that long after upload. Content already uploaded keeps its state."""
    delay = parse_duration(body.auto_approve_after) if body.auto_approve_after else None
    policy = approval.Policy(body.requires_approval, body.first_n_posts_blocked, delay)
    with transaction() as tx:
        saved = approval.set_policy(tx.session, principal.actor(), projectId, policy, now=utcnow())
        return json_response(policy_body(saved))


def _decide(
    containerId: str,
    body: DecisionIn | None,
    request: Request,
    principal: Principal,
    idempotency_key: str | None,
    *,
    approve: bool,
) -> Response:
    now = utcnow()

    def work(tx: Tx) -> Response:
        reason = body.reason if body else None
        done = usecases.decide_content(
            principal.actor(), containerId, reason, approve=approve, now=now, tx=tx
        )
        return json_response(container_body(done.container))

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.post(
    "/content/{containerId}/approve",
    response_model=ContainerOut,
    responses=errors("NOT_FOUND", "CONFLICT", "IDEMPOTENCY_CONFLICT", body=True),
    operation_id="approveContent",
)
def approve_content(
    containerId: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("content:write"))],
    body: Annotated[DecisionIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Approve content awaiting approval: each of its blocked schedule intents becomes its
    `queued` posts (at its `scheduledFor`, or 30 s from now if that is sooner). Approving
    approved content changes nothing; rejected content is 409 CONFLICT. Idempotent."""
    return _decide(containerId, body, request, principal, idempotency_key, approve=True)


@router.post(
    "/content/{containerId}/reject",
    response_model=ContainerOut,
    responses=errors("NOT_FOUND", "CONFLICT", "IDEMPOTENCY_CONFLICT", body=True),
    operation_id="rejectContent",
)
def reject_content(
    containerId: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("content:write"))],
    body: Annotated[DecisionIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Reject content awaiting approval, for good: its blocked intents end `rejected` and any
    later schedule of it is 409 CONTENT_REJECTED. `reason` is kept on the content and the
    event log. Rejecting rejected content changes nothing; approved content is 409."""
    return _decide(containerId, body, request, principal, idempotency_key, approve=False)
