"""Each /v1 route's endpoint class, declared here once: it names the route's rate-limit bucket
(`X-RateLimit-Endpoint-Class`), and whether its requests count against the organization's
daily write cap. `check` refuses an app with a /v1 route that is not declared, or a
declaration with no route; api/openapi.py writes each operation's class into the OpenAPI
document, with the rate-limit headers of its answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from shared.tenancy.tiers import EndpointClass

_READ, _WRITE, _LONG = (
    EndpointClass.READ_LIGHT,
    EndpointClass.WRITE_LIGHT,
    EndpointClass.LONG_RUNNING,
)

# read-light: every GET. write-light: the calls that change rows and enqueue at most a task
# (publish-now too: its upload is a worker's, after the cancel window). long-running: the
# content upload, and the two calls that send a delivery to a receiver (ping, replay).
ROUTE_CLASSES: Final[Mapping[tuple[str, str], EndpointClass]] = MappingProxyType(
    {
        ("POST", "/v1/projects/{projectId}/content/upload"): _LONG,
        ("GET", "/v1/content/{containerId}"): _READ,
        ("GET", "/v1/projects/{projectId}/social-accounts"): _READ,
        ("POST", "/v1/content/{containerId}/schedule"): _WRITE,
        ("POST", "/v1/content/{containerId}/publish"): _WRITE,
        ("GET", "/v1/scheduled-posts/{id}"): _READ,
        ("GET", "/v1/projects/{projectId}/scheduled-posts"): _READ,
        ("POST", "/v1/scheduled-posts/{id}/reschedule"): _WRITE,
        ("DELETE", "/v1/scheduled-posts/{id}"): _WRITE,
        ("GET", "/v1/projects/{projectId}/approval-policy"): _READ,
        ("PUT", "/v1/projects/{projectId}/approval-policy"): _WRITE,
        ("POST", "/v1/content/{containerId}/approve"): _WRITE,
        ("POST", "/v1/content/{containerId}/reject"): _WRITE,
        ("GET", "/v1/content/{containerId}/schedule-intents"): _READ,
        ("GET", "/v1/schedule-intents/{intentId}"): _READ,
        ("DELETE", "/v1/schedule-intents/{intentId}"): _WRITE,
        ("POST", "/v1/webhook-endpoints"): _WRITE,
        ("GET", "/v1/webhook-endpoints"): _READ,
        ("GET", "/v1/webhook-endpoints/{endpointId}"): _READ,
        ("PATCH", "/v1/webhook-endpoints/{endpointId}"): _WRITE,
        ("POST", "/v1/webhook-endpoints/{endpointId}/rotate-secret"): _WRITE,
        ("POST", "/v1/webhook-endpoints/{endpointId}/ping"): _LONG,
        ("GET", "/v1/webhook-endpoints/{endpointId}/deliveries"): _READ,
        ("POST", "/v1/webhook-deliveries/{deliveryId}/replay"): _LONG,
    }
)


def class_of(request: Request) -> EndpointClass:
    """The class of the route serving `request` (HEAD is served, and counted, as GET)."""
    route = request.scope["route"]
    return ROUTE_CLASSES[(request.method, route.path)]


def v1_routes(routers: Iterable[APIRouter]) -> list[tuple[str, str]]:
    """(method, path) of every /v1 operation the routers serve."""
    return [
        (method, route.path)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in sorted(route.methods or ())
    ]


def check(routers: Iterable[APIRouter]) -> None:
    """Refuse to serve a /v1 route without exactly one declared class."""
    served = v1_routes(routers)
    undeclared = sorted(set(served) - set(ROUTE_CLASSES))
    unserved = sorted(set(ROUTE_CLASSES) - set(served))
    twice = sorted({op for op in served if served.count(op) > 1})
    if undeclared or unserved or twice:
        raise RuntimeError(
            "every /v1 route is declared once in api/endpoint_classes.py ROUTE_CLASSES: "
            f"undeclared {undeclared}, declared but not served {unserved}, served twice {twice}"
        )
