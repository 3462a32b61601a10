"""The one table from the API's operations to the client's methods: each operationId of the
OpenAPI document, its method and path, its tag (the client's attribute: `layers.<tag>`) and
the method that calls it. The client builds every request from this table, and a test fails
when the served document has an operation the table lacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    tag: str  # the attribute of the client: layers.content, layers.publishing, ...
    name: str  # the method of that attribute

    @property
    def call(self) -> str:
        return f"{self.tag}.{self.name}"


def _table(*rows: tuple[str, str, str, str, str]) -> Mapping[str, Operation]:
    return MappingProxyType({op_id: Operation(m, p, t, n) for op_id, m, p, t, n in rows})


OPERATIONS: Final = _table(
    ("uploadContent", "POST", "/v1/projects/{projectId}/content/upload", "content", "upload"),
    ("getContent", "GET", "/v1/content/{containerId}", "content", "get"),
    (
        "getApprovalPolicy",
        "GET",
        "/v1/projects/{projectId}/approval-policy",
        "content",
        "get_approval_policy",
    ),
    (
        "setApprovalPolicy",
        "PUT",
        "/v1/projects/{projectId}/approval-policy",
        "content",
        "set_approval_policy",
    ),
    ("approveContent", "POST", "/v1/content/{containerId}/approve", "content", "approve"),
    ("rejectContent", "POST", "/v1/content/{containerId}/reject", "content", "reject"),
    (
        "listSocialAccounts",
        "GET",
        "/v1/projects/{projectId}/social-accounts",
        "social",
        "list_accounts",
    ),
    ("scheduleContent", "POST", "/v1/content/{containerId}/schedule", "publishing", "schedule"),
    (
        "publishContentNow",
        "POST",
        "/v1/content/{containerId}/publish",
        "publishing",
        "publish_now",
    ),
    ("getScheduledPost", "GET", "/v1/scheduled-posts/{id}", "publishing", "get_scheduled_post"),
    (
        "listScheduledPosts",
        "GET",
        "/v1/projects/{projectId}/scheduled-posts",
        "publishing",
        "list_scheduled_posts",
    ),
    (
        "rescheduleScheduledPost",
        "POST",
        "/v1/scheduled-posts/{id}/reschedule",
        "publishing",
        "reschedule",
    ),
    ("cancelScheduledPost", "DELETE", "/v1/scheduled-posts/{id}", "publishing", "cancel"),
    (
        "listScheduleIntents",
        "GET",
        "/v1/content/{containerId}/schedule-intents",
        "publishing",
        "list_schedule_intents",
    ),
    (
        "getScheduleIntent",
        "GET",
        "/v1/schedule-intents/{intentId}",
        "publishing",
        "get_schedule_intent",
    ),
    (
        "cancelScheduleIntent",
        "DELETE",
        "/v1/schedule-intents/{intentId}",
        "publishing",
        "cancel_schedule_intent",
    ),
    ("createWebhookEndpoint", "POST", "/v1/webhook-endpoints", "webhooks", "create_endpoint"),
    ("listWebhookEndpoints", "GET", "/v1/webhook-endpoints", "webhooks", "list_endpoints"),
    (
        "getWebhookEndpoint",
        "GET",
        "/v1/webhook-endpoints/{endpointId}",
        "webhooks",
        "get_endpoint",
    ),
    (
        "updateWebhookEndpoint",
        "PATCH",
        "/v1/webhook-endpoints/{endpointId}",
        "webhooks",
        "update_endpoint",
    ),
    (
        "rotateWebhookEndpointSecret",
        "POST",
        "/v1/webhook-endpoints/{endpointId}/rotate-secret",
        "webhooks",
        "rotate_secret",
    ),
    (
        "pingWebhookEndpoint",
        "POST",
        "/v1/webhook-endpoints/{endpointId}/ping",
        "webhooks",
        "ping",
    ),
    (
        "listWebhookDeliveries",
        "GET",
        "/v1/webhook-endpoints/{endpointId}/deliveries",
        "webhooks",
        "list_deliveries",
    ),
    (
        "replayWebhookDelivery",
        "POST",
        "/v1/webhook-deliveries/{deliveryId}/replay",
        "webhooks",
        "replay_delivery",
    ),
    ("getLiveness", "GET", "/healthz", "health", "live"),
    ("getReadiness", "GET", "/readyz", "health", "ready"),
)

# POSTs the API does not deduplicate by Idempotency-Key: a second one does the work again (a
# second rotation, ping or replay), so they are retried only when the request never left.
NOT_IDEMPOTENT: Final = frozenset(
    {"rotateWebhookEndpointSecret", "pingWebhookEndpoint", "replayWebhookDelivery"}
)
