"""Request dependencies: who is calling, and with which scopes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.datastructures import State

from api.endpoint_classes import class_of
from api.keycache import KeyCache
from api.middleware import current_request_id
from api.ratelimit import CLASS_HEADER, limiter_of
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.errors import ForbiddenScope, RateLimited, Unauthenticated
from shared.kit.settings import get_settings
from shared.tenancy.keys import authenticate, has_scope
from shared.tenancy.tiers import EndpointClass, Limits, limits_of

log = logging.getLogger("publisher.api")

RATE_LIMIT_HEADERS = "rate_limit_headers"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: one key of one organization."""

    organization_id: str
    key_id: str
    scopes: tuple[str, ...]
    env: str
    # What the key may spend: its tier's limits or its own, and its organization's daily cap.
    limits: Limits

    @property
    def sandbox_only(self) -> bool:
        """A `test` key reaches sandbox-bound social accounts only."""
        return self.env == "test"

    def actor(self) -> Actor:
        """This caller as recorded on the audit log."""
        return Actor(self.organization_id, self.key_id, current_request_id())


# Declares the scheme in the OpenAPI document; the header itself is parsed below, so that a
# missing key and a malformed one get their own messages.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="lp_<env>_<keyId>_<secret>",
    description="An API key of one organization, with scopes.",
)


def _principal(
    request: Request,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    if not authorization:
        raise Unauthenticated("Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        raise Unauthenticated("Authorization must be 'Bearer <key>'")
    token = token.strip()
    # Remembered under the keys' current generation, or read from the database after it
    # (api/keycache.py: a revoked key is refused from the moment its revocation returns).
    cache = key_cache_of(request.app.state)
    generation = cache.generation()
    if (known := cache.get(token, generation)) is not None:
        return known
    with transaction() as tx:
        key, organization = authenticate(tx.session, token, now=utcnow())
        principal = Principal(
            key.organization_id,
            key.id,
            tuple(key.scopes),
            key.env,
            limits_of(key, organization, scale=get_settings().rate_limit_multiplier),
        )
    cache.put(token, principal, generation)
    return principal


def key_cache_of(state: State) -> KeyCache[Principal]:
    """The app's key cache, made by `create_app`."""
    cache = state.key_cache
    assert isinstance(cache, KeyCache)
    return cache


# The scope each dependency made by `require` demands: what the OpenAPI document states.
_REQUIRED_SCOPES: dict[Callable[..., Principal], str] = {}


def required_scope(dependency: Callable[..., Any]) -> str | None:
    """The scope `dependency` demands, if `require` made it."""
    return _REQUIRED_SCOPES.get(dependency)


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates and demands `scope` (deny by default)."""

    def dependency(
        request: Request, principal: Annotated[Principal, Depends(_principal)]
    ) -> Principal:
        # For the access log line, which the edge middleware writes once the answer is out.
        request.state.organization_id = principal.organization_id
        klass = class_of(request)
        # Every authenticated answer names the route's class, a 403 or a fail-open one too.
        setattr(request.state, RATE_LIMIT_HEADERS, {CLASS_HEADER: klass.value})
        if not has_scope(principal.scopes, scope):
            raise ForbiddenScope(f"This key lacks the {scope} scope", {"requiredScope": scope})
        _rate_limit(request, principal, klass)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    _REQUIRED_SCOPES[dependency] = scope
    return dependency


def _rate_limit(request: Request, principal: Principal, klass: EndpointClass) -> None:
    """Each class has its own bucket per key, and writes of every class count against the
    organization's day; over either is 429 RATE_LIMITED."""
    per_minute = principal.limits.per_minute(klass)
    daily_cap = principal.limits.daily_writes if klass.writes else None
    decision = limiter_of(request.app.state).check(
        principal.key_id,
        klass,
        per_minute,
        organization_id=principal.organization_id,
        daily_cap=daily_cap,
    )
    if decision is None:
        return
    setattr(request.state, RATE_LIMIT_HEADERS, decision.headers())
    if not decision.allowed:
        message = (
            f"Over this organization's cap of {decision.limit} writes a day (UTC)"
            if decision.window == "day"
            else f"Over this key's {klass} limit of {decision.limit} requests per minute"
        )
        raise RateLimited(
            message,
            {"limit": decision.limit, "class": klass.value, "window": decision.window},
            decision.headers(),
        )


def read_session() -> Iterator[Session]:
    """A session for reads; nothing is written through it."""
    session = new_session()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError:
            # The connection died after the read (the server restarted, the backend was
            # terminated): nothing is left to undo, and the answer may already be on its
            # way, which an exception here would cut off. The pool drops the connection.
            log.warning("read session's connection lost at its end")
            session.invalidate()


ReadSession = Annotated[Session, Depends(read_session)]
