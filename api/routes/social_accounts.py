"""Social accounts (created by the operator CLI; connection flows are out of scope)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api import pagination
from api.deps import Principal, ReadSession, require
from api.presenters import account_body, json_response
from api.routes.common import errors
from api.schemas import SocialAccountList
from shared import content

router = APIRouter(prefix="/v1", tags=["social accounts"])


@router.get(
    "/projects/{projectId}/social-accounts",
    response_model=SocialAccountList,
    responses=errors(404),
)
def list_social_accounts(
    projectId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("social:read"))],
    platform: Annotated[Literal["tiktok", "instagram"] | None, Query()] = None,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """A project's social accounts, oldest first; `?platform=` filters."""
    content.get_project(session, principal.organization_id, projectId)
    after = pagination.decode(cursor)
    rows = list(
        session.scalars(
            content.accounts_query(
                principal.organization_id,
                projectId,
                platform,
                after,
                sandbox_only=principal.sandbox_only,
            ).limit(limit + 1)
        )
    )
    items, next_cursor = pagination.page(rows, limit, lambda a: (a.created_at, a.id))
    return json_response({"items": [account_body(a) for a in items], "nextCursor": next_cursor})
