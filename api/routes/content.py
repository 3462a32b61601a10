"""Content containers: upload (caption and media references) and read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.deps import Principal, ReadSession, require
from api.presenters import container_body, json_response
from api.routes.common import IdempotencyKey, errors, run_mutation
from api.schemas import ContainerOut, ContentUploadIn
from shared.content import containers
from shared.kit.clock import utcnow
from shared.kit.db import Tx

router = APIRouter(prefix="/v1", tags=["content"])


@router.post(
    "/projects/{projectId}/content/upload",
    status_code=201,
    response_model=ContainerOut,
    responses=errors(404, 409, 413),
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


@router.get("/content/{containerId}", response_model=ContainerOut, responses=errors(404))
def get_content(
    containerId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("content:read"))],
) -> Response:
    """One content container."""
    return json_response(
        container_body(containers.get_container(session, principal.organization_id, containerId))
    )
