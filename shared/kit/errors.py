"""The one error base: a stable `code`, an HTTP status, and details for the envelope."""

from __future__ import annotations

from typing import Any, ClassVar


class PublisherError(Exception):
    """Base of every error the API turns into `{"error": {code, message, requestId, details}}`."""

    code: ClassVar[str] = "INTERNAL"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.headers: dict[str, str] = headers or {}


class Unauthenticated(PublisherError):
    code = "UNAUTHENTICATED"
    status = 401


class ForbiddenScope(PublisherError):
    code = "FORBIDDEN_SCOPE"
    status = 403


class ApprovalRequired(PublisherError):
    """Publish-now of content still awaiting approval: nothing is saved."""

    code = "APPROVAL_REQUIRED"
    status = 403


class NotFound(PublisherError):
    code = "NOT_FOUND"
    status = 404


class Conflict(PublisherError):
    code = "CONFLICT"
    status = 409


class ContentRejected(PublisherError):
    """Content whose approval was refused: it is never scheduled."""

    code = "CONTENT_REJECTED"
    status = 409


class PlatformRefused(PublisherError):
    """A call the platform is known to refuse, the caller's to act on (reconnect the account):
    `details.platformCode` is the platform's own code."""

    code = "PLATFORM_ERROR"
    status = 409


class IdempotencyConflict(PublisherError):
    code = "IDEMPOTENCY_CONFLICT"
    status = 409


class Validation(PublisherError):
    code = "VALIDATION"
    status = 422

    def __init__(self, issues: list[dict[str, str]], message: str = "Invalid request") -> None:
        super().__init__(message, {"issues": issues})

    @classmethod
    def at(cls, path: str, message: str) -> Validation:
        """A single-issue validation error."""
        return cls([{"path": path, "message": message}], message)


class RateLimited(PublisherError):
    code = "RATE_LIMITED"
    status = 429


class Unavailable(PublisherError):
    code = "UNAVAILABLE"
    status = 503
