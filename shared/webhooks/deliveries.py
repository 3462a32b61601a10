"""Deliveries: one per (event, endpoint), written in the event's own transaction (the outbox),
sent by a task after commit, retried on the schedule, re-armed when a message is lost.

The lifecycle, every step under the delivery's row lock with its token:
- `fan_out` (from `shared.events.append`): a `pending` delivery for each enabled endpoint
  that takes the event's type, due now, its task sent after commit.
- `begin_attempt`: the task's token still current, the endpoint enabled: `attempts + 1`, the
  token taken by the attempt (+1: a copy of the task finds it moved on), and
  `next_attempt_at` pushed past the attempt's timeout (a lease: the re-arm leaves a running
  attempt alone). The POST happens with no transaction open.
- `finish_attempt`: the attempt's row, then `succeeded`; or `failed` (a 4xx other than 408
  and 429: the receiver means it); or the next attempt due on the schedule under a new
  token; or `abandoned` once the schedule has run out. The endpoint's run of failures, and
  `auto_paused` when it reaches WEBHOOK_PAUSE_AFTER.
- `rearm_lost` (the dispatcher's tick): a pending delivery of an enabled endpoint whose
  attempt is `REDISPATCH_GRACE_S` overdue gets a copy of its task now, under its current
  token (shared/kit/redispatch.py).

A receiver may see a delivery twice (a worker that died after the POST, before recording
it): it dedupes on `X-Layers-Event-Id`, which every attempt of a delivery carries.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Final

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from shared.events import EventType, Subject, append, new_event_id
from shared.kit import ids, metrics
from shared.kit.clock import iso, utcnow
from shared.kit.db import Tx, after_commit, run_in_transaction
from shared.kit.errors import Conflict, NotFound
from shared.kit.redispatch import lost_backoff
from shared.kit.settings import Settings, get_settings
from shared.models import (
    DeliveryStatus,
    EndpointStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from shared.webhooks import sender
from shared.webhooks.endpoints import get_endpoint, signing_secrets
from shared.webhooks.signing import signature

log = logging.getLogger("publisher.webhooks")

# An attempt's lease beyond its timeout, before the re-arm may take it for lost.
ATTEMPT_MARGIN: Final = timedelta(seconds=5)
# 4xx answers that mean "later", not "never".
RETRYABLE_4XX: Final = frozenset({408, 429})


@dataclass(frozen=True)
class DeliveryJob:
    """A delivery task to send after commit."""

    delivery_id: str
    token: int
    task_id: str
    eta: datetime


def _send_job(job: DeliveryJob) -> None:
    from shared.publishing.tasks import send_delivery

    send_delivery(job)


def _arm(
    delivery: WebhookDelivery, eta: datetime, now: datetime, *, new_token: bool = True
) -> DeliveryJob:
    if new_token:
        delivery.token += 1
    delivery.task_id = str(uuid.uuid4())
    delivery.next_attempt_at = eta
    delivery.updated_at = now
    return DeliveryJob(delivery.id, delivery.token, delivery.task_id, eta)


def _new_delivery(
    session: Session,
    endpoint_id: str,
    event: Event,
    now: datetime,
    *,
    event_public_id: str | None = None,
    replay_of: str | None = None,
) -> WebhookDelivery:
    """A pending delivery due now, its task sent once the transaction commits."""
    delivery = WebhookDelivery(
        id=ids.new_id(ids.WEBHOOK_DELIVERY),
        organization_id=event.organization_id,
        endpoint_id=endpoint_id,
        event_id=event.id,
        event_public_id=event_public_id or event.public_id,
        replay_of=replay_of,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        token=0,
        created_at=now,
    )
    job = _arm(delivery, now, now)
    session.add(delivery)
    after_commit(session, partial(_send_job, job))
    return delivery


def fan_out(session: Session, event: Event, endpoint_ids: list[str]) -> None:
    """A delivery of this (just inserted) event for each endpoint that takes it, in the
    event's transaction."""
    now = utcnow()
    for endpoint_id in endpoint_ids:
        _new_delivery(session, endpoint_id, event, now)


def body_of(delivery: WebhookDelivery, event: Event) -> bytes:
    """API.md's body, `{id, type, createdAt, data}` (and `replayOf` for a replay): the same
    bytes on every attempt."""
    body: dict[str, Any] = {
        "id": delivery.event_public_id,
        "type": event.type,
        "createdAt": iso(event.created_at),
        "data": event.data or {},
    }
    if delivery.replay_of is not None:
        body["replayOf"] = delivery.replay_of
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Attempt:
    """One attempt, ready to POST: where, what, signed how."""

    delivery_id: str
    token: int
    number: int
    url: str
    body: bytes
    headers: dict[str, str]
    event_created_at: datetime


def _lock(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
    ).one_or_none()


class Skip(StrEnum):
    STALE = "stale"  # the token moved on, or the delivery is done
    PAUSED = "paused"  # the endpoint is disabled or auto-paused: re-enabling re-arms it


def begin_attempt(
    session: Session, delivery_id: str, token: int, *, settings: Settings, now: datetime
) -> Attempt | Skip:
    """Take the next attempt of a delivery for this task, or say why not."""
    delivery = _lock(session, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.PENDING or delivery.token != token:
        return Skip.STALE
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    assert endpoint is not None
    if endpoint.status != EndpointStatus.ENABLED:
        return Skip.PAUSED
    event = session.get(Event, delivery.event_id)
    assert event is not None
    delivery.attempts += 1
    # The attempt takes the token: any copy of this task still queued (re-sent by
    # `rearm_lost`) finds it moved on, and the attempt's own record carries the new one.
    delivery.token += 1
    delivery.rearms = 0  # a task of it ran: a later give-up waits one grace again
    delivery.next_attempt_at = now + timedelta(seconds=settings.webhook_timeout_s) + ATTEMPT_MARGIN
    delivery.updated_at = now
    body = body_of(delivery, event)
    signed = signature(signing_secrets(endpoint, settings, now), body, int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "X-Layers-Event-Id": delivery.event_public_id,
        "X-Layers-Signature": signed,
    }
    return Attempt(
        delivery.id,
        delivery.token,
        delivery.attempts,
        endpoint.url,
        body,
        headers,
        event.created_at,
    )


def finish_attempt(
    session: Session,
    attempt: Attempt,
    answer: sender.Answer,
    *,
    started: datetime,
    settings: Settings,
    now: datetime,
) -> str:
    """Record the attempt and decide what comes next; the result, for the metrics."""
    delivery = _lock(session, attempt.delivery_id)
    if delivery is None:
        return "stale"
    session.add(
        WebhookAttempt(
            delivery_id=attempt.delivery_id,
            number=attempt.number,
            started_at=started,
            duration_ms=answer.duration_ms,
            status_code=answer.status_code,
            error=answer.error,
        )
    )
    delivery.last_status_code = answer.status_code
    delivery.last_error = answer.error
    delivery.updated_at = now
    if delivery.token != attempt.token or delivery.status != DeliveryStatus.PENDING:
        return "stale"  # re-armed meanwhile: the newer task decides
    endpoint = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id).with_for_update()
    ).one()
    if answer.ok:
        delivery.status = DeliveryStatus.SUCCEEDED.value
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.consecutive_failures = 0
        metrics.WEBHOOK_LAG.observe(max(0.0, (now - attempt.event_created_at).total_seconds()))
        return "succeeded"
    endpoint.consecutive_failures += 1
    if (
        endpoint.consecutive_failures >= settings.webhook_pause_after
        and endpoint.status == EndpointStatus.ENABLED
    ):
        endpoint.status = EndpointStatus.AUTO_PAUSED.value
        endpoint.updated_at = now
        log.warning(
            "webhook endpoint auto-paused after %d failed attempts in a row",
            endpoint.consecutive_failures,
            extra={"endpointId": endpoint.id},
        )
    code = answer.status_code
    if code is not None and 400 <= code < 500 and code not in RETRYABLE_4XX:
        delivery.status = DeliveryStatus.FAILED.value
        delivery.next_attempt_at = None
        return "failed"
    delays = settings.webhook_delays
    if attempt.number >= len(delays):
        delivery.status = DeliveryStatus.ABANDONED.value
        delivery.next_attempt_at = None
        return "abandoned"
    job = _arm(delivery, now + timedelta(seconds=delays[attempt.number]), now)
    after_commit(session, partial(_send_job, job))
    return "retry"


def run_delivery(delivery_id: str, token: int, *, settings: Settings | None = None) -> str:
    """The delivery task: one attempt, its outcome recorded. Holds no transaction while the
    receiver answers."""
    settings = settings or get_settings()
    started = utcnow()
    taken = run_in_transaction(
        lambda tx: begin_attempt(tx.session, delivery_id, token, settings=settings, now=started)
    )
    if isinstance(taken, Skip):
        metrics.WEBHOOK_ATTEMPTS.labels(taken.value).inc()
        return taken.value
    answer = sender.post(
        taken.url,
        taken.body,
        taken.headers,
        timeout=settings.webhook_timeout_s,
        public_only=settings.webhooks_public_only,
    )

    def record(tx: Tx) -> str:
        return finish_attempt(
            tx.session, taken, answer, started=started, settings=settings, now=utcnow()
        )

    result = run_in_transaction(record)
    metrics.WEBHOOK_ATTEMPTS.labels("refused" if answer.refused else result).inc()
    log.info(
        "webhook attempt %s",
        result,
        extra={
            "deliveryId": delivery_id,
            "attempt": taken.number,
            "statusCode": answer.status_code,
            "error": answer.error,
            "durationMs": answer.duration_ms,
        },
    )
    return result


def rearm_lost(
    session: Session, *, now: datetime, grace: timedelta, limit: int
) -> list[DeliveryJob]:
    """Pending deliveries of enabled endpoints whose attempt is `grace` overdue (its message
    was lost, or its worker died mid-attempt): a new token and a task due now. As with a
    post's lost task, each re-arm of one delivery waits twice as long as the last."""
    rows = session.scalars(
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at < now - lost_backoff(grace, WebhookDelivery.rearms),
            WebhookEndpoint.status == EndpointStatus.ENABLED,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()
    for delivery in rows:
        delivery.rearms += 1
    # A copy of the task, under the same token, not a replacement: a message merely waiting
    # behind a backlog stays good, and whichever copy runs first takes the attempt. With a
    # new token each re-send made the queued one stale, and under a backlog slower than the
    # grace only the newest copy, always at the back of the queue, could ever run.
    return [_arm(d, now, now, new_token=False) for d in rows]


def resume(session: Session, endpoint_id: str, now: datetime) -> int:
    """An endpoint enabled again: its waiting deliveries are due now (tasks after commit)."""
    rows = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for delivery in rows:
        after_commit(session, partial(_send_job, _arm(delivery, now, now)))
    return len(rows)


def get_delivery(session: Session, organization_id: str, delivery_id: str) -> WebhookDelivery:
    """The delivery with this id in this organization, or NotFound."""
    if ids.is_valid(delivery_id, ids.WEBHOOK_DELIVERY):
        found = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.organization_id == organization_id,
            )
        ).one_or_none()
        if found is not None:
            return found
    raise NotFound("Webhook delivery not found")


def replay(
    session: Session, organization_id: str, delivery_id: str, *, now: datetime
) -> WebhookDelivery:
    """The same event again to the same endpoint, as a new event (a new id) with `replayOf`
    set to the original's: a receiver that deduped the first still takes it."""
    original = get_delivery(session, organization_id, delivery_id)
    endpoint = get_endpoint(session, organization_id, original.endpoint_id)
    event = session.get(Event, original.event_id)
    assert event is not None
    replay_of = original.replay_of or event.public_id
    return _new_delivery(
        session, endpoint.id, event, now, event_public_id=new_event_id(), replay_of=replay_of
    )


def ping(
    session: Session, organization_id: str, endpoint_id: str, *, now: datetime
) -> WebhookDelivery:
    """A `test.ping` event for this endpoint alone, and its delivery, due now: the way to
    check a receiver (its URL, its signature check) before real events reach it."""
    endpoint = get_endpoint(session, organization_id, endpoint_id)
    if endpoint.status != EndpointStatus.ENABLED:
        raise Conflict(
            f"The endpoint is {endpoint.status}: enable it before pinging it",
            {"status": endpoint.status},
        )
    subject = Subject(organization_id, "webhook_endpoint", endpoint.id)
    event = append(session, EventType.TEST_PING, subject, {"endpointId": endpoint.id})
    return _new_delivery(session, endpoint.id, event, now)


def deliveries_query(
    organization_id: str, endpoint_id: str, after: tuple[datetime, str] | None
) -> Select[WebhookDelivery]:
    """An endpoint's deliveries, newest first, after a keyset cursor."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.organization_id == organization_id,
        WebhookDelivery.endpoint_id == endpoint_id,
    )
    if after is not None:
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < after)
    return query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    """Each delivery's attempts, in order."""
    out: dict[str, list[WebhookAttempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number, WebhookAttempt.id)
        ):
            out[attempt.delivery_id].append(attempt)
    return out
