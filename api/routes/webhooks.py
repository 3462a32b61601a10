"""Webhook endpoints (register, list, read, update, enable and disable, rotate the secret),
their deliveries with every attempt, and replaying one: scopes `webhooks:read` and
`webhooks:write`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api import pagination
from api.deps import Principal, ReadSession, require
from api.presenters import delivery_body, endpoint_body, json_response
from api.routes.common import IdempotencyKey, errors, run_mutation
from api.schemas import (
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointPatch,
    WebhookEndpointWithSecret,
)
from shared.kit.clock import utcnow
from shared.kit.db import Tx
from shared.kit.settings import get_settings
from shared.models import Event, WebhookDelivery
from shared.webhooks import deliveries, endpoints

router = APIRouter(prefix="/v1", tags=["webhooks"])
Reader = Annotated[Principal, Depends(require("webhooks:read"))]
Writer = Annotated[Principal, Depends(require("webhooks:write"))]


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    responses=errors("IDEMPOTENCY_CONFLICT", body=True),
    operation_id="createWebhookEndpoint",
)
def register_webhook_endpoint(
    body: WebhookEndpointIn,
    request: Request,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Register an endpoint for these event types. The answer holds its signing `secret`,
    shown this once. In production the URL must be https on a public host."""

    def work(tx: Tx) -> Response:
        made = endpoints.register(
            tx.session,
            principal.organization_id,
            body.url,
            list(body.event_types),
            body.description,
            settings=get_settings(),
            now=utcnow(),
        )
        return json_response(endpoint_body(made.endpoint, made.secret), 201)

    return run_mutation(principal, idempotency_key, "POST", request.url.path, body, work)


@router.get(
    "/webhook-endpoints",
    response_model=WebhookEndpointList,
    responses=errors(),
    operation_id="listWebhookEndpoints",
)
def list_webhook_endpoints(
    session: ReadSession,
    principal: Reader,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """The organization's endpoints, oldest first; never a secret."""
    return pagination.listing(
        session,
        lambda after: endpoints.endpoints_query(principal.organization_id, after),
        cursor,
        limit,
        key=lambda e: (e.created_at, e.id),
        render=endpoint_body,
    )


@router.get(
    "/webhook-endpoints/{endpointId}",
    response_model=WebhookEndpointOut,
    responses=errors("NOT_FOUND"),
    operation_id="getWebhookEndpoint",
)
def get_webhook_endpoint(endpointId: str, session: ReadSession, principal: Reader) -> Response:
    """One endpoint."""
    return json_response(
        endpoint_body(endpoints.get_endpoint(session, principal.organization_id, endpointId))
    )


@router.patch(
    "/webhook-endpoints/{endpointId}",
    response_model=WebhookEndpointOut,
    responses=errors("NOT_FOUND", body=True),
    operation_id="updateWebhookEndpoint",
)
def update_webhook_endpoint(
    endpointId: str, body: WebhookEndpointPatch, principal: Writer
) -> Response:
    """Change the URL, the event types or the description; `status: "disabled"` stops
    deliveries (they wait), `"enabled"` starts them again, after an auto-pause too, and
    sends every waiting delivery now."""
    now = utcnow()
    enabled = None if body.status is None else body.status == "enabled"
    changes = endpoints.Changes(
        url=body.url,
        event_types=list(body.event_types) if body.event_types is not None else None,
        description=body.description,
        enabled=enabled,
    )

    def work(tx: Tx) -> Response:
        endpoint, enabled_now = endpoints.update(
            tx.session,
            principal.organization_id,
            endpointId,
            changes,
            settings=get_settings(),
            now=now,
        )
        if enabled_now:
            deliveries.resume(tx.session, endpoint.id, now)
        return json_response(endpoint_body(endpoint))

    return run_mutation(principal, None, "PATCH", f"/v1/webhook-endpoints/{endpointId}", body, work)


@router.post(
    "/webhook-endpoints/{endpointId}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    responses=errors("NOT_FOUND"),
    operation_id="rotateWebhookEndpointSecret",
)
def rotate_webhook_secret(endpointId: str, principal: Writer) -> Response:
    """A new signing secret, shown this once. For 24 h (`previousSecretExpiresAt`) every
    delivery is signed with both: a receiver verifying either keeps working."""

    def work(tx: Tx) -> Response:
        made = endpoints.rotate_secret(
            tx.session,
            principal.organization_id,
            endpointId,
            settings=get_settings(),
            now=utcnow(),
        )
        return json_response(endpoint_body(made.endpoint, made.secret))

    path = f"/v1/webhook-endpoints/{endpointId}/rotate-secret"
    return run_mutation(principal, None, "POST", path, None, work)


def _deliveries_body(session: ReadSession, rows: list[WebhookDelivery]) -> list[dict[str, object]]:
    attempts = deliveries.attempts_of(session, [d.id for d in rows])
    types = dict(
        session.query(Event.id, Event.type).filter(Event.id.in_([d.event_id for d in rows])).all()
    )
    return [delivery_body(d, types[d.event_id], attempts[d.id]) for d in rows]


@router.post(
    "/webhook-endpoints/{endpointId}/ping",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=errors("NOT_FOUND", "CONFLICT"),
    operation_id="pingWebhookEndpoint",
)
def ping_webhook_endpoint(endpointId: str, principal: Writer) -> Response:
    """Send a `test.ping` event to this endpoint now (`{"endpointId"}` as its data), signed
    like every delivery: the answer is its delivery, whose attempts the deliveries list
    shows. `409 CONFLICT` while the endpoint is disabled or paused."""

    def work(tx: Tx) -> Response:
        made = deliveries.ping(tx.session, principal.organization_id, endpointId, now=utcnow())
        return json_response(delivery_body(made, "test.ping", []), 202)

    path = f"/v1/webhook-endpoints/{endpointId}/ping"
    return run_mutation(principal, None, "POST", path, None, work)


@router.get(
    "/webhook-endpoints/{endpointId}/deliveries",
    response_model=WebhookDeliveryList,
    responses=errors("NOT_FOUND"),
    operation_id="listWebhookDeliveries",
)
def list_webhook_deliveries(
    endpointId: str,
    session: ReadSession,
    principal: Reader,
    cursor: pagination.Cursor = None,
    limit: pagination.Limit = pagination.DEFAULT_LIMIT,
) -> Response:
    """An endpoint's deliveries, newest first, each with its attempts (time, duration,
    status code or error)."""
    endpoints.get_endpoint(session, principal.organization_id, endpointId)
    rows = list(
        session.scalars(
            deliveries.deliveries_query(
                principal.organization_id, endpointId, pagination.decode(cursor)
            ).limit(limit + 1)
        )
    )
    items, next_cursor = pagination.page(rows, limit, lambda d: (d.created_at, d.id))
    return json_response({"items": _deliveries_body(session, items), "nextCursor": next_cursor})


@router.post(
    "/webhook-deliveries/{deliveryId}/replay",
    status_code=201,
    response_model=WebhookDeliveryOut,
    responses=errors("NOT_FOUND"),
    operation_id="replayWebhookDelivery",
)
def replay_webhook_delivery(deliveryId: str, principal: Writer) -> Response:
    """Send a delivery's event again to its endpoint, as a new event (a new id) whose body
    carries `replayOf`: the original event's id."""

    def work(tx: Tx) -> Response:
        made = deliveries.replay(tx.session, principal.organization_id, deliveryId, now=utcnow())
        tx.session.flush()
        event = tx.session.get(Event, made.event_id)
        assert event is not None
        return json_response(delivery_body(made, event.type, []), 201)

    path = f"/v1/webhook-deliveries/{deliveryId}/replay"
    return run_mutation(principal, None, "POST", path, None, work)
