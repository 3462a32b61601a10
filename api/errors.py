"""Every failure as the envelope `{"error": {code, message, requestId, details}}`: the
handlers FastAPI calls, and validation issues in wire paths. Each code's documented shape is
in api/schemas.py (`ERROR_KINDS`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from api.presenters import json_response
from shared.kit import logs
from shared.kit.errors import PublisherError

log = logging.getLogger("publisher.api")


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
            "requestId": logs.request_id.get() or "",
            "details": details or {},
        }
    }
    return json_response(body, status, headers)


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
