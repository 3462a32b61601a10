"""ORM rows to wire bodies; serialised once, so replays are byte for byte."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from shared.content.approval import Policy
from shared.kit.clock import format_duration, iso
from shared.models import (
    ContentContainer,
    ScheduledPost,
    ScheduleIntent,
    SocialAccount,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


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
    approval = None
    if container.approval_required:
        decision = {"pending_approval": "pending", "completed": "approved"}
        approval = {
            "status": decision.get(container.status, container.status),
            "decidedAt": iso(container.decided_at),
            "auto": container.auto_approved,
            "reason": container.decision_reason,
        }
    return {
        "id": container.id,
        "projectId": container.project_id,
        "status": container.status,
        "caption": container.caption,
        "media": container.media,
        "approval": approval,
        "createdAt": iso(container.created_at),
    }


def policy_body(policy: Policy) -> dict[str, Any]:
    """A project's approval policy."""
    after = policy.auto_approve_after
    return {
        "requiresApproval": policy.requires_approval,
        "firstNPostsBlocked": policy.first_n_blocked,
        "autoApproveAfter": format_duration(after) if after is not None else None,
    }


def intent_body(intent: ScheduleIntent) -> dict[str, Any]:
    """A schedule intent: the saved request, and what became of it."""
    return {
        "id": intent.id,
        "containerId": intent.container_id,
        "status": intent.status,
        "scheduledFor": iso(intent.scheduled_for),
        "targets": intent.targets,
        "scheduledPostIds": list(intent.scheduled_post_ids or []),
        "lastError": intent.last_error,
        "createdAt": iso(intent.created_at),
        "updatedAt": iso(intent.updated_at),
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


def endpoint_body(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """The webhook endpoint resource; its secret only when just made (registration, rotation)."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": list(endpoint.event_types),
        "status": endpoint.status,
        "consecutiveFailures": endpoint.consecutive_failures,
        "previousSecretExpiresAt": iso(endpoint.previous_secret_until),
        "createdAt": iso(endpoint.created_at),
        "updatedAt": iso(endpoint.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_body(
    delivery: WebhookDelivery, event_type: str, attempts: list[WebhookAttempt]
) -> dict[str, Any]:
    """A webhook delivery, with every attempt's time, duration and answer."""
    return {
        "id": delivery.id,
        "endpointId": delivery.endpoint_id,
        "eventId": delivery.event_public_id,
        "eventType": event_type,
        "replayOf": delivery.replay_of,
        "status": delivery.status,
        "attempts": [
            {
                "number": a.number,
                "startedAt": iso(a.started_at),
                "durationMs": a.duration_ms,
                "statusCode": a.status_code,
                "error": a.error,
            }
            for a in attempts
        ],
        "nextAttemptAt": iso(delivery.next_attempt_at),
        "deliveredAt": iso(delivery.delivered_at),
        "createdAt": iso(delivery.created_at),
    }
