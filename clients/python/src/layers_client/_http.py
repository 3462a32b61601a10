"""The transport under every method: one request of the operations table, its retries, and
the answer turned into a model or an error.

Retries (at most `max_retries` after the first attempt), with exponential backoff and full
jitter (a delay drawn from [0, min(cap, base * 2**n)]):

- `429 RATE_LIMITED` always, and `503 UNAVAILABLE` where doing it twice is harmless (below:
  a 503 may come after the work committed), waiting at least their `Retry-After`; a
  Retry-After longer than `max_retry_after` (a day's cap, hours away) is raised at once;
- transport failures: connect errors and timeouts always; failures after the request may
  have left (read timeouts, a dropped connection) only where doing it twice is harmless:
  reads, PUT, PATCH, DELETE, and the POSTs the API deduplicates by the Idempotency-Key
  the client sends (the same key on every attempt of one call);
- never another 4xx, nor a 500.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from layers_client._version import __version__
from layers_client.errors import ERROR_CLASSES, LayersConnectionError, LayersError
from layers_client.operations import NOT_IDEMPOTENT, OPERATIONS

T = TypeVar("T")

USER_AGENT = f"layers-client-python/{__version__}"

# Nothing reached the server: safe to send again whatever the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Worth another attempt: the network or the server's connection, not the caller's request.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("retry settings must not be negative")


@dataclass(frozen=True)
class Answer:
    """What the last attempt of a call got. `earlier_attempt_unknown`: an earlier attempt of
    this call may have done its work without the client learning it (its answer was lost, or
    it was a 503), which is what tells a retried cancel's 409 from a real one."""

    status: int
    body: Any
    headers: httpx.Headers
    earlier_attempt_unknown: bool

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def request_id(self) -> str | None:
        value: str | None = self.headers.get("X-Request-Id")
        return value


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds: delta-seconds or an HTTP date; None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_of(answer: Answer) -> LayersError:
    """The exception for an error answer: by the envelope's code, or LayersError with code
    HTTP_ERROR for a body that is not the envelope (a proxy's error page)."""
    body = answer.body if isinstance(answer.body, Mapping) else {}
    envelope = body.get("error")
    retry_after = retry_after_s(answer.headers.get("Retry-After"))
    if isinstance(envelope, Mapping) and isinstance(envelope.get("code"), str):
        code: str = envelope["code"]
        details = envelope.get("details")
        return ERROR_CLASSES.get(code, LayersError)(
            str(envelope.get("message") or code),
            code=code,
            status=answer.status,
            request_id=envelope.get("requestId") or answer.request_id,
            details=details if isinstance(details, Mapping) else {},
            retry_after=retry_after,
        )
    return LayersError(
        f"HTTP {answer.status} without the API's error body",
        code="HTTP_ERROR",
        status=answer.status,
        request_id=answer.request_id,
        retry_after=retry_after,
    )


class Transport:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: httpx.Timeout,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required (lp_live_… or lp_test_…)")
        self.retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._client = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def backoff(self, retry: int) -> float:
        """The delay before retry number `retry` (0 for the first): full jitter."""
        ceiling = min(self.retry.backoff_cap, self.retry.backoff_base * 2**retry)
        return self._rng.uniform(0, ceiling)

    def send(
        self,
        op_id: str,
        *,
        path: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        retry_unavailable: bool = True,
    ) -> Answer:
        """One call of the operation `op_id`, retried as the module says; the last answer,
        whatever its status. Transport failures that outlast the retries raise
        LayersConnectionError."""
        op = OPERATIONS[op_id]
        url = op.path.format_map({k: _segment(k, v) for k, v in (path or {}).items()})
        headers = dict(self._headers)
        if op.method == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        query = {k: v for k, v in (params or {}).items() if v is not None}
        twice_is_harmless = op_id not in NOT_IDEMPOTENT
        retryable = {429, 503} if retry_unavailable and twice_is_harmless else {429}
        unknown = False
        retries = 0
        while True:
            try:
                response = self._client.request(
                    op.method, url, params=query, json=json, headers=headers
                )
            except httpx.TransportError as exc:
                sent = not isinstance(exc, _NOT_SENT)
                again = isinstance(exc, _TRANSIENT) and (twice_is_harmless or not sent)
                if not again or retries >= self.retry.max_retries:
                    raise LayersConnectionError(
                        f"{op.method} {url}: {type(exc).__name__}: {exc}",
                        maybe_sent=sent or unknown,
                    ) from exc
                unknown = unknown or sent
                delay = self.backoff(retries)
            else:
                answer = Answer(response.status_code, _json(response), response.headers, unknown)
                if answer.status not in retryable or retries >= self.retry.max_retries:
                    return answer
                wait = retry_after_s(response.headers.get("Retry-After"))
                if wait is not None and wait > self.retry.max_retry_after:
                    return answer
                # A 429 did nothing; a 503 may have failed after its commit.
                unknown = unknown or answer.status == 503
                delay = max(wait or 0.0, self.backoff(retries))
            self._sleep(delay)
            retries += 1

    def call(self, parse: Callable[[Any, str | None], T], op_id: str, **kw: Any) -> T:
        """`send`, then the answer parsed by `parse(body, request_id)` when it is a 2xx, and
        raised as its error otherwise."""
        return result(self.send(op_id, **kw), parse)


def result(answer: Answer, parse: Callable[[Any, str | None], T]) -> T:
    if not answer.ok:
        raise error_of(answer)
    try:
        return parse(answer.body, answer.request_id)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LayersError(
            f"The API's answer is not of the expected shape ({type(exc).__name__}: {exc})",
            code="INVALID_RESPONSE",
            status=answer.status,
            request_id=answer.request_id,
        ) from exc


def _segment(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return quote(value, safe="")


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
