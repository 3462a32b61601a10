"""The API's resources as frozen dataclasses: snake_case attributes, times as aware UTC
datetimes, lists as tuples. Each is parsed from its wire body by `from_wire`; fields the
client does not know yet are ignored, so a newer server does not break an older client.

`request_id` is the `X-Request-Id` of the answer the object came from (None when it came
from somewhere else, such as an item of a list parsed by hand)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

Wire = Mapping[str, Any]


def parse_time(value: str) -> datetime:
    """An ISO 8601 time with an offset (the API's `2026-04-18T19:22:41Z`), as an aware
    datetime; a time without an offset is refused rather than guessed."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time without an offset: {value!r}")
    return parsed


def _time_or_none(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


def _rid() -> Any:
    # Not part of equality: the same resource read twice is the same resource.
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Media:
    url: str
    type: str

    @classmethod
    def from_wire(cls, data: Wire) -> Media:
        return cls(url=data["url"], type=data["type"])


@dataclass(frozen=True, kw_only=True)
class Approval:
    """The decision content needed under its project's policy."""

    status: str  # pending | approved | rejected
    decided_at: datetime | None
    auto: bool  # approved by the policy's autoApproveAfter, not a caller
    reason: str | None

    @classmethod
    def from_wire(cls, data: Wire) -> Approval:
        return cls(
            status=data["status"],
            decided_at=_time_or_none(data.get("decidedAt")),
            auto=bool(data.get("auto", False)),
            reason=data.get("reason"),
        )


@dataclass(frozen=True, kw_only=True)
class ContentContainer:
    id: str
    project_id: str
    status: str  # pending_approval | completed | rejected
    caption: str
    media: tuple[Media, ...]
    approval: Approval | None
    created_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> ContentContainer:
        approval = data.get("approval")
        return cls(
            id=data["id"],
            project_id=data["projectId"],
            status=data["status"],
            caption=data["caption"],
            media=tuple(Media.from_wire(m) for m in data["media"]),
            approval=Approval.from_wire(approval) if approval is not None else None,
            created_at=parse_time(data["createdAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    requires_approval: bool
    first_n_posts_blocked: int
    auto_approve_after: str | None  # an ISO 8601 duration, e.g. "PT4H"
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> ApprovalPolicy:
        return cls(
            requires_approval=data["requiresApproval"],
            first_n_posts_blocked=data["firstNPostsBlocked"],
            auto_approve_after=data.get("autoApproveAfter"),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class LastError:
    """Why a post failed: `code` (e.g. PLATFORM_ERROR), and the platform's own code."""

    code: str
    message: str
    platform_code: str | None

    @classmethod
    def from_wire(cls, data: Wire) -> LastError:
        return cls(
            code=data["code"],
            message=data.get("message", ""),
            platform_code=data.get("platformCode"),
        )


@dataclass(frozen=True, kw_only=True)
class ScheduledPost:
    id: str
    container_id: str
    social_account_id: str
    platform: str  # tiktok | instagram
    mode: str  # publish | draft
    status: str  # queued | publishing | published | draft | failed | canceled
    scheduled_for: datetime
    attempted_at: datetime | None
    published_at: datetime | None
    canceled_at: datetime | None
    external_id: str | None
    external_url: str | None
    last_error: LastError | None
    created_at: datetime
    updated_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> ScheduledPost:
        last_error = data.get("lastError")
        return cls(
            id=data["id"],
            container_id=data["containerId"],
            social_account_id=data["socialAccountId"],
            platform=data["platform"],
            mode=data["mode"],
            status=data["status"],
            scheduled_for=parse_time(data["scheduledFor"]),
            attempted_at=_time_or_none(data.get("attemptedAt")),
            published_at=_time_or_none(data.get("publishedAt")),
            canceled_at=_time_or_none(data.get("canceledAt")),
            external_id=data.get("externalId"),
            external_url=data.get("externalUrl"),
            last_error=LastError.from_wire(last_error) if last_error is not None else None,
            created_at=parse_time(data["createdAt"]),
            updated_at=parse_time(data["updatedAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class CanceledPost:
    """The answer of a cancel that won: the post never reaches the platform.

    `recovered` is true when this call's first answer was lost (a timeout, a dropped
    connection, a 503) and its retry was told `409 CONFLICT` with `details.status`
    "canceled": the post is canceled, most likely by this very call. The API's 409 carries no
    time, so `canceled_at` is then None (`get_scheduled_post` has it)."""

    id: str
    status: Literal["canceled"]
    canceled_at: datetime | None
    recovered: bool = False
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> CanceledPost:
        if data["status"] != "canceled":
            raise ValueError(f"a cancel answered status {data['status']!r}")
        return cls(
            id=data["id"],
            status="canceled",
            canceled_at=parse_time(data["canceledAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class RescheduledPost:
    id: str
    status: str  # queued
    scheduled_for: datetime
    updated_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> RescheduledPost:
        return cls(
            id=data["id"],
            status=data["status"],
            scheduled_for=parse_time(data["scheduledFor"]),
            updated_at=parse_time(data["updatedAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class IntentTarget:
    social_account_id: str
    mode: str
    scheduled_post_id: str | None
    caption_override: str | None
    first_comment_override: str | None

    @classmethod
    def from_wire(cls, data: Wire) -> IntentTarget:
        return cls(
            social_account_id=data["socialAccountId"],
            mode=data.get("mode", "publish"),
            scheduled_post_id=data.get("scheduledPostId"),
            caption_override=data.get("captionOverride"),
            first_comment_override=data.get("firstCommentOverride"),
        )


@dataclass(frozen=True, kw_only=True)
class ScheduleIntent:
    """A schedule of content awaiting approval, saved until the decision."""

    id: str
    container_id: str
    status: str  # blocked | promoted | failed | rejected | canceled
    scheduled_for: datetime
    targets: tuple[IntentTarget, ...]
    scheduled_post_ids: tuple[str, ...]  # its posts, once promoted
    last_error: Mapping[str, Any] | None  # {code, message, details} of a failed promotion
    created_at: datetime
    updated_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> ScheduleIntent:
        return cls(
            id=data["id"],
            container_id=data["containerId"],
            status=data["status"],
            scheduled_for=parse_time(data["scheduledFor"]),
            targets=tuple(IntentTarget.from_wire(t) for t in data["targets"]),
            scheduled_post_ids=tuple(data.get("scheduledPostIds") or ()),
            last_error=data.get("lastError"),
            created_at=parse_time(data["createdAt"]),
            updated_at=parse_time(data["updatedAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class ScheduledPosts:
    """A schedule or publish-now that made its posts (`201`): one per target, in order."""

    items: tuple[ScheduledPost, ...]
    request_id: str | None = _rid()
    blocked: Literal[False] = False

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> ScheduledPosts:
        return cls(
            items=tuple(ScheduledPost.from_wire(p, request_id) for p in data["items"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class BlockedOnApproval:
    """A schedule of content awaiting approval (`202`): saved as `intent`, whose posts the
    content's approval makes."""

    container_id: str
    intent: ScheduleIntent
    gate_status: str = "blocked_on_approval"
    request_id: str | None = _rid()
    blocked: Literal[True] = True

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> BlockedOnApproval:
        return cls(
            container_id=data["containerId"],
            intent=ScheduleIntent.from_wire(data["intent"], request_id),
            gate_status=data["gateStatus"],
            request_id=request_id,
        )


# What schedule answers: the posts, or the saved intent (`result.blocked` tells which).
ScheduleResult = ScheduledPosts | BlockedOnApproval


@dataclass(frozen=True, kw_only=True)
class SocialAccount:
    id: str
    project_id: str
    platform: str
    handle: str
    status: str  # connected | reauth_required | disconnected
    status_reason: str | None
    connected_at: datetime
    token_expires_at: datetime | None
    avatar_url: str | None
    created_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> SocialAccount:
        return cls(
            id=data["id"],
            project_id=data["projectId"],
            platform=data["platform"],
            handle=data["handle"],
            status=data["status"],
            status_reason=data.get("statusReason"),
            connected_at=parse_time(data["connectedAt"]),
            token_expires_at=_time_or_none(data.get("tokenExpiresAt")),
            avatar_url=data.get("avatarUrl"),
            created_at=parse_time(data["createdAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class WebhookEndpoint:
    id: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    status: str  # enabled | disabled | auto_paused
    consecutive_failures: int
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def _fields(cls, data: Wire) -> dict[str, Any]:
        return {
            "id": data["id"],
            "url": data["url"],
            "description": data.get("description"),
            "event_types": tuple(data["eventTypes"]),
            "status": data["status"],
            "consecutive_failures": data.get("consecutiveFailures", 0),
            "previous_secret_expires_at": _time_or_none(data.get("previousSecretExpiresAt")),
            "created_at": parse_time(data["createdAt"]),
            "updated_at": parse_time(data["updatedAt"]),
        }

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> WebhookEndpoint:
        return cls(**cls._fields(data), request_id=request_id)


@dataclass(frozen=True, kw_only=True)
class WebhookEndpointWithSecret(WebhookEndpoint):
    """An endpoint as registration and rotation answer it: with its signing secret, shown
    this once."""

    secret: str = field(repr=False)

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> WebhookEndpointWithSecret:
        return cls(**cls._fields(data), secret=data["secret"], request_id=request_id)


@dataclass(frozen=True, kw_only=True)
class WebhookAttempt:
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None

    @classmethod
    def from_wire(cls, data: Wire) -> WebhookAttempt:
        return cls(
            number=data["number"],
            started_at=parse_time(data["startedAt"]),
            duration_ms=data["durationMs"],
            status_code=data.get("statusCode"),
            error=data.get("error"),
        )


@dataclass(frozen=True, kw_only=True)
class WebhookDelivery:
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    replay_of: str | None
    status: str  # pending | succeeded | failed | abandoned
    attempts: tuple[WebhookAttempt, ...]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None) -> WebhookDelivery:
        return cls(
            id=data["id"],
            endpoint_id=data["endpointId"],
            event_id=data["eventId"],
            event_type=data["eventType"],
            replay_of=data.get("replayOf"),
            status=data["status"],
            attempts=tuple(WebhookAttempt.from_wire(a) for a in data.get("attempts") or ()),
            next_attempt_at=_time_or_none(data.get("nextAttemptAt")),
            delivered_at=_time_or_none(data.get("deliveredAt")),
            created_at=parse_time(data["createdAt"]),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    """One page of a list; `next_cursor` is None on the last one."""

    items: tuple[T, ...]
    next_cursor: str | None
    request_id: str | None = _rid()

    @classmethod
    def from_wire(
        cls, data: Wire, item: Callable[[Wire, str | None], T], request_id: str | None = None
    ) -> Page[T]:
        return cls(
            items=tuple(item(i, request_id) for i in data["items"]),
            next_cursor=data.get("nextCursor"),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class Health:
    """`/healthz` or `/readyz`: `ok` is true when the answer was 200; `checks` names each
    dependency's state (readiness only)."""

    ok: bool
    status: str
    checks: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = _rid()

    @classmethod
    def from_wire(cls, data: Wire, request_id: str | None = None, *, ok: bool = True) -> Health:
        return cls(
            ok=ok,
            status=data.get("status", "ok" if ok else "unavailable"),
            checks=dict(data.get("checks") or {}),
            request_id=request_id,
        )


@dataclass(frozen=True, kw_only=True)
class WebhookEvent:
    """A webhook delivery's body, `{id, type, createdAt, data}` (and `replayOf` for a
    replay). `id` is the same on every retry of one delivery: deduplicate on it."""

    id: str
    type: str
    created_at: datetime
    data: Mapping[str, Any]
    replay_of: str | None = None

    @classmethod
    def from_wire(cls, data: Wire) -> WebhookEvent:
        return cls(
            id=data["id"],
            type=data["type"],
            created_at=parse_time(data["createdAt"]),
            data=dict(data.get("data") or {}),
            replay_of=data.get("replayOf"),
        )
