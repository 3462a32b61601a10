"""SQLAlchemy models: the whole schema, PostgreSQL being the only source of truth."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Platform(enum.StrEnum):
    TIKTOK = "tiktok"
    INSTAGRAM = "instagram"


class Mode(enum.StrEnum):
    PUBLISH = "publish"
    DRAFT = "draft"


class AccountStatus(enum.StrEnum):
    CONNECTED = "connected"
    # The platform refused the account's token (expired, revoked): an operator reconnects it.
    REAUTH_REQUIRED = "reauth_required"
    DISCONNECTED = "disconnected"


class PostStatus(enum.StrEnum):
    QUEUED = "queued"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    DRAFT = "draft"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset(
    {PostStatus.PUBLISHED, PostStatus.DRAFT, PostStatus.FAILED, PostStatus.CANCELED}
)


# The adapter of accounts bound to the sandbox platform: the only ones `test` keys may reach.
SANDBOX_ADAPTER = "sandbox"
# The adapter of accounts that post through Instagram's Graph API, or its emulator.
INSTAGRAM_ADAPTER = "instagram"
# The adapter of accounts that post through TikTok's Content Posting API, or its emulator.
TIKTOK_ADAPTER = "tiktok"


# The rate-limit tiers (shared/tenancy/tiers.py holds their limits).
TIER_CHECK = "tier IN ('standard', 'pilot', 'partner')"


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint(TIER_CHECK, name="tier"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    # Its daily write cap is its tier's, unless it has its own.
    tier: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    daily_write_cap: Mapped[int | None] = mapped_column(Integer)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("approval_first_n BETWEEN 0 AND 50", name="approval_first_n"),
        CheckConstraint("auto_approve_after_s > 0", name="auto_approve_after_s"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    # The approval policy (shared/content/approval.py): every new container waits for a
    # decision, or only the project's first N; undecided ones are approved after the delay.
    approval_required: Mapped[bool] = mapped_column(default=False, server_default="false")
    approval_first_n: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    auto_approve_after_s: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("env IN ('live', 'test')", name="env"),
        CheckConstraint(TIER_CHECK, name="tier"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    env: Mapped[str] = mapped_column(String(8))
    # SHA-256 of the secret; the secret itself is shown once and never stored.
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Requests per minute in each endpoint class: the tier's, unless the key has its own
    # (read-light, write-light, long-running).
    tier: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    rate_limit_read: Mapped[int | None] = mapped_column(Integer)
    rate_limit_write: Mapped[int | None] = mapped_column(Integer)
    rate_limit_long_running: Mapped[int | None] = mapped_column(Integer)


class SocialAccount(Base):
    __tablename__ = "social_accounts"
    __table_args__ = (
        CheckConstraint("platform IN ('tiktok', 'instagram')", name="platform"),
        CheckConstraint(
            "status IN ('connected', 'reauth_required', 'disconnected')", name="status"
        ),
        Index("ix_social_accounts_project_created", "project_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    platform: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str] = mapped_column(String(200))
    # Which adapter uploads for this account, and where it posts.
    adapter: Mapped[str] = mapped_column(String(32), default=SANDBOX_ADAPTER)
    base_url: Mapped[str] = mapped_column(String(500))
    # The platform's own id of the account (the IG user id); None for sandbox accounts.
    platform_user_id: Mapped[str | None] = mapped_column(String(64))
    # Sealed with CREDENTIAL_KEYS (shared/accounts/credentials.py): a token is never stored
    # in clear, so a database dump or backup holds none.
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current access token was issued or last refreshed: Instagram refuses to
    # refresh a token younger than 24 h.
    token_refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(
        String(24),
        default=AccountStatus.CONNECTED.value,
        server_default=AccountStatus.CONNECTED.value,
    )
    # Why the account needs reauthorization, as the platform said it.
    status_reason: Mapped[str | None] = mapped_column(Text)
    # The platform's own code for that refusal (Graph's `190`, TikTok's `access_token_invalid`).
    status_platform_code: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime] = _now()
    created_at: Mapped[datetime] = _now()


class ContainerStatus(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"  # under the project's approval policy, undecided
    COMPLETED = "completed"  # ready to schedule: never gated, or approved
    REJECTED = "rejected"  # final: it is never scheduled


class ContentContainer(Base):
    __tablename__ = "content_containers"
    __table_args__ = (
        CheckConstraint("status IN ('pending_approval', 'completed', 'rejected')", name="status"),
        # The dispatcher's auto-approval sweep reads only undecided containers.
        Index(
            "ix_content_containers_pending",
            "created_at",
            postgresql_where=text("status = 'pending_approval'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ContainerStatus.COMPLETED.value)
    caption: Mapped[str] = mapped_column(Text)
    media: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    # Set when it started `pending_approval`; the decision and who made it (a key id, or
    # None with `auto_approved` for the policy's delay) once decided.
    approval_required: Mapped[bool] = mapped_column(default=False, server_default="false")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    auto_approved: Mapped[bool] = mapped_column(default=False, server_default="false")
    decision_reason: Mapped[str | None] = mapped_column(Text)


class IntentStatus(enum.StrEnum):
    BLOCKED = "blocked"  # waiting for its content's approval
    PROMOTED = "promoted"  # approved: its posts exist (`scheduled_post_ids`)
    CANCELED = "canceled"  # by the caller, before the approval
    REJECTED = "rejected"  # its content was rejected
    FAILED = "failed"  # approved, but its targets no longer schedule (`last_error`)


class ScheduleIntent(Base):
    """A schedule of content still awaiting approval: the request, kept until the decision
    turns it into posts (all of its targets, or none) or ends it."""

    __tablename__ = "schedule_intents"
    __table_args__ = (
        CheckConstraint(
            "status IN ('blocked', 'promoted', 'canceled', 'rejected', 'failed')", name="status"
        ),
        Index("ix_schedule_intents_container", "container_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    container_id: Mapped[str] = mapped_column(ForeignKey("content_containers.id"))
    status: Mapped[str] = mapped_column(String(16), default=IntentStatus.BLOCKED.value)
    scheduled_for: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The request's targets, as the schedule call took them (camelCase wire names).
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # A `test` key's intent reaches sandbox accounts only, when promoted as when saved.
    sandbox_only: Mapped[bool] = mapped_column(default=False)
    actor_key_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(200))
    scheduled_post_ids: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ScheduledPost(Base):
    __tablename__ = "scheduled_posts"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'publishing', 'published', 'draft', 'failed', 'canceled')",
            name="status",
        ),
        CheckConstraint("mode IN ('publish', 'draft')", name="mode"),
        # Each organization has its own id space for the ids callers see.
        Index("uq_scheduled_posts_org_public_id", "organization_id", "public_id", unique=True),
        # The list endpoint: newest scheduledFor first within a project.
        Index("ix_scheduled_posts_project_sched", "project_id", "scheduled_for", "public_id"),
        # The dispatcher scans only queued rows by time; this index stays small.
        Index(
            "ix_scheduled_posts_queued_due",
            "scheduled_for",
            postgresql_where=text("status = 'queued'"),
        ),
        # The dispatcher re-arms polls of posts awaiting the platform whose message was lost.
        Index(
            "ix_scheduled_posts_awaiting_poll",
            "poll_at",
            postgresql_where=text("status = 'publishing' AND awaiting_since IS NOT NULL"),
        ),
        # The reaper scans only publishing rows by lease.
        Index(
            "ix_scheduled_posts_publishing_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'publishing'"),
        ),
    )

    # The internal key: task arguments, logs, the audit log and the platform's idempotency key.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The id on the wire, unique per organization: the same as `id` unless the caller chose
    # one (`scheduledPostId`), so another tenant's choice can never be seen as "taken".
    public_id: Mapped[str] = mapped_column(String(64))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    container_id: Mapped[str] = mapped_column(ForeignKey("content_containers.id"))
    social_account_id: Mapped[str] = mapped_column(ForeignKey("social_accounts.id"))
    platform: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    caption_override: Mapped[str | None] = mapped_column(Text)
    first_comment_override: Mapped[str | None] = mapped_column(Text)

    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_id: Mapped[str | None] = mapped_column(String(200))
    external_url: Mapped[str | None] = mapped_column(String(1000))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # The platform's own handle for this post's publish (Instagram container id, TikTok
    # publish_id), persisted before it is needed to reconcile.
    platform_handle: Mapped[str | None] = mapped_column(String(200))
    # Set once the platform accepted the publish and completes it on its own (TikTok): the
    # post stays `publishing` with no lease, and a poll task due at `poll_at` asks again.
    awaiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    polls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The platform was down when this post last tried (settings' platform outage wait): a
    # queued post is not dispatched before this, a publishing one is reconciled then.
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Fencing token: bumped by every reschedule, cancel and re-dispatch. A task carries the
    # token it was sent with and does nothing once the row's token has moved on.
    dispatch_version: Mapped[int] = mapped_column(Integer, default=1)
    # How often the dispatcher gave up on its task as lost and sent another: each time it
    # waits twice as long before it does so again (shared/publishing/posts.py dispatch_due).
    redispatches: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    task_id: Mapped[str | None] = mapped_column(String(64))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)

    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Event(Base):
    """The event log: every transition of a post and every account event, appended in the
    same transaction as the change (shared/events.py). Append-only: the database refuses
    edits and deletions. An API caller's change carries its key, request and reason: the
    audit trail is these rows, never a second copy."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_subject", "subject_id", "id"),
        Index("ix_events_organization", "organization_id", "id"),
        Index("ux_events_public_id", "public_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(30))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    type: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    actor_key_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class IdempotencyRecord(Base):
    """A successful mutating POST's response, replayed for the same key and body for 24 h."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class EndpointStatus(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # by the caller
    AUTO_PAUSED = "auto_paused"  # after WEBHOOK_PAUSE_AFTER consecutive failed attempts


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # an attempt is due (or running)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a 4xx the receiver means: not retried
    ABANDONED = "abandoned"  # every retry of the schedule failed


class WebhookEndpoint(Base):
    """Where an organization wants its events: an https URL, the event types it takes, and
    its signing secret (sealed; during a rotation the previous one signs too, until
    `previous_secret_until`)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org", "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    status: Mapped[str] = mapped_column(String(16), server_default=EndpointStatus.ENABLED.value)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """One event for one endpoint, written in the event's transaction (the outbox), and sent
    by a task after commit; `token` fences its tasks as `dispatch_version` fences a post's."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        # Once per endpoint: a replay is a delivery of its own, with `replay_of` set.
        Index(
            "ux_webhook_deliveries_event",
            "endpoint_id",
            "event_id",
            unique=True,
            postgresql_where=text("replay_of IS NULL"),
        ),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    # The id the receiver sees (X-Layers-Event-Id): the event's, or a replay's own.
    event_public_id: Mapped[str] = mapped_column(String(30))
    replay_of: Mapped[str | None] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(16), server_default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    token: Mapped[int] = mapped_column(Integer, server_default="1")
    # How often the dispatcher re-armed it as lost; each time it waits twice as long first.
    rearms: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    task_id: Mapped[str | None] = mapped_column(String(64))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class WebhookAttempt(Base):
    """One POST of a delivery: when, how long, and what came back (status or error)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class ControlLease(Base):
    """Which process runs a piece of control work (the ticks' schedule) right now. Every
    `publisher beat` competes for it; only the holder sends ticks, and a holder that stops
    renewing loses it once it expires, on the database's clock (shared/publishing/leader.py)."""

    __tablename__ = "control_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
