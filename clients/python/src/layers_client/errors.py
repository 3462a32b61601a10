"""One exception class per error code of the API's envelope
`{"error": {code, message, requestId, details}}`, a connection error for a request that got no
answer after every retry, and the webhook helper's signature error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


class LayersError(Exception):
    """Any error of the API, and the base of every error the client raises for a call.

    `code` is the envelope's stable code (`HTTP_ERROR` for an answer without the envelope, as a
    proxy's own error page), `status` the HTTP status (None when no answer came), `request_id`
    the answer's `X-Request-Id`, `details` the envelope's details (empty when none)."""

    code_of_class: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code_of_class or "HTTP_ERROR"
        self.status = status
        self.request_id = request_id
        self.details: Mapping[str, Any] = dict(details or {})
        # The answer's Retry-After, in seconds (429 and 503), when it had one.
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" [{self.status}]" if self.status is not None else ""
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"


class UnauthenticatedError(LayersError):
    """401: missing, malformed, unknown or revoked key."""

    code_of_class = "UNAUTHENTICATED"


class ForbiddenScopeError(LayersError):
    """403: the key lacks the endpoint's scope (`required_scope`)."""

    code_of_class = "FORBIDDEN_SCOPE"

    @property
    def required_scope(self) -> str | None:
        value = self.details.get("requiredScope")
        return value if isinstance(value, str) else None


class _WithStatus(LayersError):
    @property
    def current_status(self) -> str | None:
        """`details.status`: the object's status that decided the answer."""
        value = self.details.get("status")
        return value if isinstance(value, str) else None


class ApprovalRequiredError(_WithStatus):
    """403: publish-now of content awaiting approval; nothing was saved."""

    code_of_class = "APPROVAL_REQUIRED"


class NotFoundError(LayersError):
    """404: no such object in the caller's organization (or a malformed id)."""

    code_of_class = "NOT_FOUND"


class MethodNotAllowedError(LayersError):
    """405: the path does not take this method."""

    code_of_class = "METHOD_NOT_ALLOWED"


class RequestTimeoutError(LayersError):
    """408: the request body did not arrive in full in time."""

    code_of_class = "REQUEST_TIMEOUT"


class ConflictError(_WithStatus):
    """409: the object's state forbids the change; `current_status` says which state (for a
    cancel: `publishing` when the upload started, else the terminal status)."""

    code_of_class = "CONFLICT"


class ContentRejectedError(_WithStatus):
    """409: schedule or publish-now of content whose approval was refused."""

    code_of_class = "CONTENT_REJECTED"


class PlatformError(LayersError):
    """409: publish-now to an account whose token the platform refuses; nothing was saved.
    Reconnect the account; `platform_code` is the platform's own code (Graph's `190`)."""

    code_of_class = "PLATFORM_ERROR"

    @property
    def platform_code(self) -> str | None:
        value = self.details.get("platformCode")
        return value if isinstance(value, str) else None

    @property
    def social_account_id(self) -> str | None:
        value = self.details.get("socialAccountId")
        return value if isinstance(value, str) else None


class IdempotencyConflictError(LayersError):
    """409: an Idempotency-Key reused with another request."""

    code_of_class = "IDEMPOTENCY_CONFLICT"

    @property
    def idempotency_key(self) -> str | None:
        value = self.details.get("idempotencyKey")
        return value if isinstance(value, str) else None


class PayloadTooLargeError(LayersError):
    """413: the body is over the server's size cap."""

    code_of_class = "PAYLOAD_TOO_LARGE"


@dataclass(frozen=True)
class Issue:
    """One problem of a 422: where (a wire path such as `targets[0].socialAccountId`), what."""

    path: str
    message: str


class ValidationError(LayersError):
    """422: bad input; `issues` lists each `{path, message}`."""

    code_of_class = "VALIDATION"

    @property
    def issues(self) -> list[Issue]:
        raw = self.details.get("issues")
        if not isinstance(raw, list):
            return []
        return [
            Issue(str(i.get("path", "")), str(i.get("message", "")))
            for i in raw
            if isinstance(i, Mapping)
        ]


class RateLimitedError(LayersError):
    """429: over the key's limit of the endpoint's class (`window` "minute") or the
    organization's daily write cap (`window` "day"); `retry_after` in seconds."""

    code_of_class = "RATE_LIMITED"

    @property
    def limit(self) -> int | None:
        value = self.details.get("limit")
        return value if isinstance(value, int) else None

    @property
    def endpoint_class(self) -> str | None:
        value = self.details.get("class")
        return value if isinstance(value, str) else None

    @property
    def window(self) -> str | None:
        value = self.details.get("window")
        return value if isinstance(value, str) else None


class InternalError(LayersError):
    """500: a bug on the server."""

    code_of_class = "INTERNAL"


class UnavailableError(LayersError):
    """503: a dependency of the server is down; retried by the client before it is raised."""

    code_of_class = "UNAVAILABLE"


class LayersConnectionError(LayersError):
    """No answer: the connection failed or timed out on every attempt. `__cause__` is the
    last transport error. When `maybe_sent` is true a request may have reached the server
    (a read timeout, a connection dropped after sending): check before doing it again."""

    code_of_class = "CONNECTION_ERROR"

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


ERROR_CLASSES: Mapping[str, type[LayersError]] = {
    cls.code_of_class: cls
    for cls in (
        UnauthenticatedError,
        ForbiddenScopeError,
        ApprovalRequiredError,
        NotFoundError,
        MethodNotAllowedError,
        RequestTimeoutError,
        ConflictError,
        ContentRejectedError,
        PlatformError,
        IdempotencyConflictError,
        PayloadTooLargeError,
        ValidationError,
        RateLimitedError,
        InternalError,
        UnavailableError,
    )
    if cls.code_of_class is not None
}


class WebhookSignatureError(ValueError):
    """A webhook delivery that must not be trusted: `reason` is `malformed` (no usable
    `X-Layers-Signature`), `stale` (its `t` is too far from now) or `mismatch` (no `v1`
    verifies with any of the secrets)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
