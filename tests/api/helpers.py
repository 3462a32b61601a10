"""What the API tests share: table and row counts, broker messages, posts driven to a state,
the endpoint table, and the builders of the validation tables' requests."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient

from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.publishing import posts
from shared.publishing.posts import ClaimResult
from tests.checks import post_row as _row
from tests.factories import (
    TenantFixture,
    at,
    blocked_intent,
    pending_upload,
    schedule,
    upload,
)

ALL_SCOPES = ("publish:read", "publish:write", "content:read", "content:write", "social:read")
POST_FIELDS = {
    "id",
    "containerId",
    "socialAccountId",
    "platform",
    "mode",
    "status",
    "scheduledFor",
    "attemptedAt",
    "publishedAt",
    "canceledAt",
    "externalId",
    "externalUrl",
    "lastError",
    "createdAt",
    "updatedAt",
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID_ID = re.compile(
    r"^(?P<prefix>[a-z]+)_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
MEDIA = [{"url": "https://cdn.example.com/clip.mp4"}]


def _sans_request_id(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    body["error"].pop("requestId")
    return body


def _broker_messages() -> list[dict[str, Any]]:
    """The publish tasks waiting in the Redis broker's `publishing` queue."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return [json.loads(raw) for raw in client.lrange("publishing", 0, -1)]
    finally:
        client.close()


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _cancel(
    client: TestClient, tenant: TenantFixture, post_id: str, body: Any = None, **headers: str
) -> httpx.Response:
    return client.request(
        "DELETE", f"/v1/scheduled-posts/{post_id}", headers={**tenant.headers, **headers}, json=body
    )


def _drive(post_id: str, to: str) -> None:
    """Move a queued post the way a worker does, one transition per transaction.

    `to`: "publishing" (claimed), "uploading" (claimed, upload started), "published" or
    "draft" (uploaded; the post's mode decides which), "failed".
    """
    row = _row(post_id)
    token, owner, lease = row.dispatch_version, "w1", timedelta(minutes=2)
    now = max(utcnow(), row.scheduled_for)  # a claim before scheduledFor is refused as early
    with transaction() as tx:
        claimed = posts.claim(tx.session, post_id, token, owner, now=now, lease=lease)
        assert claimed.result == ClaimResult.CLAIMED
    if to == "publishing":
        return
    if to == "failed":
        with transaction() as tx:
            assert posts.record_failed(
                tx.session,
                post_id,
                token,
                code="PLATFORM_ERROR",
                message="no",
                platform_code="400",
                now=now,
            )
        return
    with transaction() as tx:
        assert posts.begin_upload(tx.session, post_id, token, owner, now=now, lease=lease)
    if to == "uploading":
        return
    with transaction() as tx:
        assert posts.record_uploaded(
            tx.session, post_id, external_id="ext_1", external_url="https://tt.example/1", now=now
        )


def _post_in(client: TestClient, tenant: TenantFixture, state: str) -> str:
    """A scheduled post of `tenant` in `state`; returns its id."""
    container = upload(client, tenant)
    mode = "draft" if state == "draft" else "publish"
    post_id = str(schedule(client, tenant, container, at(120), mode=mode)[0]["id"])
    if state == "canceled":
        assert _cancel(client, tenant, post_id).status_code == 200
    elif state != "queued":
        _drive(post_id, state)
    assert _row(post_id).status == {"uploading": "publishing"}.get(state, state)
    return post_id


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    template: str  # `{id}` is the one path parameter
    scope: str
    id_kind: str  # "project" | "container" | "post"
    ok: int
    mutation: bool

    def url(self, id_: str) -> str:
        return self.template.format(id=id_)


def _ep(name: str, method: str, path: str, scope: str, kind: str, ok: int = 200) -> Endpoint:
    return Endpoint(name, method, f"/v1{path}", scope, kind, ok, mutation=method != "GET")


ENDPOINTS = [
    _ep("upload", "POST", "/projects/{id}/content/upload", "content:write", "project", 201),
    _ep("get_content", "GET", "/content/{id}", "content:read", "container"),
    _ep("list_accounts", "GET", "/projects/{id}/social-accounts", "social:read", "project"),
    _ep("schedule", "POST", "/content/{id}/schedule", "publish:write", "container", 201),
    _ep("publish", "POST", "/content/{id}/publish", "publish:write", "container", 201),
    _ep("get_post", "GET", "/scheduled-posts/{id}", "publish:read", "post"),
    _ep("list_posts", "GET", "/projects/{id}/scheduled-posts", "publish:read", "project"),
    _ep("reschedule", "POST", "/scheduled-posts/{id}/reschedule", "publish:write", "post"),
    _ep("cancel", "DELETE", "/scheduled-posts/{id}", "publish:write", "post"),
    _ep("get_policy", "GET", "/projects/{id}/approval-policy", "content:read", "project"),
    _ep("put_policy", "PUT", "/projects/{id}/approval-policy", "content:write", "project"),
    _ep("approve", "POST", "/content/{id}/approve", "content:write", "pending"),
    _ep("reject", "POST", "/content/{id}/reject", "content:write", "pending"),
    _ep("list_intents", "GET", "/content/{id}/schedule-intents", "publish:read", "container"),
    _ep("get_intent", "GET", "/schedule-intents/{id}", "publish:read", "intent"),
    _ep("cancel_intent", "DELETE", "/schedule-intents/{id}", "publish:write", "intent"),
]
BY_NAME = {e.name: e for e in ENDPOINTS}
PREFIX = {"project": "prj", "container": "cnt", "pending": "cnt", "post": "sp", "intent": "si"}


def _body(ep: Endpoint, tenant: TenantFixture) -> dict[str, Any] | None:
    """A valid body for `ep` on behalf of `tenant`."""
    target = [{"socialAccountId": tenant.accounts["tiktok"]}]
    bodies: dict[str, dict[str, Any]] = {
        "upload": {"caption": "hello", "media": MEDIA},
        "schedule": {"scheduledFor": at(3600), "targets": target},
        "publish": {"targets": target},
        "reschedule": {"scheduledFor": at(7200)},
        "cancel": {"reason": "legal review"},
        "put_policy": {"requiresApproval": False, "firstNPostsBlocked": 0},
        "approve": {"reason": "looks right"},
        "reject": {"reason": "off brand"},
        "cancel_intent": {"reason": "not this week"},
    }
    return bodies.get(ep.name)


def _own_id(client: TestClient, ep: Endpoint, tenant: TenantFixture) -> str:
    """A real id of `tenant` for `ep`; mutations on posts get a fresh queued post each time,
    decisions a fresh container awaiting approval, intents a fresh blocked one."""
    return own_id(client, ep.id_kind, tenant)


def own_id(client: TestClient, kind: str, tenant: TenantFixture) -> str:
    """A fresh real id of this kind in `tenant`."""
    if kind == "project":
        return tenant.project_id
    if kind in ("pending", "intent"):
        pending = pending_upload(client, tenant)
        if kind == "pending":
            return pending
        return str(blocked_intent(client, tenant, pending, at(600), None)["id"])
    container = upload(client, tenant)
    if kind == "container":
        return container
    return str(schedule(client, tenant, container, at(600))[0]["id"])


def _call(
    client: TestClient, ep: Endpoint, id_: str, headers: dict[str, str], tenant: TenantFixture
) -> httpx.Response:
    return client.request(ep.method, ep.url(id_), headers=headers, json=_body(ep, tenant))


@dataclass
class Ctx:
    tenant: TenantFixture
    other: TenantFixture
    container: str
    post: str


Kwargs = Callable[[Ctx], dict[str, Any]]
CANCEL = "/v1/scheduled-posts/{post}"
SCHEDULE = "/v1/content/{container}/schedule"
PUBLISH = "/v1/content/{container}/publish"
UPLOAD = "/v1/projects/{project}/content/upload"
RESCHEDULE = "/v1/scheduled-posts/{post}/reschedule"
POSTS = "/v1/projects/{project}/scheduled-posts"
ACCOUNTS = "/v1/projects/{project}/social-accounts"


def _sched(ctx: Ctx, **body: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scheduledFor": at(600),
        "targets": [{"socialAccountId": ctx.tenant.accounts["tiktok"]}],
    }
    return {"json": {**base, **body}}


def _target(ctx: Ctx, **fields: Any) -> dict[str, Any]:
    return _sched(ctx, targets=[{"socialAccountId": ctx.tenant.accounts["tiktok"], **fields}])


def _up(**body: Any) -> dict[str, Any]:
    return {"json": {"caption": "hi", "media": MEDIA, **body}}


def _media(n: int) -> list[dict[str, str]]:
    return [{"url": f"https://cdn.example.com/{i}.jpg"} for i in range(n)]


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _json(body: Any) -> Kwargs:
    return lambda _: {"json": body}


def _query(**params: Any) -> Kwargs:
    return lambda _: {"params": params}


def _sa() -> str:
    return f"sa_{uuid.uuid4()}"


def _s(**body: Any) -> Kwargs:
    """A schedule body with these fields replaced (values fixed now, not per request)."""
    return lambda c: _sched(c, **body)


def _t(**fields: Any) -> Kwargs:
    """A schedule body whose one target has these extra fields."""
    return lambda c: _target(c, **fields)


def _send(
    client: TestClient, ctx: Ctx, method: str, template: str, kwargs: dict[str, Any]
) -> httpx.Response:
    url = template.format(post=ctx.post, container=ctx.container, project=ctx.tenant.project_id)
    headers = {**ctx.tenant.headers, **kwargs.pop("headers", {})}
    return client.request(method, url, headers=headers, **kwargs)
