"""Social accounts (created and connected by the operator CLI; no connection flow here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api import pagination
from api.deps import Principal, ReadSession, require
from api.presenters import account_body
from api.routes.common import errors
from api.schemas import AccountStatus, Platform, SocialAccountList
from shared.accounts import accounts
from shared.content import containers

router = APIRouter(prefix="/v1", tags=["social"])


@router.get(
    "/projects/{projectId}/social-accounts",
    response_model=SocialAccountList,
    responses=errors("NOT_FOUND"),
    operation_id="listSocialAccounts",
)
def list_social_accounts(
    projectId: str,
    session: ReadSession,
    principal: Annotated[Principal, Depends(require("social:read"))],
    platform: Annotated[Platform | None, Query()] = None,
    status: Annotated[AccountStatus | None, Query()] = None,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """A project's social accounts, oldest first, never with a token; `?platform=` and
    `?status=` filter (`reauth_required`: the platform refused the token, reconnect it)."""
    containers.get_project(session, principal.organization_id, projectId)
    return pagination.listing(
        session,
        lambda after: accounts.accounts_query(
            principal.organization_id,
            projectId,
            platform,
            after,
            status=status,
            sandbox_only=principal.sandbox_only,
        ),
        cursor,
        limit,
        key=lambda a: (a.created_at, a.id),
        render=account_body,
    )
