"""Platform adapters and the one place platform errors are classified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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


class PlatformError(Exception):
    """A failed platform call, classified.

    transient: worth retrying under the same idempotency key.
    ambiguous: the platform may have acted (lost response, timeout after sending): resolve
    by looking the key up, never by guessing.
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
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.platform_code = platform_code
        self.status = status


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
        )
    return PlatformError(message, transient=False, platform_code=code, status=status)


def classify_exception(exc: httpx.HTTPError) -> PlatformError:
    """A request that never connected did nothing; one that failed after sending may have."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return PlatformError(
        f"platform unreachable: {type(exc).__name__}", transient=True, ambiguous=not never_sent
    )


class PlatformAdapter(Protocol):
    def upload(self, idempotency_key: str, payload: UploadPayload) -> Uploaded:
        """Create the post (or return the one this key already made); raises PlatformError."""
        ...

    def lookup(self, idempotency_key: str) -> Uploaded | None:
        """The post this key made, None if the platform confirms there is none."""
        ...


class SandboxAdapter:
    """Speaks the sandbox platform's protocol (`POST /v1/posts` with `Idempotency-Key`)."""

    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    def upload(self, idempotency_key: str, payload: UploadPayload) -> Uploaded:
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
                f"{self.base_url}/v1/posts", json=body, headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        if response.status_code in (200, 201):
            return _uploaded(response)
        raise classify_response(response)

    def lookup(self, idempotency_key: str) -> Uploaded | None:
        try:
            response = self.client.get(f"{self.base_url}/v1/posts/{idempotency_key}")
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


def adapter_for(adapter: str, base_url: str, timeout_s: float) -> PlatformAdapter:
    """The adapter a social account is bound to; one pooled HTTP client per process."""
    if adapter != "sandbox":
        raise ValueError(f"unknown platform adapter {adapter!r}")
    client = _clients.get(timeout_s)
    if client is None:
        client = _clients[timeout_s] = httpx.Client(timeout=timeout_s)
    return SandboxAdapter(base_url, client)
