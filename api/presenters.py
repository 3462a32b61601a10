"""ORM rows to wire bodies; serialised once, so replays are byte for byte."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from shared.kit.clock import iso
from shared.models import ContentContainer, ScheduledPost, SocialAccount


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A compact JSON response whose bytes are fixed at creation: every body the API sends,
    errors included."""
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def post_body(post: ScheduledPost) -> dict[str, Any]:
    """The ScheduledPost resource."""
    return {
        "id": post.public_id,
        "containerId": post.container_id,
        "socialAccountId": post.social_account_id,
        "platform": post.platform,
        "mode": post.mode,
        "status": post.status,
        "scheduledFor": iso(post.scheduled_for),
        "attemptedAt": iso(post.attempted_at),
        "publishedAt": iso(post.published_at),
        "canceledAt": iso(post.canceled_at),
        "externalId": post.external_id,
        "externalUrl": post.external_url,
        "lastError": post.last_error,
        "createdAt": iso(post.created_at),
        "updatedAt": iso(post.updated_at),
    }


def container_body(container: ContentContainer) -> dict[str, Any]:
    """The content container resource."""
    return {
        "id": container.id,
        "projectId": container.project_id,
        "status": container.status,
        "caption": container.caption,
        "media": container.media,
        "createdAt": iso(container.created_at),
    }


def account_body(account: SocialAccount) -> dict[str, Any]:
    """The social account resource; its credentials never leave the database."""
    return {
        "id": account.id,
        "projectId": account.project_id,
        "platform": account.platform,
        "handle": account.handle,
        "status": account.status,
        "statusReason": account.status_reason,
        "connectedAt": iso(account.connected_at),
        "tokenExpiresAt": iso(account.token_expires_at),
        # Neither the emulator nor the product fetches avatars yet.
        "avatarUrl": None,
        "createdAt": iso(account.created_at),
    }
