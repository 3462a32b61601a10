"""Webhook endpoints: registered, updated, disabled and enabled, their secrets rotated; always
within one organization (a foreign id looks like a missing one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from shared.accounts.credentials import seal_secret, unseal_secret
from shared.events import DELIVERABLE
from shared.kit import ids
from shared.kit.errors import NotFound, Validation
from shared.kit.netcheck import is_public_host
from shared.kit.settings import Settings
from shared.models import EndpointStatus, WebhookEndpoint
from shared.webhooks.signing import new_secret

# During a rotation the previous secret signs too, for this long.
ROTATION_OVERLAP: Final = timedelta(hours=24)
MAX_URL: Final = 2048
NOT_PUBLIC: Final = "the host must be public (not private, loopback or local)"


@dataclass(frozen=True)
class WithSecret:
    """An endpoint and its signing secret in clear: shown once (registration, rotation)."""

    endpoint: WebhookEndpoint
    secret: str


def check_url(url: str, settings: Settings, path: str = "url") -> str:
    """An absolute http(s) URL; in production (`webhooks_public_only`), https to a public
    host only. Names are resolved, and checked again, at each delivery."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise Validation.at(path, "not a URL") from None
    if len(url) > MAX_URL:
        raise Validation.at(path, f"at most {MAX_URL} characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Validation.at(path, "an absolute http or https URL")
    if parts.username or parts.password:
        raise Validation.at(path, "no credentials in the URL: verify the signature instead")
    if settings.webhooks_public_only:
        if parts.scheme != "https":
            raise Validation.at(path, "https only")
        if not is_public_host(url):
            raise Validation.at(path, NOT_PUBLIC)
    return url


def check_types(types: list[str], path: str = "eventTypes") -> list[str]:
    """A non-empty list of deliverable event types, each once, in the given order."""
    if not types:
        raise Validation.at(path, "at least one event type")
    unknown = [t for t in types if t not in DELIVERABLE]
    if unknown:
        known = ", ".join(sorted(DELIVERABLE))
        raise Validation.at(path, f"unknown event types {', '.join(unknown)}; known: {known}")
    return list(dict.fromkeys(types))


def register(
    session: Session,
    organization_id: str,
    url: str,
    event_types: list[str],
    description: str | None,
    *,
    settings: Settings,
    now: datetime,
) -> WithSecret:
    """A new, enabled endpoint and its first secret."""
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=ids.new_id(ids.WEBHOOK_ENDPOINT),
        organization_id=organization_id,
        url=check_url(url, settings),
        description=description,
        event_types=check_types(event_types),
        status=EndpointStatus.ENABLED.value,
        secret=seal_secret(secret, settings),
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    return WithSecret(endpoint, secret)


def get_endpoint(
    session: Session, organization_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    """The endpoint with this id in this organization (row-locked with `lock`), or NotFound."""
    if ids.is_valid(endpoint_id, ids.WEBHOOK_ENDPOINT):
        query = select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.organization_id == organization_id,
        )
        found = session.scalars(query.with_for_update() if lock else query).one_or_none()
        if found is not None:
            return found
    raise NotFound("Webhook endpoint not found")


def endpoints_query(
    organization_id: str, after: tuple[datetime, str] | None
) -> Select[WebhookEndpoint]:
    """The organization's endpoints, oldest first, after a keyset cursor."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.organization_id == organization_id)
    if after is not None:
        query = query.where(tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id) > after)
    return query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)


@dataclass(frozen=True)
class Changes:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def update(
    session: Session,
    organization_id: str,
    endpoint_id: str,
    changes: Changes,
    *,
    settings: Settings,
    now: datetime,
) -> tuple[WebhookEndpoint, bool]:
    """Apply the changes under the endpoint's row lock; the endpoint, and whether it was
    (re-)enabled just now (its waiting deliveries are then due: the caller re-arms them)."""
    endpoint = get_endpoint(session, organization_id, endpoint_id, lock=True)
    if changes.url is not None:
        endpoint.url = check_url(changes.url, settings)
    if changes.event_types is not None:
        endpoint.event_types = check_types(changes.event_types)
    if changes.description is not None:
        endpoint.description = changes.description
    enabled_now = False
    if changes.enabled is True and endpoint.status != EndpointStatus.ENABLED:
        endpoint.status = EndpointStatus.ENABLED.value
        endpoint.consecutive_failures = 0
        enabled_now = True
    elif changes.enabled is False:
        endpoint.status = EndpointStatus.DISABLED.value
    endpoint.updated_at = now
    return endpoint, enabled_now


def rotate_secret(
    session: Session, organization_id: str, endpoint_id: str, *, settings: Settings, now: datetime
) -> WithSecret:
    """A new secret signs from now on; the current one keeps signing beside it for 24 h, so
    a receiver can switch over without a delivery it cannot verify."""
    endpoint = get_endpoint(session, organization_id, endpoint_id, lock=True)
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + ROTATION_OVERLAP
    endpoint.secret = seal_secret(secret, settings)
    endpoint.updated_at = now
    return WithSecret(endpoint, secret)


def signing_secrets(endpoint: WebhookEndpoint, settings: Settings, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one during
    its overlap."""
    out = [unseal_secret(endpoint.secret, settings)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret is not None and until is not None and now < until:
        out.append(unseal_secret(endpoint.previous_secret, settings))
    return out
