"""The outermost layer of every request: its id, its body read in full within a bound and
a cap, HEAD answered as GET, the rate-limit headers, one access log line and the request
metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from shared.kit import logs, metrics
from shared.kit.settings import get_settings

log = logging.getLogger("publisher.api")
access = logging.getLogger("publisher.api.access")

REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")


def current_request_id() -> str:
    """The id of the request being served (set by the middleware)."""
    return logs.request_id.get() or ""


async def _read_capped(receive: Receive, cap: int, declared: int) -> Receive | None:
    """Read the whole body (at most `cap` bytes) before the app sees it; None when over.

    A chunked body has no Content-Length, so what arrives is counted, not what is claimed."""
    if declared > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            first: Message = message
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay


async def _no_body() -> Message:
    # What the 413 answer's app sees of a body it must not read.
    return {"type": "http.request", "body": b"", "more_body": False}


class EdgeMiddleware:
    """The outermost layer: echo the caller's `X-Request-Id` (if sane) or mint one, add the
    rate-limit headers, and record one access log line and the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        declared_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared_length = int(value)
        rid = given if _SAFE_REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex}"
        settings = get_settings()
        cap, body_timeout = settings.max_body_bytes, settings.body_timeout_s
        method = scope["method"]
        if method == "HEAD":
            # HEAD is GET without the body (RFC 9110): same status, headers and length.
            scope = {**scope, "method": "GET"}

        token = logs.request_id.set(rid)
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                # Rate-limit headers on every answer to a counted request, errors included.
                extra = scope.get("state", {}).get("rate_limit_headers") or {}
                present = {name.lower() for name, _ in headers}
                headers += [
                    (k.lower().encode(), v.encode())
                    for k, v in extra.items()
                    if k.lower().encode() not in present
                ]
                message["headers"] = headers
            elif message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            await send(message)

        try:
            try:
                # A body that stalls (a short Content-Length, a slow client) would hold this
                # connection forever; it is read in full here, within a bound, before the
                # route (and its thread) is ever involved.
                async with asyncio.timeout(body_timeout):
                    body_receive = await _read_capped(receive, cap, declared_length)
            except TimeoutError:
                stalled = error_response(
                    408,
                    "REQUEST_TIMEOUT",
                    f"The request body did not arrive within {body_timeout:g} s",
                    {"timeoutSeconds": body_timeout},
                    headers={"Connection": "close"},
                )
                await stalled(scope, receive, send_with_id)
            else:
                await self._answer(scope, body_receive, send_with_id, cap)
        except Exception:
            # Starlette answers unhandled errors outside every user middleware, so the 500
            # would lose its request id; answer it here, where the id is still known.
            if started:
                raise
            log.exception("unhandled error")
            await error_response(500, "INTERNAL", "Internal error")(scope, receive, send_with_id)
        finally:
            self._observe(scope, method, status, time.perf_counter() - began)
            logs.request_id.reset(token)

    async def _answer(
        self, scope: Scope, body_receive: Receive | None, send: Send, cap: int
    ) -> None:
        if body_receive is None:
            too_large = error_response(
                413,
                "PAYLOAD_TOO_LARGE",
                f"The request body is over {cap} bytes",
                {"maxBytes": cap},
                headers={"Connection": "close"},
            )
            await too_large(scope, _no_body, send)
        else:
            await self.app(scope, body_receive, send)

    @staticmethod
    def _observe(scope: Scope, method: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        # The route's template, never the raw path: ids would explode the label set.
        template = getattr(route, "path", None) or "unmatched"
        metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(template, method).observe(seconds)
        state = scope.get("state", {})
        access.info(
            "request",
            extra={
                "method": method,
                "route": template,
                "status": status,
                "durationMs": round(seconds * 1000, 2),
                "organizationId": state.get("organization_id"),
            },
        )
