"""The FastAPI application: thin edges over `shared/`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import text

from api import endpoint_classes, errors, middleware
from api.presenters import json_response
from api.ratelimit import RateLimiter, limiter_of
from api.routes import content, scheduled_posts, social_accounts, webhooks
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
    def openapi(self) -> dict[str, Any]:
        # Generated once, on first ask; each operation's endpoint class written in then.
        if self.openapi_schema is None:
            endpoint_classes.document(super().openapi())
        return super().openapi()


def _ready() -> Response:
    """Readiness: the database and Redis both answer."""
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
            "race-safe cancel: a 200 cancel means the post never reaches the platform."
        ),
        lifespan=_lifespan,
    )
    routers = [module.router for module in (content, social_accounts, scheduled_posts, webhooks)]
    endpoint_classes.check(routers)
    # Its own Redis client per app; every app of a deployment shares the buckets in Redis.
    app.state.limiter = RateLimiter(get_settings().redis_url)
    errors.install(app, lambda: [*app.routes, *(r for router in routers for r in router.routes)])
    app.add_middleware(middleware.EdgeMiddleware)
    for router in routers:
        app.include_router(router)
    app.add_api_route(
        "/healthz",
        lambda: json_response({"status": "ok"}),
        methods=["GET"],
        tags=["health"],
        summary="The process is up",
    )
    app.add_api_route(
        "/readyz",
        _ready,
        methods=["GET"],
        tags=["health"],
        summary="The database and Redis are reachable",
    )
    return app
