"""The FastAPI application: thin edges over `shared/`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import text
from starlette.routing import BaseRoute

from api import endpoint_classes, errors, middleware, openapi
from api.deps import Principal
from api.keycache import KeyCache
from api.presenters import json_response
from api.ratelimit import RateLimiter, limiter_of
from api.routes import content, scheduled_posts, social_accounts, webhooks
from api.schemas import Liveness, Readiness
from shared.kit import logs
from shared.kit.db import engine, init_engine
from shared.kit.settings import get_settings


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    logs.configure("api")
    init_engine("publisher.api")
    yield
    engine().dispose()
    limiter_of(app.state).close()


class _App(FastAPI):
    # Every route of the app, those of included routers too (the app's own list holds a
    # router as one opaque entry): set by `create_app`.
    every_route: Callable[[], list[BaseRoute]]

    def openapi(self) -> dict[str, Any]:
        # Generated once, on first ask, and finished then (api/openapi.py).
        if self.openapi_schema is None:
            openapi.document(super().openapi(), self.every_route())
        return super().openapi()


def _live() -> Response:
    """`{"status": "ok"}` while the process is up; it asks no dependency."""
    return json_response({"status": "ok"})


def _ready() -> Response:
    """`200` when PostgreSQL and Redis both answer, else `503`; `checks` says which failed."""
    import redis

    checks: dict[str, str] = {}
    try:
        with engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=2)
        client.ping()
        client.close()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


def create_app() -> FastAPI:
    """A fresh app with every route, the envelope and request ids installed."""
    app = _App(
        title="publisher",
        version="1.0.0",
        description=(
            "Schedules and publishes social-media posts (Layers publishing API v1) with a "
            "race-safe cancel: a 200 cancel means the post never reaches the platform.\n\n"
            'Every 4xx and 5xx answer is `{"error": {code, message, requestId, details}}`; '
            "each operation lists the codes each of its statuses can carry, and `details` is "
            "typed per code (`ErrorCode` lists them all). A method a path does not accept is "
            "`405 METHOD_NOT_ALLOWED` with an `Allow` header; `HEAD` is answered wherever "
            "`GET` is. operationIds and tags are stable: tags are the SDK namespaces."
        ),
        servers=[
            {
                "url": get_settings().public_api_url,
                "description": "This deployment (PUBLIC_API_URL)",
            }
        ],
        openapi_tags=openapi.TAGS,
        lifespan=_lifespan,
    )
    routers = [module.router for module in (content, social_accounts, scheduled_posts, webhooks)]
    endpoint_classes.check(routers)
    # Its own Redis client per app; every app of a deployment shares the buckets in Redis.
    app.state.limiter = RateLimiter(get_settings().redis_url)
    app.state.key_cache = KeyCache[Principal](app.state.limiter.client)
    app.every_route = lambda: [*app.routes, *(r for router in routers for r in router.routes)]
    errors.install(app, app.every_route)
    app.add_middleware(middleware.EdgeMiddleware)
    for router in routers:
        app.include_router(router)
    app.add_api_route(
        "/healthz",
        _live,
        methods=["GET"],
        tags=["health"],
        summary="The process is up",
        response_model=Liveness,
        operation_id="getLiveness",
    )
    app.add_api_route(
        "/readyz",
        _ready,
        methods=["GET"],
        tags=["health"],
        summary="The database and Redis are reachable",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
        operation_id="getReadiness",
    )
    return app
