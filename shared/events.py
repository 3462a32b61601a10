"""The event log: one append-only row per transition, written by the function that makes the
transition, in its transaction (the transactional outbox). A change that rolls back leaves no
event; a committed change always has one. The audit trail (who asked, in which request, why)
is on the same rows, and the webhooks, the operator's timeline of a post and the chaos
checker's audit check all read them.

Event types are the webhooks' names (`post.published`, …); the transitions a caller never
subscribes to (`post.claimed`, `post.upload_started`, …) are in the log for the timeline.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

from shared.kit.clock import iso
from shared.kit.db import driver_connection
from shared.models import Event, ScheduledPost, SocialAccount

# Crockford's base32: event ids sort by time as text, and read unambiguously aloud.
_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
EVENT_PREFIX: Final = "evt"


def new_event_id() -> str:
    """`evt_` and 26 characters: 48 bits of milliseconds, then 80 random bits (a ULID)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{EVENT_PREFIX}_{''.join(reversed(chars))}"


class EventType(StrEnum):
    # A post's life. A draft that reached the creator's inbox is `post.published` with
    # status `draft`: the platform has it, as for a published post.
    POST_SCHEDULED = "post.scheduled"
    POST_RESCHEDULED = "post.rescheduled"
    POST_CLAIMED = "post.claimed"
    POST_UPLOAD_STARTED = "post.upload_started"
    POST_HANDLE_SAVED = "post.handle_saved"
    POST_REQUEUED = "post.requeued"
    POST_RECONCILING = "post.reconciling"
    # The platform was down for every try; the post waits for it (`retryAt`) instead of failing.
    POST_WAITING_FOR_PLATFORM = "post.waiting_for_platform"
    POST_PUBLISHED = "post.published"
    POST_FAILED = "post.failed"
    POST_CANCELED = "post.canceled"
    # An account's.
    ACCOUNT_CONNECTED = "social_account.connected"
    ACCOUNT_NEEDS_REAUTH = "social_account.needs_reauth"
    ACCOUNT_REVOKED = "social_account.revoked"
    # Content under a project's approval policy, and the schedules saved while it waits.
    CONTENT_APPROVED = "content.approved"
    CONTENT_REJECTED = "content.rejected"
    APPROVAL_POLICY_UPDATED = "project.approval_policy_updated"
    INTENT_SAVED = "schedule_intent.saved"
    INTENT_PROMOTED = "schedule_intent.promoted"
    INTENT_CANCELED = "schedule_intent.canceled"
    INTENT_REJECTED = "schedule_intent.rejected"
    INTENT_FAILED = "schedule_intent.failed"
    # Sent on demand to one endpoint (`POST /v1/webhook-endpoints/:id/ping`), never subscribed.
    TEST_PING = "test.ping"


# What a webhook endpoint may subscribe to (API.md's list, as the product emits them).
DELIVERABLE: Final = frozenset(
    {
        EventType.POST_SCHEDULED,
        EventType.POST_PUBLISHED,
        EventType.POST_FAILED,
        EventType.POST_CANCELED,
        EventType.CONTENT_APPROVED,
        EventType.CONTENT_REJECTED,
        EventType.ACCOUNT_CONNECTED,
        EventType.ACCOUNT_NEEDS_REAUTH,
        EventType.ACCOUNT_REVOKED,
    }
)


@dataclass(frozen=True)
class Actor:
    """Who asked: the API key and request (None for the system's own transitions)."""

    organization_id: str
    key_id: str | None
    request_id: str | None


def post_data(post: ScheduledPost, **more: Any) -> dict[str, Any]:
    """A `post.*` event's data: the post as it is after the transition (API.md's payload),
    and whatever the transition adds (a fencing token, an owner, a reason)."""
    data: dict[str, Any] = {
        "scheduledPostId": post.public_id,
        "containerId": post.container_id,
        "socialAccountId": post.social_account_id,
        "platform": post.platform,
        "status": post.status,
        "scheduledFor": iso(post.scheduled_for),
    }
    if post.external_id is not None:
        data["externalId"] = post.external_id
    if post.external_url is not None:
        data["externalUrl"] = post.external_url
    if post.last_error is not None:
        data["lastError"] = post.last_error
    data.update({k: v for k, v in more.items() if v is not None})
    return data


@dataclass(frozen=True)
class Subject:
    """What an event is about: a post or an account, in its organization."""

    organization_id: str
    type: str
    id: str


def append(
    session: Session,
    type_: EventType,
    subject: Subject,
    data: dict[str, Any],
    actor: Actor | None = None,
    reason: str | None = None,
) -> Event:
    """Add one event to the session's transaction: it commits, or rolls back, with the change
    it records, and so do its webhook deliveries.

    One statement: the INSERT, and for a deliverable type the enabled endpoints of the
    organization that take it, read in its RETURNING (no second round trip, no ORM load on
    every transition; an organization without endpoints pays nothing more)."""
    values: dict[str, Any] = {
        "public_id": new_event_id(),
        "organization_id": subject.organization_id,
        "type": type_.value,
        "subject_type": subject.type,
        "subject_id": subject.id,
        "actor_key_id": actor.key_id if actor else None,
        "request_id": actor.request_id if actor else None,
        "reason": reason,
        "data": data,
    }
    deliverable = type_ in DELIVERABLE
    # On the session's own connection, after what it has pending (the change this records,
    # the organization a first event may belong to).
    session.flush()
    with driver_connection(session).cursor() as cursor:
        row = cursor.execute(
            _INSERT_DELIVERABLE if deliverable else _INSERT, {**values, "data": Jsonb(data)}
        ).fetchone()
    assert row is not None
    event = Event(id=row[0], created_at=row[1], **values)
    if deliverable and row[2]:
        # Imported here: deliveries build on this module.
        from shared.webhooks.deliveries import fan_out

        fan_out(session, event, list(row[2]))
    return event


# Written once: every transition appends one.
_INSERT: Final = (
    b"INSERT INTO events (public_id, organization_id, type, subject_type, subject_id,"
    b" actor_key_id, request_id, reason, data) VALUES (%(public_id)s, %(organization_id)s,"
    b" %(type)s, %(subject_type)s, %(subject_id)s, %(actor_key_id)s, %(request_id)s,"
    b" %(reason)s, %(data)s) RETURNING id, created_at"
)
# ... and for a type webhooks take, also the ids of the organization's enabled endpoints
# that take it (NULL for none).
_INSERT_DELIVERABLE: Final = (
    _INSERT + b", (SELECT array_agg(w.id) FROM webhook_endpoints w"
    b" WHERE w.organization_id = %(organization_id)s AND w.status = 'enabled'"
    b" AND w.event_types @> ARRAY[CAST(%(type)s AS varchar)])"
)


def post_event(
    session: Session,
    type_: EventType,
    post: ScheduledPost,
    *,
    actor: Actor | None = None,
    reason: str | None = None,
    **more: Any,
) -> Event:
    """A post's transition, with its payload."""
    subject = Subject(post.organization_id, "scheduled_post", post.id)
    return append(session, type_, subject, post_data(post, **more), actor, reason)


def account_event(
    session: Session,
    type_: EventType,
    account: SocialAccount,
    *,
    actor: Actor | None = None,
    reason: str | None = None,
) -> Event:
    """An account's event, with its payload."""
    data = {
        "socialAccountId": account.id,
        "platform": account.platform,
        "handle": account.handle,
        "status": account.status,
        "tokenExpiresAt": iso(account.token_expires_at),
    }
    subject = Subject(account.organization_id, "social_account", account.id)
    return append(session, type_, subject, data, actor, reason)
