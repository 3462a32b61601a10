"""Wire shapes: request bodies (strict) and response bodies, camelCase on the wire, and the
error envelope of each error code. Response bodies are made by api/presenters.py; their models
here document them (FastAPI never serialises through them), so a documented type such as
`Timestamp` changes no byte the API sends.

Every enum of the wire is a named alias (`TypeAliasType`): it validates as its `Literal`, and
the OpenAPI document shows it once, as a component of that name, referenced wherever it is
used. Those that mirror a model's enum are checked against it at import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, cast, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypeAliasType

from shared import models
from shared.events import DELIVERABLE
from shared.kit.clock import ceil_second, parse_duration
from shared.kit.netcheck import is_public_host
from shared.kit.settings import get_settings
from shared.tenancy import tiers
from shared.tenancy.keys import SCOPES


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


# --- the wire's enums ------------------------------------------------------------------------

Platform = TypeAliasType(
    "Platform",
    Annotated[Literal["tiktok", "instagram"], Field(description="A social platform.")],
)
Mode = TypeAliasType(
    "Mode",
    Annotated[
        Literal["publish", "draft"],
        Field(
            description="`publish`: a public post; `draft`: delivered to the account's drafts "
            "on the platform (TikTok only)."
        ),
    ],
)
PostStatus = TypeAliasType(
    "PostStatus",
    Annotated[
        Literal["queued", "publishing", "published", "draft", "failed", "canceled"],
        Field(
            description="A scheduled post's status. `queued`: waiting for its time (cancel and "
            "reschedule win); `publishing`: a worker has claimed it (cancel wins until the "
            "platform upload starts); then one of the terminal `published`, `draft` (in the "
            "account's drafts), `failed` (see `lastError`) and `canceled`."
        ),
    ],
)
AccountStatus = TypeAliasType(
    "AccountStatus",
    Annotated[
        Literal["connected", "reauth_required", "disconnected"],
        Field(
            description="A social account's status. `reauth_required`: the platform refused "
            "its token; posts to it fail until an operator connects it again."
        ),
    ],
)
ContainerStatus = TypeAliasType(
    "ContainerStatus",
    Annotated[
        Literal["pending_approval", "completed", "rejected"],
        Field(
            description="A content container's status. `completed`: ready to schedule; "
            "`pending_approval`: waiting for a decision under its project's approval policy; "
            "`rejected`: final, it is never scheduled."
        ),
    ],
)
IntentStatus = TypeAliasType(
    "IntentStatus",
    Annotated[
        Literal["blocked", "promoted", "canceled", "rejected", "failed"],
        Field(
            description="A schedule intent's status. `blocked`: waiting for its content's "
            "decision; `promoted`: approved, `scheduledPostIds` are its posts; `canceled` by "
            "the caller; `rejected` with its content; `failed`: approved, but its targets no "
            "longer schedule (`lastError`)."
        ),
    ],
)
MediaType = TypeAliasType(
    "MediaType",
    Annotated[Literal["video", "image"], Field(description="A media item's kind.")],
)
ApprovalStatus = TypeAliasType(
    "ApprovalStatus",
    Annotated[
        Literal["pending", "approved", "rejected"],
        Field(description="The decision on content its project's policy held for approval."),
    ],
)
WebhookEventType = TypeAliasType(
    "WebhookEventType",
    Annotated[
        Literal[
            "post.scheduled",
            "post.published",
            "post.failed",
            "post.canceled",
            "content.approved",
            "content.rejected",
            "social_account.connected",
            "social_account.needs_reauth",
            "social_account.revoked",
        ],
        Field(description="An event a webhook endpoint can subscribe to."),
    ],
)
WebhookEndpointStatus = TypeAliasType(
    "WebhookEndpointStatus",
    Annotated[
        Literal["enabled", "disabled", "auto_paused"],
        Field(
            description="`disabled` by the caller, `auto_paused` by the system after "
            "`WEBHOOK_PAUSE_AFTER` failed attempts in a row: deliveries wait until enabled."
        ),
    ],
)
WebhookEndpointStatusChange = TypeAliasType(
    "WebhookEndpointStatusChange",
    Annotated[
        Literal["enabled", "disabled"],
        Field(
            description="What a caller may set: `enabled` (again, after an auto-pause too) or "
            "`disabled`; `auto_paused` is the system's."
        ),
    ],
)
WebhookDeliveryStatus = TypeAliasType(
    "WebhookDeliveryStatus",
    Annotated[
        Literal["pending", "succeeded", "failed", "abandoned"],
        Field(
            description="`pending`: an attempt is due; `failed`: the receiver answered a 4xx "
            "(other than 408 and 429), not retried; `abandoned`: every retry failed."
        ),
    ],
)
PostErrorCode = TypeAliasType(
    "PostErrorCode",
    Annotated[
        Literal[
            "PLATFORM_ERROR",
            "PLATFORM_UNAVAILABLE",
            "UPLOAD_OUTCOME_UNKNOWN",
            "OPERATOR_SETTLED",
            "ATTEMPTS_EXHAUSTED",
            "PLATFORM_QUOTA_EXHAUSTED",
            "ACCOUNT_REAUTH_REQUIRED",
            "ACCOUNT_DISCONNECTED",
            "CONTAINER_NOT_READY",
        ],
        Field(
            description="Why a post failed: `PLATFORM_ERROR` the platform refused it "
            "(`platformCode` is its own code; fix it and schedule again), "
            "`PLATFORM_UNAVAILABLE` it kept failing through every retry, "
            "`UPLOAD_OUTCOME_UNKNOWN` the platform could neither confirm nor deny holding it, "
            "`OPERATOR_SETTLED` an operator settled it as failed, `ATTEMPTS_EXHAUSTED` it lost "
            "its worker too often, `PLATFORM_QUOTA_EXHAUSTED` the account's publishing quota "
            "was spent, `ACCOUNT_REAUTH_REQUIRED` the account's token no longer works, "
            "`ACCOUNT_DISCONNECTED` the account was disconnected, `CONTAINER_NOT_READY` "
            "Instagram did not finish processing the media in time."
        ),
    ],
)
Scope = TypeAliasType(
    "Scope",
    Annotated[
        Literal[
            "content:read",
            "content:write",
            "social:read",
            "publish:read",
            "publish:write",
            "webhooks:read",
            "webhooks:write",
        ],
        Field(description="A scope an endpoint demands of the key (`*` grants every one)."),
    ],
)
EndpointClass = TypeAliasType(
    "EndpointClass",
    Annotated[
        Literal["read-light", "write-light", "long-running"],
        Field(description="A rate-limit endpoint class: each has its own bucket per key."),
    ],
)
RateLimitWindow = TypeAliasType(
    "RateLimitWindow",
    Annotated[
        Literal["minute", "day"],
        Field(
            description="`minute`: the key's limit of the endpoint's class; `day`: the "
            "organization's daily write cap (UTC)."
        ),
    ],
)


def literal_values(alias: TypeAliasType) -> tuple[str, ...]:
    """The values of a named enum of the wire, in their order."""
    literal = get_args(alias.__value__)[0]
    return tuple(get_args(literal))


def _mirrors(alias: TypeAliasType, values: frozenset[str] | set[str]) -> None:
    if set(literal_values(alias)) != set(values):
        raise AssertionError(f"{alias.__name__} and the model's values disagree")


for _alias, _enum in (
    (Platform, models.Platform),
    (Mode, models.Mode),
    (PostStatus, models.PostStatus),
    (AccountStatus, models.AccountStatus),
    (ContainerStatus, models.ContainerStatus),
    (IntentStatus, models.IntentStatus),
    (WebhookEndpointStatus, models.EndpointStatus),
    (WebhookDeliveryStatus, models.DeliveryStatus),
    (EndpointClass, tiers.EndpointClass),
):
    _mirrors(_alias, {m.value for m in cast(type[StrEnum], _enum)})
_mirrors(WebhookEventType, {t.value for t in DELIVERABLE})
_mirrors(Scope, SCOPES - {"*"})

# A time the API sends: ISO 8601 in UTC with a `Z`, to the second (`2026-04-18T19:22:41Z`).
# A string on the Python side, as presenters make it; `date-time` in the document.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


# --- errors ----------------------------------------------------------------------------------
# Every 4xx and 5xx is `{"error": {code, message, requestId, details}}` (api/errors.py makes
# them). Each code has its status, its `details` and an envelope of its own, named after it
# (`ConflictErrorEnvelope`); an operation's answers list the envelopes of the codes it sends.


class NoDetails(BaseModel):
    """Nothing to add: `{}`."""


class ValidationIssue(BaseModel):
    path: str = Field(
        description="The input in wire terms: `targets[0].socialAccountId`, `limit`, "
        "`status[0]`, `Idempotency-Key`, or `body` for a body that is not a JSON object."
    )
    message: str


class ValidationDetails(BaseModel):
    issues: list[ValidationIssue]


class ForbiddenScopeDetails(BaseModel):
    requiredScope: Scope


class ContentStatusDetails(BaseModel):
    status: ContainerStatus


class ConflictDetails(BaseModel):
    status: str = Field(
        description="The object's status that forbids the change: the post's (`PostStatus`), "
        "the content's, the intent's or the webhook endpoint's."
    )
    scheduledPostIds: list[str] = Field(
        default_factory=list,
        description="On canceling a promoted schedule intent: its posts, to cancel instead.",
    )


class PlatformErrorDetails(BaseModel):
    platformCode: str = Field(
        description="The platform's own code for its refusal: Graph's `code` or "
        "`code/subcode` (e.g. `190`, an invalid or expired token), TikTok's `error.code` "
        "(e.g. `access_token_invalid`)."
    )
    socialAccountId: str = Field(description="The account the platform refuses.")
    path: str = Field(description="The target naming it, e.g. `targets[0].socialAccountId`.")


class IdempotencyConflictDetails(BaseModel):
    idempotencyKey: str


class PayloadTooLargeDetails(BaseModel):
    maxBytes: int


class RequestTimeoutDetails(BaseModel):
    timeoutSeconds: float


class RateLimitedDetails(BaseModel):
    limit: int = Field(description="Requests a minute of the class, or writes a day.")
    klass: EndpointClass = Field(alias="class")
    window: RateLimitWindow


@dataclass(frozen=True)
class ErrorKind:
    """One error code: its HTTP status, the name of its components, when it is sent, and the
    shape of its `details`."""

    code: str
    status: int  # 0: the status of the HTTP error it carries
    name: str
    summary: str
    details: type[BaseModel] = NoDetails

    @property
    def label(self) -> str:
        """`CONFLICT` (409)."""
        return f"`{self.code}` ({self.status or 'its own status'})"


ERROR_KINDS: Final = (
    ErrorKind(
        "UNAUTHENTICATED", 401, "Unauthenticated", "Missing, malformed, unknown or revoked key."
    ),
    ErrorKind(
        "FORBIDDEN_SCOPE",
        403,
        "ForbiddenScope",
        "The key lacks the endpoint's scope (`details.requiredScope`).",
        ForbiddenScopeDetails,
    ),
    ErrorKind(
        "APPROVAL_REQUIRED",
        403,
        "ApprovalRequired",
        "Publish-now of content awaiting approval; nothing is saved.",
        ContentStatusDetails,
    ),
    ErrorKind(
        "NOT_FOUND",
        404,
        "NotFound",
        "No such object in the caller's organization (a malformed id too), or no such route.",
    ),
    ErrorKind(
        "METHOD_NOT_ALLOWED",
        405,
        "MethodNotAllowed",
        "The path exists, not with this method; the `Allow` header lists those it accepts.",
    ),
    ErrorKind(
        "REQUEST_TIMEOUT",
        408,
        "RequestTimeout",
        "The request body did not arrive in full within `BODY_TIMEOUT_S`; the connection "
        "is closed.",
        RequestTimeoutDetails,
    ),
    ErrorKind(
        "CONFLICT",
        409,
        "Conflict",
        "The object's state forbids the change (`details.status`).",
        ConflictDetails,
    ),
    ErrorKind(
        "CONTENT_REJECTED",
        409,
        "ContentRejected",
        "The content's approval was refused: it is never scheduled.",
        ContentStatusDetails,
    ),
    ErrorKind(
        "PLATFORM_ERROR",
        409,
        "PlatformError",
        "Publish-now to an account whose token the platform refuses (`reauth_required`): "
        "reconnect it. Nothing is saved; `details.platformCode` is the platform's code.",
        PlatformErrorDetails,
    ),
    ErrorKind(
        "IDEMPOTENCY_CONFLICT",
        409,
        "IdempotencyConflict",
        "The `Idempotency-Key` was used with another request (another body or path).",
        IdempotencyConflictDetails,
    ),
    ErrorKind(
        "PAYLOAD_TOO_LARGE",
        413,
        "PayloadTooLarge",
        "The request body is over `MAX_BODY_BYTES`; the connection is closed.",
        PayloadTooLargeDetails,
    ),
    ErrorKind("VALIDATION", 422, "Validation", "Bad input: `details.issues`.", ValidationDetails),
    ErrorKind(
        "RATE_LIMITED",
        429,
        "RateLimited",
        "Over the key's limit of the endpoint's class, or the organization's daily write "
        "cap: `details.window` says which, `Retry-After` when to come back.",
        RateLimitedDetails,
    ),
    ErrorKind("INTERNAL", 500, "Internal", "A bug; nothing internal is in the answer."),
    ErrorKind(
        "UNAVAILABLE",
        503,
        "Unavailable",
        "A dependency (PostgreSQL) cannot be reached; retry after `Retry-After`.",
    ),
    ErrorKind(
        "HTTP_ERROR",
        0,
        "Http",
        "Any other HTTP error of the framework; no operation sends one.",
    ),
)
ERRORS: Final = {kind.code: kind for kind in ERROR_KINDS}

ErrorCode = TypeAliasType(
    "ErrorCode",
    Annotated[
        Literal[
            "UNAUTHENTICATED",
            "FORBIDDEN_SCOPE",
            "APPROVAL_REQUIRED",
            "NOT_FOUND",
            "METHOD_NOT_ALLOWED",
            "REQUEST_TIMEOUT",
            "CONFLICT",
            "CONTENT_REJECTED",
            "PLATFORM_ERROR",
            "IDEMPOTENCY_CONFLICT",
            "PAYLOAD_TOO_LARGE",
            "VALIDATION",
            "RATE_LIMITED",
            "INTERNAL",
            "UNAVAILABLE",
            "HTTP_ERROR",
        ],
        Field(
            description="Every code of the error envelope:\n\n"
            + "\n".join(f"- {k.label}: {k.summary}" for k in ERROR_KINDS)
        ),
    ],
)
if literal_values(ErrorCode) != tuple(ERRORS):
    raise AssertionError("ErrorCode and ERROR_KINDS disagree")

_MESSAGE = Field(description="For people; it may change: branch on `code`.")
_REQUEST_ID = Field(description="The answer's `X-Request-Id`.")


class Error(BaseModel):
    """The error of any 4xx or 5xx answer; each operation's answers name their codes."""

    code: ErrorCode
    message: str = _MESSAGE
    requestId: str = _REQUEST_ID
    details: dict[str, Any] = Field(description="Depends on `code`; `{}` when it adds nothing.")


class ErrorEnvelope(BaseModel):
    """`{"error": {code, message, requestId, details}}`: the body of every 4xx and 5xx."""

    error: Error


def _envelope(kind: ErrorKind) -> type[BaseModel]:
    # Named after the code, one pair per code: generated clients get one class each.
    error = create_model(
        f"{kind.name}Error",
        __doc__=f"{kind.label}: {kind.summary}",
        code=(cast(Any, Literal)[kind.code], ...),
        message=(str, _MESSAGE),
        requestId=(str, _REQUEST_ID),
        details=(kind.details, ...),
    )
    return create_model(
        f"{kind.name}ErrorEnvelope",
        __doc__=f"The envelope of a `{kind.code}` error.",
        error=(error, ...),
    )


# Each code's envelope, by code.
ENVELOPES: Final = {kind.code: _envelope(kind) for kind in ERROR_KINDS}


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MediaIn(Wire):
    url: Annotated[Text, StringConstraints(max_length=2048)]
    type: MediaType | None = Field(
        default=None, description="Guessed from the URL's path when absent."
    )

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
    type: MediaType


class ApprovalOut(BaseModel):
    """The approval a container needed under its project's policy, and its decision."""

    status: ApprovalStatus
    decidedAt: Timestamp | None
    auto: bool = Field(
        description="True when the policy's `autoApproveAfter` approved it, not a caller."
    )
    reason: str | None


class ContainerOut(BaseModel):
    """A content container: a caption and media references, scheduled to any number of
    accounts."""

    id: str
    projectId: str
    status: ContainerStatus
    caption: str
    media: list[MediaOut]
    approval: ApprovalOut | None = Field(
        description="Null for content its project's policy never held for approval."
    )
    createdAt: Timestamp


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
    """A project's approval policy: which new content waits for a decision."""

    requiresApproval: bool
    firstNPostsBlocked: int
    autoApproveAfter: str | None = Field(description="An ISO 8601 duration, or null.")


class DecisionIn(Wire):
    reason: Annotated[Text, StringConstraints(max_length=1024)] | None = None


class TargetIn(Wire):
    social_account_id: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    mode: Mode = "publish"
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
    mode: Mode
    scheduledPostId: str | None
    captionOverride: str | None
    firstCommentOverride: str | None


class IntentError(BaseModel):
    """Why an approved intent made no post: the error its schedule would have answered."""

    code: ErrorCode
    message: str
    details: dict[str, Any]


class ScheduleIntentOut(BaseModel):
    """A schedule of content awaiting approval, saved until the decision."""

    id: str
    containerId: str
    status: IntentStatus
    scheduledFor: Timestamp
    targets: list[IntentTargetOut]
    scheduledPostIds: list[str] = Field(description="The posts it became once approved.")
    lastError: IntentError | None
    createdAt: Timestamp
    updatedAt: Timestamp


class ScheduleIntentList(BaseModel):
    items: list[ScheduleIntentOut]
    nextCursor: str | None


class BlockedOnApproval(BaseModel):
    """202 of a schedule of content awaiting approval: the intent saved."""

    gateStatus: Literal["blocked_on_approval"]
    containerId: str
    intent: ScheduleIntentOut


class LastError(BaseModel):
    """Why a post failed."""

    code: PostErrorCode
    message: str
    platformCode: str | None = Field(description="The platform's own code, when it gave one.")


class ScheduledPostOut(BaseModel):
    """One post of one content container to one social account."""

    id: str
    containerId: str
    socialAccountId: str
    platform: Platform
    mode: Mode
    status: PostStatus
    scheduledFor: Timestamp = Field(description="When it goes out (whole seconds).")
    attemptedAt: Timestamp | None = Field(description="When a worker last claimed it.")
    publishedAt: Timestamp | None = Field(
        description="When the platform's post was recorded (`published` and `draft`)."
    )
    canceledAt: Timestamp | None
    externalId: str | None = Field(description="The platform's id of the post.")
    externalUrl: str | None
    lastError: LastError | None = Field(description="Set on a `failed` post.")
    createdAt: Timestamp
    updatedAt: Timestamp


class ScheduledPostList(BaseModel):
    items: list[ScheduledPostOut]
    nextCursor: str | None


class ScheduledPostsCreated(BaseModel):
    items: list[ScheduledPostOut] = Field(description="One per target, in request order.")


class CanceledOut(BaseModel):
    id: str
    status: Literal["canceled"]
    canceledAt: Timestamp


class RescheduledOut(BaseModel):
    id: str
    status: Literal["queued"]
    scheduledFor: Timestamp
    updatedAt: Timestamp


class SocialAccountOut(BaseModel):
    """A social account of a project; no field carries a token."""

    id: str
    projectId: str
    platform: Platform
    handle: str
    status: AccountStatus
    statusReason: str | None = Field(description="Why it needs reauthorization, if it does.")
    connectedAt: Timestamp
    tokenExpiresAt: Timestamp | None
    avatarUrl: str | None
    createdAt: Timestamp


class SocialAccountList(BaseModel):
    items: list[SocialAccountOut]
    nextCursor: str | None


# --- webhooks --------------------------------------------------------------------------------

EventTypes = Annotated[list[WebhookEventType], Field(min_length=1, max_length=20)]
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
    status: WebhookEndpointStatusChange | None = None


class WebhookEndpointOut(BaseModel):
    """Where the organization's events of these types are delivered, signed."""

    id: str
    url: str
    description: str | None
    eventTypes: list[WebhookEventType]
    status: WebhookEndpointStatus
    consecutiveFailures: int
    previousSecretExpiresAt: Timestamp | None = Field(
        description="Until then, deliveries are signed with the previous secret too."
    )
    createdAt: Timestamp
    updatedAt: Timestamp


class WebhookEndpointWithSecret(WebhookEndpointOut):
    """An endpoint with its signing secret, shown once: at registration and at each
    rotation."""

    secret: str


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointOut]
    nextCursor: str | None


class WebhookAttemptOut(BaseModel):
    number: int
    startedAt: Timestamp
    durationMs: int
    statusCode: int | None
    error: str | None


class WebhookDeliveryOut(BaseModel):
    """One event's delivery to one endpoint, with every attempt."""

    id: str
    endpointId: str
    eventId: str
    eventType: str = Field(description="A `WebhookEventType`, or `test.ping` for a ping.")
    replayOf: str | None
    status: WebhookDeliveryStatus
    attempts: list[WebhookAttemptOut]
    nextAttemptAt: Timestamp | None
    deliveredAt: Timestamp | None
    createdAt: Timestamp


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryOut]
    nextCursor: str | None


# --- health ----------------------------------------------------------------------------------

ReadinessStatus = TypeAliasType(
    "ReadinessStatus",
    Annotated[Literal["ok", "unavailable"], Field(description="`ok` when every check is.")],
)


class Liveness(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class ReadinessChecks(BaseModel):
    database: str = Field(description="`ok`, or `unavailable: <error type>`.")
    redis: str = Field(description="`ok`, or `unavailable: <error type>`.")


class Readiness(BaseModel):
    """Whether the API's dependencies answer: PostgreSQL and Redis."""

    status: ReadinessStatus
    checks: ReadinessChecks
