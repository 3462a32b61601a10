"""Platform adapters and the one place platform errors are classified."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True)
class UploadPayload:
    """What goes to the platform: built from the post, its container and account."""

    account_id: str
    platform: str
    mode: str
    caption: str
    media: list[dict[str, Any]]
    first_comment: str | None


@dataclass(frozen=True)
class Uploaded:
    external_id: str
    external_url: str | None


@dataclass(frozen=True)
class Accepted:
    """The platform took the post and will complete it on its own; `handle` asks about it."""

    handle: str


class CompletionState(StrEnum):
    PENDING = "pending"  # still processing (or in moderation)
    PUBLISHED = "published"
    DRAFT = "draft"  # delivered to the creator's inbox
    FAILED = "failed"


@dataclass(frozen=True)
class Completion:
    """What the platform says of a post it accepted."""

    state: CompletionState
    external_id: str | None = None
    external_url: str | None = None
    reason: str | None = None  # the platform's own, for FAILED
    complete: bool = False  # PENDING, but processing is done (moderation may follow)


@dataclass(frozen=True)
class Quota:
    """An account's publishing quota as the platform reported it before the upload."""

    usage: int
    total: int


@dataclass(frozen=True)
class Preparation:
    """What the reversible work before the point of no return made: the platform's handle
    for the post (Instagram's container id; None where none is needed) and the quota read."""

    handle: str | None = None
    quota: Quota | None = None


@dataclass(frozen=True)
class Refreshed:
    """A refreshed access token (and refresh token, where the platform rotates them)."""

    access_token: str
    refresh_token: str | None
    expires_in: float


class PlatformError(Exception):
    """A failed platform call, classified.

    transient: worth retrying (the same call, or the same step).
    ambiguous: the platform may have acted (lost response, timeout after sending): resolve
    by looking the post up, never by guessing.
    new_handle: the handle is spent (an expired or failed container): prepare a new one.
    token_invalid: the account's token no longer works; the user must reconnect.
    failure_code: the post's `lastError.code` if this ends it (PLATFORM_ERROR if unset).
    unavailable: the platform was not there to answer (unreachable, 5xx, rate limited), as
    opposed to an answer about this post: a post it keeps failing waits for it.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        ambiguous: bool = False,
        retry_after: float | None = None,
        platform_code: str | None = None,
        status: int | None = None,
        new_handle: bool = False,
        token_invalid: bool = False,
        failure_code: str | None = None,
        unavailable: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.platform_code = platform_code
        self.status = status
        self.new_handle = new_handle
        self.token_invalid = token_invalid
        self.failure_code = failure_code
        self.unavailable = unavailable


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _platform_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


def classify_response(response: httpx.Response) -> PlatformError:
    """429, 408 and 5xx are transient; other 4xx are permanent. 502/504/500 may hide a success."""
    status = response.status_code
    code = _platform_code(response)
    message = f"platform answered {status}" + (f" ({code})" if code else "")
    if status == 429:
        return PlatformError(
            message,
            transient=True,
            retry_after=_retry_after(response),
            platform_code=code,
            status=status,
            unavailable=True,
        )
    if status == 408 or status >= 500:
        return PlatformError(
            message,
            transient=True,
            # 408 and 503 mean "not processed"; a 500, 502 or 504 may come after the post
            # was made.
            ambiguous=status >= 500 and status != 503,
            retry_after=_retry_after(response),
            platform_code=code,
            status=status,
            unavailable=True,
        )
    return PlatformError(message, transient=False, platform_code=code, status=status)


def classify_exception(exc: httpx.HTTPError) -> PlatformError:
    """A request that never connected did nothing; one that failed after sending may have."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return PlatformError(
        f"platform unreachable: {type(exc).__name__}",
        transient=True,
        ambiguous=not never_sent,
        unavailable=True,
    )


# Graph error codes (PLATFORMS.md): rate limits, retried later; the token; spent containers.
GRAPH_RATE_LIMIT_CODES: Final = frozenset({4, 17, 32, 613, 80002})
GRAPH_TOKEN_INVALID: Final = 190
GRAPH_NOT_READY: Final = 9007  # subcode 2207027: published before FINISHED
GRAPH_QUOTA_SUBCODE: Final = 2207042
GRAPH_SPENT_CONTAINER_SUBCODES: Final = frozenset({2207020, 2207032, 2207053})


def _no_platform_body(response: httpx.Response, expected: str) -> PlatformError:
    """An answer without the platform's error body: an edge's 502/504 or a cut answer, so the
    call may have landed (unless it says it was not processed: 503, 429)."""
    status = response.status_code
    return PlatformError(
        f"platform answered {status} without {expected}",
        transient=True,
        ambiguous=status not in {503, 429},
        retry_after=_retry_after(response),
        status=status,
        unavailable=True,
    )


def classify_graph(response: httpx.Response) -> PlatformError:
    """A Graph API error answer, by its documented `code` / `error_subcode`.

    Rate limits and "not ready" retry later; 190 means the user must reconnect; an expired
    or failed container needs a new one; the quota is final; a server error (or an answer
    that is not Graph JSON at all, the sign of a lost response) may hide a success.
    """
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return _no_platform_body(response, "a Graph error")
    code = error.get("code")
    subcode = error.get("error_subcode")
    label = f"{code}/{subcode}" if subcode is not None else str(code)
    message = f"Instagram error {label}: {error.get('message', '')}"[:500]
    common: dict[str, Any] = {"platform_code": label, "status": status}
    if code in GRAPH_RATE_LIMIT_CODES:
        return PlatformError(
            message,
            transient=True,
            retry_after=_retry_after(response),
            unavailable=True,
            **common,
        )
    if code == GRAPH_TOKEN_INVALID:
        return PlatformError(
            message,
            transient=False,
            token_invalid=True,
            failure_code="ACCOUNT_REAUTH_REQUIRED",
            **common,
        )
    if code == GRAPH_NOT_READY:
        return PlatformError(message, transient=True, **common)
    if subcode == GRAPH_QUOTA_SUBCODE:
        return PlatformError(
            message, transient=False, failure_code="PLATFORM_QUOTA_EXHAUSTED", **common
        )
    if subcode in GRAPH_SPENT_CONTAINER_SUBCODES:
        return PlatformError(message, transient=True, new_handle=True, **common)
    if status >= 500 or error.get("is_transient") is True:
        return PlatformError(
            message, transient=True, ambiguous=status != 503, unavailable=True, **common
        )
    return PlatformError(message, transient=False, **common)


# TikTok error codes (PLATFORMS.md) that end a post, and those that mean the token is dead.
TIKTOK_TOKEN_INVALID: Final = "access_token_invalid"  # noqa: S105 - an error code
TIKTOK_TOKEN_CODES: Final = frozenset({TIKTOK_TOKEN_INVALID})


def dead_token_code(platform: str) -> str:
    """The code a platform answers an invalid or expired access token with."""
    return str(GRAPH_TOKEN_INVALID) if platform == "instagram" else TIKTOK_TOKEN_INVALID


TIKTOK_RATE_LIMIT: Final = "rate_limit_exceeded"


def classify_tiktok(response: httpx.Response) -> PlatformError:
    """A TikTok error answer, by its documented `error.code` (or an OAuth `error`).

    Rate limits retry later; an invalid access token, or a refresh token TikTok no longer
    takes (`invalid_grant`: used already, or expired), means the user must reconnect;
    `internal_error` may hide a success; everything else is final with TikTok's code.
    """
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        return _no_platform_body(response, "a TikTok error")
    error = body["error"]
    if isinstance(error, str):  # the OAuth endpoint's shape
        message = f"TikTok OAuth error {error}: {body.get('error_description', '')}"[:500]
        return PlatformError(
            message,
            transient=False,
            token_invalid=error == "invalid_grant",
            failure_code="ACCOUNT_REAUTH_REQUIRED" if error == "invalid_grant" else None,
            platform_code=error,
            status=status,
        )
    if not isinstance(error, dict):
        return _no_platform_body(response, "a TikTok error")
    code = str(error.get("code"))
    message = f"TikTok error {code}: {error.get('message', '')}"[:500]
    common: dict[str, Any] = {"platform_code": code, "status": status}
    if code == TIKTOK_RATE_LIMIT or status == 429:
        return PlatformError(
            message,
            transient=True,
            retry_after=_retry_after(response),
            unavailable=True,
            **common,
        )
    if code in TIKTOK_TOKEN_CODES:
        return PlatformError(
            message,
            transient=False,
            token_invalid=True,
            failure_code="ACCOUNT_REAUTH_REQUIRED",
            **common,
        )
    if status >= 500:
        return PlatformError(
            message, transient=True, ambiguous=status != 503, unavailable=True, **common
        )
    return PlatformError(message, transient=False, **common)


class PlatformAdapter(Protocol):
    """One account's platform, in the protocol's three steps (docs/design.md)."""

    # True if the platform dedupes publishes by our key (the sandbox): a late-landing retry
    # is then harmless. False for every real platform: an ambiguous publish is resolved only
    # after its call's timeout has passed, so it cannot still land behind our back.
    idempotent: bool

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        """Reversible work before the point of no return. `wait(s)` pauses and says whether
        the post is still ours; None once it is not. Raises PlatformError."""
        ...

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded | Accepted:
        """The irreversible call: the post, or the platform's handle to ask about it later.
        Raises PlatformError."""
        ...

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        """The post this publish made; None if the platform confirms there is none."""
        ...


@runtime_checkable
class CompletesLater(Protocol):
    """An adapter whose platform completes accepted posts on its own (TikTok)."""

    def completion(self, handle: str) -> Completion:
        """What became of the accepted post. Raises PlatformError."""
        ...


class SandboxAdapter:
    """Speaks the sandbox platform's protocol (`POST /v1/posts` with `Idempotency-Key`)."""

    idempotent = True

    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        """Nothing to make first: the sandbox takes the whole post in one call."""
        return Preparation()

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded:
        body = {
            "accountId": payload.account_id,
            "platform": payload.platform,
            "mode": payload.mode,
            "caption": payload.caption,
            "media": payload.media,
            "firstComment": payload.first_comment,
        }
        try:
            response = self.client.post(
                f"{self.base_url}/v1/posts", json=body, headers={"Idempotency-Key": key}
            )
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        if response.status_code in (200, 201):
            return _uploaded(response)
        raise classify_response(response)

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        try:
            response = self.client.get(f"{self.base_url}/v1/posts/{key}")
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        if response.status_code == 200:
            return _uploaded(response)
        if response.status_code == 404:
            return None
        error = classify_response(response)
        # The lookup itself failing says nothing about the post: always "can't tell yet".
        error.transient, error.ambiguous = True, True
        raise error


def _uploaded(response: httpx.Response) -> Uploaded:
    body = response.json()
    return Uploaded(str(body["externalId"]), body.get("externalUrl"))


_clients: dict[float, httpx.Client] = {}


def http_client(timeout_s: float) -> httpx.Client:
    """One pooled HTTP client per process (and timeout) for every platform call."""
    client = _clients.get(timeout_s)
    if client is None:
        client = _clients[timeout_s] = httpx.Client(timeout=timeout_s)
    return client
