"""API keys: `lp_<env>_<keyId>_<secret>`, only a hash of the secret stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import redis
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from shared.kit.db import after_commit
from shared.kit.errors import NotFound, Unauthenticated, Validation
from shared.kit.settings import get_settings
from shared.models import ApiKey, Organization
from shared.tenancy.tiers import OVERRIDE_COLUMNS, EndpointClass, checked_limit, tier_named

SCOPES: Final = frozenset(
    {
        "publish:read",
        "publish:write",
        "content:read",
        "content:write",
        "social:read",
        "webhooks:read",
        "webhooks:write",
        "*",
    }
)
ENVS: Final = frozenset({"live", "test"})
# `last_used_at` moves at most once a minute per key, so reads cost no write each.
LAST_USED_RESOLUTION: Final = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedKey:
    """A new key; `token` is shown once and never stored."""

    id: str
    token: str
    organization_id: str
    scopes: list[str]
    env: str
    tier: str


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(
    session: Session,
    organization_id: str,
    scopes: list[str],
    *,
    env: str = "live",
    name: str = "",
    tier: str | None = None,
    rate_limit_read: int | None = None,
    rate_limit_write: int | None = None,
    rate_limit_long_running: int | None = None,
) -> IssuedKey:
    """Create a key for the organization with exactly these scopes, in `tier` (default: the
    organization's), with its own limits per minute where given."""
    checked_limit("rateLimitRead", rate_limit_read)
    checked_limit("rateLimitWrite", rate_limit_write)
    checked_limit("rateLimitLongRunning", rate_limit_long_running)
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(f"no organization {organization_id}")
    key_tier = tier_named(tier) if tier is not None else tier_named(organization.tier)
    bad = sorted(set(scopes) - SCOPES)
    if bad or not scopes:
        raise Validation.at("scopes", f"Unknown or empty scopes: {', '.join(bad) or '(none)'}")
    if env not in ENVS:
        raise Validation.at("env", "env must be live or test")
    key_id = secrets.token_hex(8)
    secret = secrets.token_hex(24)  # 192 bits
    session.add(
        ApiKey(
            id=key_id,
            organization_id=organization_id,
            env=env,
            secret_hash=_hash(secret),
            scopes=sorted(set(scopes)),
            name=name,
            tier=key_tier.value,
            rate_limit_read=rate_limit_read,
            rate_limit_write=rate_limit_write,
            rate_limit_long_running=rate_limit_long_running,
        )
    )
    return IssuedKey(
        key_id,
        f"lp_{env}_{key_id}_{secret}",
        organization_id,
        sorted(set(scopes)),
        env,
        key_tier.value,
    )


def parse_token(token: str) -> tuple[str, str, str]:
    """(env, key id, secret) from `lp_<env>_<keyId>_<secret>`, or Unauthenticated."""
    parts = token.split("_")
    # Key ids and secrets are hex; anything else (a NUL, a non-ASCII byte) never reaches SQL.
    if (
        len(parts) != 4
        or parts[0] != "lp"
        or parts[1] not in ENVS
        or not all(p.isascii() and p.isalnum() for p in parts[2:])
    ):
        raise Unauthenticated("Malformed API key")
    return parts[1], parts[2], parts[3]


# The Redis key whose value changes with every change to a key or an organization: API
# processes authenticate anew once it moves (api/keycache.py).
KEYS_GENERATION: Final = "publisher:keys:generation"


def keys_changed(session: Session) -> None:
    """This transaction changes a key or an organization: once it commits, every API process
    forgets the keys it remembers. Every such change in the domain calls this."""
    after_commit(session, lambda: invalidate_cached_keys(get_settings().redis_url))


def invalidate_cached_keys(redis_url: str) -> None:
    """Tell every API process to forget the keys it remembers: call it once a change to a
    key or an organization has committed. Raises if Redis cannot be told (the change stands;
    API processes then still take up to api.keycache.TTL_S to see it)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.set(KEYS_GENERATION, secrets.token_hex(8))
    finally:
        client.close()


# Built once: every authenticated request runs it.
_KEY_AND_ORGANIZATION: Final = (
    select(ApiKey, Organization)
    .join(Organization, Organization.id == ApiKey.organization_id)
    .where(ApiKey.id == bindparam("key_id"))
)


def authenticate(session: Session, token: str, *, now: datetime) -> tuple[ApiKey, Organization]:
    """The live key behind `token`, and its organization (whose tier and cap limit it), in
    one query; every failure looks the same to the caller."""
    env, key_id, secret = parse_token(token)
    found = (
        session.execute(_KEY_AND_ORGANIZATION, {"key_id": key_id}).one_or_none()
        if len(key_id) <= 64
        else None
    )
    # Hash even for unknown ids so the timing does not tell which ids exist.
    presented = _hash(secret)
    expected = found[0].secret_hash if found is not None else b"\0" * 32
    if found is None or not hmac.compare_digest(presented, expected) or found[0].env != env:
        raise Unauthenticated("Invalid API key")
    key, organization = found
    if key.revoked_at is not None:
        raise Unauthenticated("Invalid API key")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                or_(
                    ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION
                ),
            )
            .values(last_used_at=now)
        )
    return key, organization


def has_scope(scopes: Collection[str], scope: str) -> bool:
    """Deny by default: the exact scope, or `*`."""
    return "*" in scopes or scope in scopes


def _active_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound(f"no active key {key_id}")
    return key


def set_key_tier(session: Session, key_id: str, tier: str) -> ApiKey:
    """Move an active key to `tier`; its own limits, where it has them, still win."""
    key = _active_key(session, key_id)
    key.tier = tier_named(tier).value
    keys_changed(session)
    return key


def set_key_limit(
    session: Session, key_id: str, klass: EndpointClass, per_minute: int | None
) -> ApiKey:
    """Give an active key its own limit of this class, or (None) its tier's again."""
    key = _active_key(session, key_id)
    setattr(key, OVERRIDE_COLUMNS[klass], checked_limit(klass.value, per_minute))
    keys_changed(session)
    return key


def revoke_key(session: Session, key_id: str, *, now: datetime) -> bool:
    """Revoke at once; False if no such key (or already revoked)."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    keys_changed(session)
    return bool(result.rowcount)  # type: ignore[attr-defined]
