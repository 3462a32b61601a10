"""The error envelope and the request id every response carries."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs, metrics
from shared.errors import PublisherError
from shared.settings import get_settings

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


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """`{"error": {code, message, requestId, details}}` with the given status."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "requestId": current_request_id(),
            "details": details or {},
        }
    }
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _path(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_issues(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic errors as `{path, message}`, paths in wire names (`targets[0].socialAccountId`)."""
    issues = []
    for err in errors:
        # A body that is not JSON at all: its loc is a character offset, not a field.
        loc = ("body",) if err.get("type") == "json_invalid" else tuple(err.get("loc", ()))
        # Union members add their type name to the location; it means nothing to callers.
        loc = tuple(
            p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "str")))
        )
        issues.append({"path": _path(loc), "message": str(err.get("msg", "Invalid value"))})
    return issues


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """What a path allows, across every route on it (RFC 9110's `Allow` of a 405); HEAD
    wherever GET is, since the edge answers HEAD as GET without the body."""
    methods: set[str] = set()
    for route in routes:
        # A path match is PARTIAL or FULL whatever the method; NONE is another path.
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app: FastAPI, routes: Callable[[], Iterable[BaseRoute]]) -> None:
    """Turn every failure into the envelope; nothing internal leaks to the caller.

    `routes` lists every route of the app, those of included routers too (the app's own
    list holds a router as one opaque entry), for the `Allow` header of a 405."""

    @app.exception_handler(PublisherError)
    async def _publisher_error(_: Request, exc: PublisherError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        issues = validation_issues(list(exc.errors()))
        return error_response(422, "VALIDATION", "Invalid request", {"issues": issues})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(404, "NOT_FOUND", "Not found")
        if exc.status_code == 400:
            # A body that is not even parseable (bad bytes, broken encoding) is bad input.
            issue = {"path": "body", "message": str(exc.detail)}
            return error_response(422, "VALIDATION", "Invalid request", {"issues": [issue]})
        if exc.status_code == 405:
            return error_response(
                405,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
                headers={"Allow": ", ".join(allowed_methods(routes(), request.scope))},
            )
        return error_response(exc.status_code, "HTTP_ERROR", str(exc.detail))

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return error_response(
            503,
            "UNAVAILABLE",
            "The service is temporarily unavailable",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> Response:
        if exc.connection_invalidated:
            return error_response(
                503,
                "UNAVAILABLE",
                "The service is temporarily unavailable",
                headers={"Retry-After": "1"},
            )
        log.exception("database error")
        return error_response(500, "INTERNAL", "Internal error")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL", "Internal error")


class _ErrorBodyDoc(BaseModel):
    code: str
    message: str
    requestId: str
    details: dict[str, Any] = Field(
        description="Extra context; for VALIDATION, `issues`: a list of {path, message}."
    )


class ErrorEnvelopeDoc(BaseModel):
    """`{"error": {code, message, requestId, details}}` on every 4xx/5xx."""

    error: _ErrorBodyDoc
