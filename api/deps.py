"""Request dependencies: who is calling, and with which scopes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.middleware import current_request_id
from api.ratelimit import limiter
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.errors import ForbiddenScope, RateLimited, Unauthenticated
from shared.kit.settings import get_settings
from shared.tenancy.keys import authenticate, has_scope

RATE_LIMIT_HEADERS = "rate_limit_headers"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: one key of one organization."""

    organization_id: str
    key_id: str
    scopes: tuple[str, ...]
    env: str
    rate_limit_read: int | None = None
    rate_limit_write: int | None = None

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
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    if not authorization:
        raise Unauthenticated("Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        raise Unauthenticated("Authorization must be 'Bearer <key>'")
    with transaction() as tx:
        key = authenticate(tx.session, token.strip(), now=utcnow())
        return Principal(
            key.organization_id,
            key.id,
            tuple(key.scopes),
            key.env,
            key.rate_limit_read,
            key.rate_limit_write,
        )


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates and demands `scope` (deny by default)."""

    def dependency(
        request: Request, principal: Annotated[Principal, Depends(_principal)]
    ) -> Principal:
        # For the access log line, which the edge middleware writes once the answer is out.
        request.state.organization_id = principal.organization_id
        if not has_scope(principal.scopes, scope):
            raise ForbiddenScope(f"This key lacks the {scope} scope", {"requiredScope": scope})
        _rate_limit(request, principal)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def _rate_limit(request: Request, principal: Principal) -> None:
    """Reads and writes are limited apart, per key; over the limit is 429 RATE_LIMITED."""
    settings = get_settings()
    if request.method in ("GET", "HEAD"):
        klass, limit = "read", principal.rate_limit_read or settings.rate_limit_read_per_min
    else:
        klass, limit = "write", principal.rate_limit_write or settings.rate_limit_write_per_min
    decision = limiter().check(principal.key_id, klass, limit)
    if decision is None:
        return
    setattr(request.state, RATE_LIMIT_HEADERS, decision.headers())
    if not decision.allowed:
        raise RateLimited(
            f"Over this key's {klass} limit of {limit} requests per minute",
            {"limit": limit, "class": klass},
            decision.headers(),
        )


def read_session() -> Iterator[Session]:
    """A session for reads; nothing is written through it."""
    session = new_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


ReadSession = Annotated[Session, Depends(read_session)]
