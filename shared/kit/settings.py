"""Process-wide settings, read from the environment with local defaults that work out of the box."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_FLOWER_PASSWORD = "publisher"  # noqa: S105 - a development default, refused elsewhere
# A Fernet key anyone can read here: development only, refused in production.
DEFAULT_CREDENTIAL_KEY = "TTfnRqMGTb2oNrHo3KDj-YqWqZqkxVrLO03KGnd03cE="
# The Celery brokers publisher is built and tested for.
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps")


class Settings(BaseSettings):
    """Everything a role needs; one instance per process via `get_settings()`."""

    # Hidden input: a refused value (a credential key, a URL with a password) never reaches
    # a log through the error that refuses it.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "postgresql+psycopg://root@127.0.0.1:5432/publisher"
    # Rate limits, the API key cache, and Celery's broker unless BROKER_URL names another.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Celery's broker: empty means REDIS_URL; amqp://user:password@host:5672/vhost is
    # RabbitMQ, with quorum queues and delayed delivery (shared/publishing/tasks.py).
    broker_url: str = ""
    # The API's base URL as its callers reach it: the `servers` entry of its OpenAPI document.
    public_api_url: str = "http://127.0.0.1:8000"
    sandbox_url: str = "http://127.0.0.1:8900"
    # Where emulator-bound Instagram accounts post; a real deployment sets the Graph host,
    # e.g. https://graph.instagram.com/v21.0.
    instagram_api_url: str = "http://127.0.0.1:8901"
    # Comma-separated Fernet keys sealing social-account credentials: the first encrypts,
    # every one decrypts. Rotation: prepend a new key, run `publisher accounts reencrypt`,
    # then drop the old one.
    credential_keys: str = DEFAULT_CREDENTIAL_KEY

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100)
    # What DATABASE_URL reaches: PostgreSQL itself ("none"), or a pooler in transaction mode
    # (PgBouncer's pool_mode = transaction), where a client's session lasts one transaction:
    # no server-side prepared statements, and the timeouts set in each transaction
    # (docs/design.md, "Behind a transaction pooler").
    database_pooler: Literal["none", "transaction"] = "none"

    # Publish-now: the caller's window to cancel a mistaken publish.
    publish_now_delay_s: float = 30.0
    # Clock-skew tolerance on `scheduledFor` in the past.
    schedule_skew_s: float = 30.0
    # Posts due within this horizon get an ETA task; it must stay well below the broker's
    # visibility timeout so a held ETA message is never redelivered while it waits.
    dispatch_horizon_s: float = Field(default=60.0, gt=0)
    dispatch_interval_s: float = Field(default=1.0, gt=0)
    dispatch_batch: int = Field(default=500, ge=1)
    # A queued post this far past its time whose task never claimed it is re-dispatched.
    redispatch_grace_s: float = Field(default=15.0, gt=0)
    # Every `publisher beat` competes for the ticks' lease; its holder sends them, and another
    # beat takes over this long after the holder stopped renewing (killed, cut off).
    beat_lease_s: float = Field(default=5.0, ge=1)
    # How long a worker owns a claimed post before the reaper may take it back.
    lease_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)

    # Platform calls.
    platform_timeout_s: float = Field(default=10.0, gt=0)
    platform_max_tries: int = Field(default=6, ge=1)
    platform_backoff_base_s: float = Field(default=0.5, ge=0)
    platform_backoff_cap_s: float = Field(default=8.0, ge=0)
    # A platform still failing after every try is down, not refusing: the post waits, not
    # fails. Not yet at the point of no return it goes back to the queue; past it, it stays
    # `publishing` (a cancel still answers 409) and the reconciler asks again then. Each wait
    # is about as long as the post is already late, with jitter, at most the cap; a post this
    # late fails PLATFORM_UNAVAILABLE (or UPLOAD_OUTCOME_UNKNOWN past the point of no return)
    # as it did before waiting. 0 turns waiting off.
    platform_outage_retry_cap_s: float = Field(default=300.0, gt=0)
    platform_outage_max_delay_s: float = Field(default=86_400.0, ge=0)
    # An Instagram container (a video above all) processes before it can be published; a
    # worker waits this long for FINISHED, renewing its lease, then fails the post
    # CONTAINER_NOT_READY. Kept below the task's soft time limit with room for the publish.
    instagram_container_wait_s: float = Field(default=120.0, gt=0, le=180)
    # Instagram refreshes only a token at least this old (documented: 24 h).
    instagram_refresh_min_age_s: float = Field(default=86_400.0, ge=0)
    # Where emulator-bound TikTok accounts post; a real deployment sets TikTok's open API
    # host (https://open.tiktokapis.com).
    tiktok_api_url: str = "http://127.0.0.1:8902"
    # The TikTok app's client key and secret: refreshing a token needs them.
    tiktok_client_key: str = "publisher-dev"
    tiktok_client_secret: str = "publisher-dev-secret"  # noqa: S105 - a development default
    # A post TikTok accepted is asked about again after this, doubling up to the cap: TikTok
    # allows 30 status reads a minute per token, and moderation can take hours.
    poll_first_s: float = Field(default=2.0, gt=0)
    poll_cap_s: float = Field(default=300.0, gt=0)
    # TikTok said PUBLISH_COMPLETE but no public post id has come for this long: record it
    # published under its publish_id rather than wait on moderation forever.
    moderation_wait_s: float = Field(default=72 * 3600.0, gt=0)
    # An access token this close to its expiry is refreshed before the account's next post.
    token_refresh_ahead_s: float = Field(default=7 * 86_400.0, ge=0)

    # Webhooks. Each attempt waits this long for the receiver's answer.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # After a failed attempt the next comes this long later (API.md's schedule: 0 s, 30 s,
    # 1 min, 5 min, 15 min, 1 h, 6 h, 24 h), the first at once; past the last, abandoned.
    webhook_retry_schedule_s: str = "0,30,60,300,900,3600,21600,86400"
    # An endpoint with this many failed attempts in a row is auto-paused.
    webhook_pause_after: int = Field(default=20, ge=1)
    # Endpoints on private, loopback or link-local addresses, and plain http: refused in
    # production (at registration and at each delivery) unless this is set.
    webhook_allow_private: bool = False

    # The largest request body the API reads. The contract's biggest (50 targets with two
    # 4000-char overrides each, every char a \\uXXXX escape) is about 2.4 MB.
    max_body_bytes: int = Field(default=4 * 1_048_576, ge=1024)
    # A request body must arrive in full within this many seconds, else 408 REQUEST_TIMEOUT:
    # a stalled body (a short Content-Length, a trickling client) never holds a connection
    # for long. 4 MiB in 30 s is a client slower than 140 KB/s.
    body_timeout_s: float = Field(default=30.0, gt=0)

    # Rate limits come from tiers (shared/tenancy/tiers.py). A new organization, and so its
    # first key, is in this tier unless `tenants create --tier` says otherwise.
    rate_limit_default_tier: Literal["standard", "pilot", "partner"] = "standard"
    # Every tier's limits and daily cap times this: 1 in service; load runs lift them with a
    # large one and still make each request's Redis call. A limit set on a key or an
    # organization is taken as written, so a test stack can still give one key a small limit.
    rate_limit_multiplier: int = Field(default=1, ge=1)

    # /metrics reads posts-by-status from PostgreSQL at most this often.
    metrics_post_state_ttl_s: float = Field(default=5.0, ge=0)

    flower_user: str = "publisher"
    flower_password: str = DEFAULT_FLOWER_PASSWORD
    state_dir: str = "var"
    # Fault injection for tests and chaos runs (shared/kit/failpoints.py); ignored in production.
    failpoints_file: str | None = None
    reap_interval_s: float = Field(default=2.0, gt=0)

    @field_validator("credential_keys")
    @classmethod
    def _valid_credential_keys(cls, value: str) -> str:
        from cryptography.fernet import Fernet

        keys = [key.strip() for key in value.split(",") if key.strip()]
        if not keys:
            raise ValueError("CREDENTIAL_KEYS must hold at least one Fernet key")
        for n, key in enumerate(keys, 1):
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    f"CREDENTIAL_KEYS: key {n} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes, as Fernet.generate_key() makes them)"
                ) from None
        return ",".join(keys)

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if value and scheme not in BROKER_SCHEMES:
            raise ValueError(
                "BROKER_URL: a Redis (redis://, rediss://) or RabbitMQ (amqp://, amqps://) URL"
            )
        return value

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",")]
        except ValueError:
            raise ValueError("WEBHOOK_RETRY_SCHEDULE_S: comma-separated seconds") from None
        if not delays or any(d < 0 for d in delays):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE_S: one or more non-negative seconds")
        return value

    @property
    def webhook_delays(self) -> list[float]:
        """Before each attempt of a delivery, how long after the previous one failed."""
        return [float(part) for part in self.webhook_retry_schedule_s.split(",")]

    @property
    def webhooks_public_only(self) -> bool:
        """Webhook endpoints must be public https URLs (production, unless allowed)."""
        return self.environment == "production" and not self.webhook_allow_private

    @property
    def credential_key_list(self) -> list[str]:
        """CREDENTIAL_KEYS, the encrypting key first."""
        return self.credential_keys.split(",")

    @model_validator(mode="after")
    def _broker_defaults_to_redis(self) -> Settings:
        if not self.broker_url:
            self.broker_url = self.redis_url
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production" and self.flower_password == DEFAULT_FLOWER_PASSWORD:
            raise ValueError("FLOWER_PASSWORD must be set outside development")
        if self.environment == "production" and DEFAULT_CREDENTIAL_KEY in self.credential_key_list:
            raise ValueError(
                "CREDENTIAL_KEYS must be set outside development: it holds the development key"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
