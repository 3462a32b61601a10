"""Wire shapes: request bodies (strict) and response bodies, camelCase on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)
from pydantic.alias_generators import to_camel

from shared.events import DELIVERABLE
from shared.kit.clock import ceil_second, parse_duration
from shared.kit.netcheck import is_public_host
from shared.kit.settings import get_settings


def storable(value: str) -> str:
    """`value` if PostgreSQL can store it as text; a validation error otherwise.

    PostgreSQL text cannot hold U+0000, and a lone surrogate (legal in JSON's `\\ud800`
    escape) has no UTF-8 encoding: either would fail in the database as a 500."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


# Every string the API accepts and may store or query with.
Text = Annotated[str, AfterValidator(storable)]


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MediaIn(Wire):
    url: Annotated[Text, StringConstraints(max_length=2048)]
    type: Literal["video", "image"] | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.lower().startswith("https://") or len(value) <= len("https://"):
            raise ValueError("media url must be an https:// URL")
        if get_settings().environment == "production" and not is_public_host(value):
            raise ValueError("media url must point at a public host")
        return value


class ContentUploadIn(Wire):
    caption: Annotated[Text, StringConstraints(min_length=1, max_length=2200)]
    media: Annotated[list[MediaIn], Field(min_length=1, max_length=10)]


class MediaOut(BaseModel):
    url: str
    type: str


class ApprovalOut(BaseModel):
    """The approval a container needed under its project's policy, and its decision."""

    status: Literal["pending", "approved", "rejected"]
    decidedAt: str | None
    # True when the policy's `autoApproveAfter` approved it, not a caller.
    auto: bool
    reason: str | None


class ContainerOut(BaseModel):
    id: str
    projectId: str
    status: Literal["pending_approval", "completed", "rejected"]
    caption: str
    media: list[MediaOut]
    # None for content its project's policy never held for approval.
    approval: ApprovalOut | None
    createdAt: str


def _duration(value: str) -> str:
    delay = parse_duration(value)
    if not MIN_AUTO_APPROVE <= delay <= MAX_AUTO_APPROVE:
        raise ValueError("must be between PT1S and P90D")
    return value


MIN_AUTO_APPROVE: Final = timedelta(seconds=1)
MAX_AUTO_APPROVE: Final = timedelta(days=90)
Duration = Annotated[
    Text,
    StringConstraints(max_length=40),
    AfterValidator(_duration),
    Field(description="An ISO 8601 duration, PT1S..P90D: `PT2H`, `P1D`, `P1DT12H`, `P2W`."),
]


class ApprovalPolicyIn(Wire):
    requires_approval: StrictBool = False
    first_n_posts_blocked: Annotated[StrictInt, Field(ge=0, le=50)] = 0
    auto_approve_after: Duration | None = None


class ApprovalPolicyOut(BaseModel):
    requiresApproval: bool
    firstNPostsBlocked: int
    autoApproveAfter: str | None


class DecisionIn(Wire):
    reason: Annotated[Text, StringConstraints(max_length=1024)] | None = None


class TargetIn(Wire):
    social_account_id: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    mode: Literal["publish", "draft"] = "publish"
    scheduled_post_id: Annotated[Text, StringConstraints(max_length=64)] | None = None
    caption_override: (
        Annotated[
            Text,
            StringConstraints(max_length=4000),
            Field(
                description="Up to 4000 characters on the wire; the target's platform limit "
                "(2200 for TikTok and Instagram) is a 422 at schedule time."
            ),
        ]
        | None
    ) = None
    first_comment_override: Annotated[Text, StringConstraints(max_length=4000)] | None = None


def _as_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
        # Posts are due on whole seconds, rounded up: 9999-12-31T23:59:59.5Z has no such second.
        ceil_second(utc)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        raise ValueError("must be a time representable in UTC, to the second") from exc
    return utc


# An aware time, normalised to UTC (never a 500 for an offset that overflows the year 9999).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]

Targets = Annotated[list[TargetIn], Field(min_length=1, max_length=50)]


class ScheduleIn(Wire):
    scheduled_for: UtcDatetime
    targets: Targets


class PublishIn(Wire):
    targets: Targets


class RescheduleIn(Wire):
    scheduled_for: UtcDatetime


class CancelIn(Wire):
    reason: Annotated[Text, StringConstraints(max_length=1024)] | None = None


class IntentTargetOut(BaseModel):
    socialAccountId: str
    mode: Literal["publish", "draft"]
    scheduledPostId: str | None
    captionOverride: str | None
    firstCommentOverride: str | None


class ScheduleIntentOut(BaseModel):
    """A schedule of content awaiting approval, saved until the decision."""

    id: str
    containerId: str
    status: Literal["blocked", "promoted", "canceled", "rejected", "failed"]
    scheduledFor: str
    targets: list[IntentTargetOut]
    # The posts it became once approved (`promoted`).
    scheduledPostIds: list[str]
    # Why an approved intent made no post (`failed`): the schedule's error, as it would be.
    lastError: dict[str, Any] | None
    createdAt: str
    updatedAt: str


class ScheduleIntentList(BaseModel):
    items: list[ScheduleIntentOut]
    nextCursor: str | None


class BlockedOnApproval(BaseModel):
    """202 of a schedule of content awaiting approval: the intent saved."""

    gateStatus: Literal["blocked_on_approval"]
    containerId: str
    intent: ScheduleIntentOut


class LastError(BaseModel):
    code: str
    message: str
    platformCode: str | None


class ScheduledPostOut(BaseModel):
    id: str
    containerId: str
    socialAccountId: str
    platform: Literal["tiktok", "instagram"]
    mode: Literal["publish", "draft"]
    status: Literal["queued", "publishing", "published", "draft", "failed", "canceled"]
    scheduledFor: str
    attemptedAt: str | None
    publishedAt: str | None
    canceledAt: str | None
    externalId: str | None
    externalUrl: str | None
    lastError: LastError | None
    createdAt: str
    updatedAt: str


class ScheduledPostList(BaseModel):
    items: list[ScheduledPostOut]
    nextCursor: str | None


class ScheduledPostsCreated(BaseModel):
    items: list[ScheduledPostOut]


class CanceledOut(BaseModel):
    id: str
    status: Literal["canceled"]
    canceledAt: str


class RescheduledOut(BaseModel):
    id: str
    status: Literal["queued"]
    scheduledFor: str
    updatedAt: str


AccountStatusName = Literal["connected", "reauth_required", "disconnected"]


class SocialAccountOut(BaseModel):
    id: str
    projectId: str
    platform: Literal["tiktok", "instagram"]
    handle: str
    status: AccountStatusName
    statusReason: str | None
    connectedAt: str
    tokenExpiresAt: str | None
    avatarUrl: str | None
    createdAt: str


class SocialAccountList(BaseModel):
    items: list[SocialAccountOut]
    nextCursor: str | None


# --- webhooks --------------------------------------------------------------------------------

EventTypeName = Literal[
    "post.scheduled",
    "post.published",
    "post.failed",
    "post.canceled",
    "content.approved",
    "content.rejected",
    "social_account.connected",
    "social_account.needs_reauth",
    "social_account.revoked",
]
if set(get_args(EventTypeName)) != {t.value for t in DELIVERABLE}:
    raise AssertionError("EventTypeName and shared.events.DELIVERABLE disagree")
EventTypes = Annotated[list[EventTypeName], Field(min_length=1, max_length=20)]
WebhookUrl = Annotated[Text, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[Text, StringConstraints(max_length=500)]


class WebhookEndpointIn(Wire):
    url: WebhookUrl
    event_types: EventTypes
    description: Description | None = None


class WebhookEndpointPatch(Wire):
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    # "enabled" (again, after a pause too) or "disabled"; "auto_paused" is the system's.
    status: Literal["enabled", "disabled"] | None = None


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    description: str | None
    eventTypes: list[str]
    status: Literal["enabled", "disabled", "auto_paused"]
    consecutiveFailures: int
    previousSecretExpiresAt: str | None
    createdAt: str
    updatedAt: str


class WebhookEndpointWithSecret(WebhookEndpointOut):
    # Shown once: at registration and at each rotation.
    secret: str


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointOut]
    nextCursor: str | None


class WebhookAttemptOut(BaseModel):
    number: int
    startedAt: str
    durationMs: int
    statusCode: int | None
    error: str | None


class WebhookDeliveryOut(BaseModel):
    id: str
    endpointId: str
    eventId: str
    eventType: str
    replayOf: str | None
    status: Literal["pending", "succeeded", "failed", "abandoned"]
    attempts: list[WebhookAttemptOut]
    nextAttemptAt: str | None
    deliveredAt: str | None
    createdAt: str


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryOut]
    nextCursor: str | None
