"""One POST of a delivery to its receiver, bounded in time. In production the receiver's
name is resolved here, every address checked public, and that very address connected to
(the TLS name is still the URL's), so a name that changes between check and connect cannot
send a delivery into private space."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.kit.netcheck import NotPublic, resolve_public

USER_AGENT = "publisher-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What the receiver said: its status, or why there was none; and how long it took."""

    status_code: int | None
    error: str | None
    duration_ms: int
    refused: bool = False  # not sent at all: the host is not public

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client  # noqa: PLW0603 - one pooled client per process
    if _client is None:
        # Redirects are not followed: the endpoint is the URL registered, nowhere else.
        _client = httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})
    return _client


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, public_only: bool
) -> Answer:
    """POST `body` to `url` within `timeout` seconds in all (connect, send, answer)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    target, extensions, send_headers = url, {}, dict(headers)
    if public_only:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = resolve_public(host, port)
        except NotPublic as exc:
            return Answer(None, str(exc), took(), refused=True)
        literal = f"[{address}]" if ":" in address else address
        target = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
        send_headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        extensions = {"sni_hostname": host}
    try:
        # Only the status matters: the receiver's body is never read, so a large or endless
        # one costs nothing; each phase (connect, send, the answer's head) has `timeout`.
        with _http().stream(
            "POST",
            target,
            content=body,
            headers=send_headers,
            timeout=httpx.Timeout(timeout),
            extensions=extensions,
        ) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return Answer(None, f"no answer within {timeout:g}s", took())
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:500], took())
    return Answer(status, None, took())
