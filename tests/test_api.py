"""The public API (docs/api.md), over HTTP on real PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError

from api.routes import scheduled_posts as routes
from shared import ids, posts
from shared.clock import utcnow
from shared.db import engine, transaction
from shared.keys import create_key, revoke_key
from shared.models import ContentContainer, Project, ScheduledPost
from shared.posts import ClaimResult
from shared.tenants import add_social_account
from tests.checks import envelope_error as _error
from tests.checks import issue_paths as _paths
from tests.factories import TenantFixture, at, make_tenant, schedule, upload

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


# --- helpers --------------------------------------------------------------------------------


def _sans_request_id(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    body["error"].pop("requestId")
    return body


def _count(table: str) -> int:
    with engine().connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def _counts() -> dict[str, int]:
    tables = ("content_containers", "scheduled_posts", "audit_log", "idempotency_keys")
    return {t: _count(t) for t in tables}


def _broker_messages() -> list[dict[str, Any]]:
    """The publish tasks waiting in the Redis broker's `publishing` queue."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return [json.loads(raw) for raw in client.lrange("publishing", 0, -1)]
    finally:
        client.close()


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _row(post_id: str) -> ScheduledPost:
    """The row behind a wire id (the same as its key unless the caller chose the id)."""
    with transaction() as tx:
        row = tx.session.scalars(
            select(ScheduledPost).where(ScheduledPost.public_id == post_id)
        ).one_or_none()
        assert row is not None
        return row


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
                code="PLATFORM_REJECTED",
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


# --- the endpoint table ---------------------------------------------------------------------


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
]
BY_NAME = {e.name: e for e in ENDPOINTS}
PREFIX = {"project": "prj", "container": "cnt", "post": "sp"}


def _body(ep: Endpoint, tenant: TenantFixture) -> dict[str, Any] | None:
    """A valid body for `ep` on behalf of `tenant`."""
    target = [{"socialAccountId": tenant.accounts["tiktok"]}]
    bodies: dict[str, dict[str, Any]] = {
        "upload": {"caption": "hello", "media": MEDIA},
        "schedule": {"scheduledFor": at(3600), "targets": target},
        "publish": {"targets": target},
        "reschedule": {"scheduledFor": at(7200)},
        "cancel": {"reason": "legal review"},
    }
    return bodies.get(ep.name)


def _own_id(client: TestClient, ep: Endpoint, tenant: TenantFixture) -> str:
    """A real id of `tenant` for `ep`; mutations on posts get a fresh queued post each time."""
    if ep.id_kind == "project":
        return tenant.project_id
    container = upload(client, tenant)
    if ep.id_kind == "container":
        return container
    return str(schedule(client, tenant, container, at(600))[0]["id"])


def _call(
    client: TestClient, ep: Endpoint, id_: str, headers: dict[str, str], tenant: TenantFixture
) -> httpx.Response:
    return client.request(ep.method, ep.url(id_), headers=headers, json=_body(ep, tenant))


# --- content --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "declared", "expected"),
    [
        ("https://cdn.example.com/clip.mp4", None, "video"),
        ("https://cdn.example.com/CLIP.MOV?sig=abc.jpg", None, "video"),
        ("https://cdn.example.com/a.m4v", None, "video"),
        ("https://cdn.example.com/a.webm#t=10", None, "video"),
        ("https://cdn.example.com/photo.jpg", None, "image"),
        ("https://cdn.example.com/clip.mp4.png", None, "image"),
        ("https://cdn.example.com/still.jpg", "video", "video"),
        ("https://cdn.example.com/clip.mp4", "image", "image"),
    ],
)
def test_upload_creates_a_container_and_infers_media_type(
    client: TestClient, tenant: TenantFixture, url: str, declared: str | None, expected: str
) -> None:
    media: dict[str, Any] = {"url": url} if declared is None else {"url": url, "type": declared}
    before = utcnow().replace(microsecond=0)
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=tenant.headers,
        json={"caption": "Launch day", "media": [media, {"url": "https://cdn.example.com/b.png"}]},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "projectId", "status", "caption", "media", "createdAt"}
    match = UUID_ID.match(body["id"])
    assert match and match["prefix"] == "cnt"
    assert body["projectId"] == tenant.project_id
    assert body["status"] == "completed"
    assert body["caption"] == "Launch day"
    assert body["media"] == [
        {"url": url, "type": expected},
        {"url": "https://cdn.example.com/b.png", "type": "image"},
    ]
    assert ISO_Z.match(body["createdAt"])
    assert before <= _parse(body["createdAt"]) <= utcnow()

    got = client.get(f"/v1/content/{body['id']}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json() == body
    assert _count("content_containers") == 1


# --- social accounts ------------------------------------------------------------------------


def test_list_social_accounts_and_platform_filter(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    r = client.get(url, headers=tenant.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "nextCursor"}
    assert body["nextCursor"] is None
    assert {a["id"] for a in body["items"]} == set(tenant.accounts.values())
    for account in body["items"]:
        assert set(account) == {"id", "projectId", "platform", "handle", "createdAt"}
        assert account["projectId"] == tenant.project_id
        assert tenant.accounts[account["platform"]] == account["id"]
        assert account["handle"]
        assert ISO_Z.match(account["createdAt"])

    for platform in ("tiktok", "instagram"):
        r = client.get(url, headers=tenant.headers, params={"platform": platform})
        assert r.status_code == 200
        assert [a["id"] for a in r.json()["items"]] == [tenant.accounts[platform]]

    assert _paths(client.get(url, headers=tenant.headers, params={"platform": "myspace"})) == [
        "platform"
    ]


def test_social_accounts_paginate_in_creation_order(client: TestClient) -> None:
    big = make_tenant("Big", extra_accounts=5)
    with engine().connect() as conn:
        expected = list(
            conn.execute(
                text(
                    "SELECT id FROM social_accounts WHERE project_id = :p ORDER BY created_at, id"
                ),
                {"p": big.project_id},
            ).scalars()
        )
    assert len(expected) == 7
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(
            f"/v1/projects/{big.project_id}/social-accounts", headers=big.headers, params=params
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected


# --- schedule and publish now ---------------------------------------------------------------


def test_schedule_creates_one_queued_post_per_target(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = upload(client, tenant)
    chosen = f"sp_{uuid.uuid4()}"
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={
            # An offset is accepted and answered in UTC with a Z.
            "scheduledFor": "2031-06-01T12:00:00+02:00",
            "targets": [
                {"socialAccountId": tenant.accounts["tiktok"]},
                {
                    "socialAccountId": tenant.accounts["instagram"],
                    "mode": "draft",
                    "scheduledPostId": chosen,
                    # The platform's caption limit, not the wire's 4000: see test_hardening.
                    "captionOverride": "c" * 2200,
                    "firstCommentOverride": "f" * 4000,
                },
            ],
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"items"}
    items = body["items"]
    assert len(items) == 2
    for item, platform, mode in zip(
        items, ("tiktok", "instagram"), ("publish", "draft"), strict=True
    ):
        assert set(item) == POST_FIELDS
        match = UUID_ID.match(item["id"])
        assert match and match["prefix"] == "sp"
        assert item["containerId"] == container
        assert item["socialAccountId"] == tenant.accounts[platform]
        assert item["platform"] == platform
        assert item["mode"] == mode
        assert item["status"] == "queued"
        assert item["scheduledFor"] == "2031-06-01T10:00:00Z"
        for absent in ("attemptedAt", "publishedAt", "canceledAt", "externalId", "externalUrl"):
            assert item[absent] is None
        assert item["lastError"] is None
        assert ISO_Z.match(item["createdAt"]) and ISO_Z.match(item["updatedAt"])
        got = client.get(f"/v1/scheduled-posts/{item['id']}", headers=tenant.headers)
        assert got.status_code == 200
        assert got.json() == item
    assert items[1]["id"] == chosen
    assert items[0]["id"] != chosen
    assert _count("scheduled_posts") == 2
    row = _row(chosen)
    assert (row.caption_override, row.first_comment_override) == ("c" * 2200, "f" * 4000)
    # A far-future post holds no broker message: the dispatcher sends it near its time.
    assert _broker_messages() == []


def test_schedule_accepts_fifty_targets_and_rejects_fifty_one(client: TestClient) -> None:
    big = make_tenant("Big", extra_accounts=49)
    accounts = [*big.accounts.values(), *big.extra_accounts]
    assert len(accounts) == 51
    container = upload(client, big)
    url = f"/v1/content/{container}/schedule"
    targets = [{"socialAccountId": a} for a in accounts]
    r = client.post(url, headers=big.headers, json={"scheduledFor": at(600), "targets": targets})
    assert _paths(r) == ["targets"]
    assert _count("scheduled_posts") == 0
    r = client.post(
        url, headers=big.headers, json={"scheduledFor": at(600), "targets": targets[:50]}
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["items"]) == 50
    assert _count("scheduled_posts") == 50


@pytest.mark.parametrize("endpoint", ["schedule", "publish"])
def test_one_bad_target_writes_nothing(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture, endpoint: str
) -> None:
    container = upload(client, tenant)
    targets = [
        {"socialAccountId": tenant.accounts["tiktok"]},
        {"socialAccountId": tenant.accounts["instagram"]},
        {"socialAccountId": other_tenant.accounts["tiktok"]},
    ]
    body: dict[str, Any] = {"targets": targets}
    if endpoint == "schedule":
        body["scheduledFor"] = at(600)
    before = _counts()
    r = client.post(f"/v1/content/{container}/{endpoint}", headers=tenant.headers, json=body)
    assert _paths(r) == ["targets[2].socialAccountId"]
    assert _counts() == before
    assert _broker_messages() == []


def test_schedule_rejects_an_account_of_another_project_of_the_same_org(
    client: TestClient, tenant: TenantFixture
) -> None:
    with transaction() as tx:
        project = Project(
            id=ids.new_id(ids.PROJECT), organization_id=tenant.organization_id, name="B"
        )
        tx.session.add(project)
        tx.session.flush()
        account = add_social_account(
            tx.session,
            tenant.organization_id,
            project.id,
            "tiktok",
            "b",
            base_url="http://127.0.0.1:8900",
        )
    container = upload(client, tenant)
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": at(600), "targets": [{"socialAccountId": account.id}]},
    )
    assert _paths(r) == ["targets[0].socialAccountId"]
    assert _count("scheduled_posts") == 0


def test_publish_now_is_due_in_30_seconds_and_sent_to_the_broker(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = upload(client, tenant)
    before = utcnow()
    r = client.post(
        f"/v1/content/{container}/publish",
        headers=tenant.headers,
        json={
            "targets": [
                {"socialAccountId": tenant.accounts["tiktok"]},
                {"socialAccountId": tenant.accounts["instagram"], "mode": "draft"},
            ]
        },
    )
    after = utcnow()
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["platform"] for i in items] == ["tiktok", "instagram"]
    assert [i["mode"] for i in items] == ["publish", "draft"]
    for item in items:
        assert set(item) == POST_FIELDS
        assert item["status"] == "queued"
        due = _parse(item["scheduledFor"])
        # At least the 30 s window, rounded up to the whole second the wire shows.
        assert before + timedelta(seconds=30) <= due <= after + timedelta(seconds=31)
        assert _row(item["id"]).scheduled_for == due

    messages = _broker_messages()
    assert len(messages) == 2
    by_id = {m["headers"]["id"]: m["headers"] for m in messages}
    for item in items:
        row = _row(item["id"])
        assert row.task_id in by_id
        headers = by_id[row.task_id]
        assert headers["task"] == "publishing.publish"
        assert item["id"] in headers["argsrepr"]
        assert abs(_parse(headers["eta"]) - row.scheduled_for) < timedelta(milliseconds=1)

    # The 30 s are the caller's window to cancel a mistaken publish.
    canceled = _cancel(client, tenant, items[0]["id"], {"reason": "wrong account"})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"


# --- reads ----------------------------------------------------------------------------------


def test_list_scheduled_posts_filters_and_order(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    container = upload(client, tenant)
    tiktok, insta = tenant.accounts["tiktok"], tenant.accounts["instagram"]
    a = schedule(client, tenant, container, "2031-01-01T00:00:00Z", [tiktok])[0]["id"]
    b = schedule(client, tenant, container, "2031-01-02T00:00:00Z", [insta])[0]["id"]
    c = schedule(client, tenant, container, "2031-01-03T00:00:00Z", [tiktok])[0]["id"]
    assert _cancel(client, tenant, b).status_code == 200
    # Another organization's posts never show up.
    schedule(client, other_tenant, upload(client, other_tenant), "2031-01-02T00:00:00Z")
    url = f"/v1/projects/{tenant.project_id}/scheduled-posts"

    def ids_for(params: Any) -> list[str]:
        r = client.get(url, headers=tenant.headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "nextCursor"}
        assert body["nextCursor"] is None
        for item in body["items"]:
            assert set(item) == POST_FIELDS
        return [i["id"] for i in body["items"]]

    day2 = "2031-01-02T00:00:00Z"
    assert ids_for({}) == [c, b, a]
    assert ids_for({"status": "canceled"}) == [b]
    assert ids_for({"status": "queued"}) == [c, a]
    assert ids_for([("status", "queued"), ("status", "canceled")]) == [c, b, a]
    assert ids_for({"status": "published"}) == []
    assert ids_for({"socialAccountId": tiktok}) == [c, a]
    assert ids_for({"socialAccountId": other_tenant.accounts["tiktok"]}) == []
    assert ids_for({"since": day2}) == [c, b]
    assert ids_for({"until": day2}) == [b, a]
    assert ids_for({"since": day2, "until": day2}) == [b]
    assert ids_for({"since": "2031-01-02T02:00:00+02:00", "until": day2}) == [b]
    assert ids_for({"since": "2031-01-02T00:00:01Z", "until": "2031-01-02T23:59:59Z"}) == []
    assert ids_for({"status": "queued", "since": day2, "socialAccountId": tiktok}) == [c]

    r = client.get(
        url, headers=tenant.headers, params={"since": "2031-01-03T00:00:00Z", "until": day2}
    )
    assert _paths(r) == ["since"]


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7, 100])
def test_scheduled_posts_paginate_without_gaps_or_duplicates(
    client: TestClient, tenant: TenantFixture, limit: int
) -> None:
    container = upload(client, tenant)
    both = [tenant.accounts["tiktok"], tenant.accounts["instagram"]]
    # Pairs share a scheduledFor, so pages split ties and the id must break them.
    schedule(client, tenant, container, "2031-01-01T00:00:00.250Z", both)
    schedule(client, tenant, container, "2031-01-02T00:00:00Z", both)
    schedule(client, tenant, container, "2031-01-03T00:00:00Z")
    schedule(client, tenant, container, "2031-01-04T00:00:00Z", both)
    with engine().connect() as conn:
        expected = list(
            conn.execute(
                text("SELECT id FROM scheduled_posts ORDER BY scheduled_for DESC, id DESC")
            ).scalars()
        )
    assert len(expected) == 7

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = client.get(
            f"/v1/projects/{tenant.project_id}/scheduled-posts",
            headers=tenant.headers,
            params=params,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["items"]) <= limit
        seen += [i["id"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(page["items"]) == limit
        assert pages < 10
    assert seen == expected
    assert pages == -(-7 // limit)


def test_scheduled_post_pages_honor_filters(client: TestClient, tenant: TenantFixture) -> None:
    container = upload(client, tenant)
    wanted = []
    for day in range(1, 7):
        post_id = schedule(client, tenant, container, f"2031-02-0{day}T00:00:00Z")[0]["id"]
        if day % 2:
            assert _cancel(client, tenant, post_id).status_code == 200
        else:
            wanted.append(post_id)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, "status": "queued"}
        if cursor:
            params["cursor"] = cursor
        r = client.get(
            f"/v1/projects/{tenant.project_id}/scheduled-posts",
            headers=tenant.headers,
            params=params,
        )
        assert r.status_code == 200, r.text
        seen += [i["id"] for i in r.json()["items"]]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(wanted))


# --- reschedule -----------------------------------------------------------------------------


def test_reschedule_moves_a_queued_post(client: TestClient, tenant: TenantFixture) -> None:
    container = upload(client, tenant)
    post = client.post(
        f"/v1/content/{container}/publish",
        headers=tenant.headers,
        json={"targets": [{"socialAccountId": tenant.accounts["tiktok"]}]},
    ).json()["items"][0]
    old = _row(post["id"])
    assert old.task_id is not None

    before = utcnow().replace(microsecond=0)
    r = client.post(
        f"/v1/scheduled-posts/{post['id']}/reschedule",
        headers=tenant.headers,
        json={"scheduledFor": "2031-03-01T09:30:00+01:00"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "status", "scheduledFor", "updatedAt"}
    assert body["id"] == post["id"]
    assert body["status"] == "queued"
    assert body["scheduledFor"] == "2031-03-01T08:30:00Z"
    assert ISO_Z.match(body["updatedAt"]) and _parse(body["updatedAt"]) >= before

    got = client.get(f"/v1/scheduled-posts/{post['id']}", headers=tenant.headers).json()
    assert got["scheduledFor"] == "2031-03-01T08:30:00Z"
    assert got["status"] == "queued"
    assert got["updatedAt"] == body["updatedAt"]
    row = _row(post["id"])
    # The old ETA task is disarmed by the new fencing token.
    assert row.dispatch_version == old.dispatch_version + 1
    assert row.task_id is None
    with engine().connect() as conn:
        actions = list(
            conn.execute(
                text("SELECT action FROM audit_log WHERE target_id = :t ORDER BY id"),
                {"t": post["id"]},
            ).scalars()
        )
    assert actions == ["scheduled_post.schedule", "scheduled_post.reschedule"]


@pytest.mark.parametrize(("ahead", "ok"), [(-60, False), (10, False), (60, True)])
def test_reschedule_must_be_30_seconds_ahead(
    client: TestClient, tenant: TenantFixture, ahead: int, ok: bool
) -> None:
    post_id = _post_in(client, tenant, "queued")
    original = _row(post_id).scheduled_for
    r = client.post(
        f"/v1/scheduled-posts/{post_id}/reschedule",
        headers=tenant.headers,
        json={"scheduledFor": at(ahead)},
    )
    if ok:
        assert r.status_code == 200, r.text
        assert _row(post_id).scheduled_for != original
    else:
        assert _paths(r) == ["scheduledFor"]
        assert _row(post_id).scheduled_for == original


@pytest.mark.parametrize(
    "state", ["publishing", "uploading", "published", "draft", "failed", "canceled"]
)
def test_reschedule_conflicts_unless_queued(
    client: TestClient, tenant: TenantFixture, state: str
) -> None:
    post_id = _post_in(client, tenant, state)
    before = _row(post_id)
    r = client.post(
        f"/v1/scheduled-posts/{post_id}/reschedule",
        headers=tenant.headers,
        json={"scheduledFor": at(3600)},
    )
    err = _error(r, 409, "CONFLICT")
    assert err["details"]["status"] == before.status
    after = _row(post_id)
    assert (after.status, after.scheduled_for, after.dispatch_version) == (
        before.status,
        before.scheduled_for,
        before.dispatch_version,
    )


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_keeps_the_post_visible_and_audits_the_reason(
    client: TestClient, tenant: TenantFixture
) -> None:
    post_id = _post_in(client, tenant, "queued")
    reason = "Brand asked us to hold - legal review pending."
    before = utcnow().replace(microsecond=0)
    r = _cancel(client, tenant, post_id, {"reason": reason}, **{"X-Request-Id": "req-cancel-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "status", "canceledAt"}
    assert body["id"] == post_id
    assert body["status"] == "canceled"
    assert ISO_Z.match(body["canceledAt"])
    assert before <= _parse(body["canceledAt"]) <= utcnow()

    got = client.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json()["status"] == "canceled"
    assert got.json()["canceledAt"] == body["canceledAt"]
    listed = client.get(
        f"/v1/projects/{tenant.project_id}/scheduled-posts", headers=tenant.headers
    ).json()["items"]
    assert [(i["id"], i["status"]) for i in listed] == [(post_id, "canceled")]

    with engine().connect() as conn:
        audit = (
            conn.execute(
                text(
                    "SELECT reason, actor_key_id, request_id, organization_id FROM audit_log"
                    " WHERE target_id = :t AND action = 'scheduled_post.cancel'"
                ),
                {"t": post_id},
            )
            .mappings()
            .all()
        )
    assert [dict(a) for a in audit] == [
        {
            "reason": reason,
            "actor_key_id": tenant.key_id,
            "request_id": "req-cancel-1",
            "organization_id": tenant.organization_id,
        }
    ]


@pytest.mark.parametrize("body", [None, {}, {"reason": None}])
def test_cancel_without_a_reason(client: TestClient, tenant: TenantFixture, body: Any) -> None:
    post_id = _post_in(client, tenant, "queued")
    r = _cancel(client, tenant, post_id, body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    with engine().connect() as conn:
        reasons = list(
            conn.execute(
                text(
                    "SELECT reason FROM audit_log"
                    " WHERE target_id = :t AND action = 'scheduled_post.cancel'"
                ),
                {"t": post_id},
            ).scalars()
        )
    assert reasons == [None]


def test_cancel_reason_of_1024_chars_is_kept(client: TestClient, tenant: TenantFixture) -> None:
    post_id = _post_in(client, tenant, "queued")
    r = _cancel(client, tenant, post_id, {"reason": "r" * 1024})
    assert r.status_code == 200, r.text
    assert _row(post_id).cancel_reason == "r" * 1024


def test_cancel_twice_conflicts(client: TestClient, tenant: TenantFixture) -> None:
    post_id = _post_in(client, tenant, "queued")
    first = _cancel(client, tenant, post_id, {"reason": "once"})
    assert first.status_code == 200
    err = _error(_cancel(client, tenant, post_id, {"reason": "twice"}), 409, "CONFLICT")
    assert err["details"]["status"] == "canceled"
    # The first cancel's answer still stands.
    got = client.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers).json()
    assert got["canceledAt"] == first.json()["canceledAt"]
    assert _row(post_id).cancel_reason == "once"
    assert _count("audit_log WHERE action = 'scheduled_post.cancel'") == 1


def test_cancel_wins_while_publishing_before_the_upload(
    client: TestClient, tenant: TenantFixture
) -> None:
    post_id = _post_in(client, tenant, "publishing")
    claimed = _row(post_id)
    r = _cancel(client, tenant, post_id, {"reason": "stop"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    # The worker that claimed it reaches the point of no return and stands down.
    with transaction() as tx:
        assert not posts.begin_upload(
            tx.session,
            post_id,
            claimed.dispatch_version,
            "w1",
            now=utcnow(),
            lease=timedelta(minutes=2),
        )
    row = _row(post_id)
    assert (row.status, row.upload_started_at) == ("canceled", None)


@pytest.mark.parametrize("state", ["uploading", "published", "draft", "failed"])
def test_cancel_conflicts_once_the_upload_started_or_terminal(
    client: TestClient, tenant: TenantFixture, state: str
) -> None:
    post_id = _post_in(client, tenant, state)
    before = _row(post_id)
    err = _error(_cancel(client, tenant, post_id, {"reason": "too late"}), 409, "CONFLICT")
    assert err["details"]["status"] == before.status
    after = _row(post_id)
    assert (after.status, after.canceled_at, after.dispatch_version) == (
        before.status,
        None,
        before.dispatch_version,
    )
    assert _count("audit_log WHERE action = 'scheduled_post.cancel'") == 0
    if state == "uploading":
        # The 409 promises the post completes: the worker can still record its outcome.
        with transaction() as tx:
            assert posts.record_uploaded(
                tx.session, post_id, external_id="x", external_url=None, now=utcnow()
            )


# --- 401 ------------------------------------------------------------------------------------


def _auth_cases(tenant: TenantFixture) -> dict[str, dict[str, str]]:
    _, _, key_id, secret = tenant.token.split("_")
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "basic scheme": {"Authorization": f"Basic {tenant.token}"},
        "no scheme": {"Authorization": tenant.token},
        "bearer alone": {"Authorization": "Bearer"},
        "bearer blank": {"Authorization": "Bearer   "},
        "three parts": {"Authorization": f"Bearer lp_live_{key_id}"},
        "five parts": {"Authorization": f"Bearer {tenant.token}_x"},
        "wrong prefix": {"Authorization": f"Bearer sk_live_{key_id}_{secret}"},
        "unknown env": {"Authorization": f"Bearer lp_prod_{key_id}_{secret}"},
        "huge": {"Authorization": "Bearer lp_live_" + "a" * 600 + "_b"},
        "unknown key id": {"Authorization": f"Bearer lp_live_{'0' * 16}_{secret}"},
        "long key id": {"Authorization": f"Bearer lp_live_{'0' * 100}_{secret}"},
        "wrong secret": {"Authorization": f"Bearer lp_live_{key_id}_{'f' * len(secret)}"},
        "env mismatch": {"Authorization": f"Bearer lp_test_{key_id}_{secret}"},
    }


AUTH_CASES = list(_auth_cases(TenantFixture("o", "p", "lp_live_k_s", "k", {})))


@pytest.mark.parametrize("case", AUTH_CASES)
def test_unauthenticated(client: TestClient, tenant: TenantFixture, case: str) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    assert client.get(url, headers=tenant.headers).status_code == 200
    r = client.get(url, headers=_auth_cases(tenant)[case])
    _error(r, 401, "UNAUTHENTICATED")
    # The answer never echoes what was presented.
    assert tenant.token.split("_")[3] not in r.text


def test_invalid_keys_are_indistinguishable(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    cases = _auth_cases(tenant)
    revoked = tenant.key_with("*")
    with transaction() as tx:
        assert revoke_key(tx.session, revoked["Authorization"].split("_")[2], now=utcnow())
    bodies = [
        _sans_request_id(client.get(url, headers=h))
        for h in (cases["unknown key id"], cases["wrong secret"], cases["env mismatch"], revoked)
    ]
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_requires_a_key(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    id_ = _own_id(client, ep, tenant)
    before = _counts()
    _error(_call(client, ep, id_, {}, tenant), 401, "UNAUTHENTICATED")
    assert _counts() == before


def test_a_revoked_key_stops_working_at_once(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.key_with("*")
    key_id = headers["Authorization"].split("_")[2]
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    assert client.get(url, headers=headers).status_code == 200
    with transaction() as tx:
        assert revoke_key(tx.session, key_id, now=utcnow())
    _error(client.get(url, headers=headers), 401, "UNAUTHENTICATED")
    # The organization's other keys keep working.
    assert client.get(url, headers=tenant.headers).status_code == 200


def test_test_env_keys_authenticate_only_as_test(client: TestClient, tenant: TenantFixture) -> None:
    with transaction() as tx:
        key = create_key(tx.session, tenant.organization_id, ["social:read"], env="test")
    assert key.token.startswith("lp_test_")
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    ok = client.get(url, headers={"Authorization": f"Bearer {key.token}"})
    assert ok.status_code == 200, ok.text
    as_live = key.token.replace("lp_test_", "lp_live_", 1)
    _error(client.get(url, headers={"Authorization": f"Bearer {as_live}"}), 401, "UNAUTHENTICATED")


# --- 403 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_demands_its_scope(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    others = [s for s in ALL_SCOPES if s != ep.scope]
    denied = tenant.key_with(*others)
    id_ = _own_id(client, ep, tenant)
    before = _counts()
    err = _error(_call(client, ep, id_, denied, tenant), 403, "FORBIDDEN_SCOPE")
    assert err["details"] == {"requiredScope": ep.scope}
    assert _counts() == before

    for scopes in ([ep.scope], ["*"]):
        allowed = tenant.key_with(*scopes)
        r = _call(client, ep, _own_id(client, ep, tenant), allowed, tenant)
        assert r.status_code == ep.ok, (scopes, r.text)


# --- 404 ------------------------------------------------------------------------------------


@pytest.fixture
def foreign_ids(client: TestClient, other_tenant: TenantFixture) -> dict[str, str]:
    """Real ids of another organization, one per kind."""
    container = upload(client, other_tenant)
    post = schedule(client, other_tenant, container, at(600))[0]["id"]
    return {"project": other_tenant.project_id, "container": container, "post": post}


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_other_orgs_ids_look_like_missing_ones(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    foreign_ids: dict[str, str],
    ep: Endpoint,
) -> None:
    foreign = foreign_ids[ep.id_kind]
    missing = f"{PREFIX[ep.id_kind]}_{uuid.uuid4()}"
    before = _counts()
    # With the same request id, the two answers must be the same bytes, headers included.
    same = {**tenant.headers, "X-Request-Id": "req-probe-1"}
    r_foreign = _call(client, ep, foreign, same, tenant)
    r_missing = _call(client, ep, missing, same, tenant)
    _error(r_foreign, 404, "NOT_FOUND")
    _error(r_missing, 404, "NOT_FOUND")
    assert r_foreign.content == r_missing.content
    drop = {"date", "x-ratelimit-remaining", "x-ratelimit-reset"}
    assert {k: v for k, v in r_foreign.headers.items() if k not in drop} == {
        k: v for k, v in r_missing.headers.items() if k not in drop
    }
    assert _counts() == before
    # Untouched: the owner still sees its post queued at its time.
    owner_view = client.get(
        f"/v1/scheduled-posts/{foreign_ids['post']}", headers=other_tenant.headers
    )
    assert owner_view.json()["status"] == "queued"
    # The owner itself is served.
    assert _call(client, ep, foreign, other_tenant.headers, other_tenant).status_code == ep.ok


MALFORMED_IDS = [
    "sp_nope",
    "..%2F..%2Fetc",
    "%2E%2E",
    "%00",
    "sp_%00",
    "x" * 300,
    "'%20OR%20'1'='1",
    "sp_4C8E7D2F-9A1B-4C3D-8E7F-2A1B3C4D5E60",
    "sp_4c8e7d2f9a1b4c3d8e7f2a1b3c4d5e60",
    "SP_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    "cnt_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    "prj_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e6",
    "%F0%9F%92%A9",
]


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_malformed_ids_are_not_found(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    for bad in MALFORMED_IDS:
        _error(_call(client, ep, bad, tenant.headers, tenant), 404, "NOT_FOUND")
    # A real id of the wrong kind is not found either (a container id as a post id, ...).
    wrong_kind = {"project": "container", "container": "project", "post": "container"}
    real = {"project": tenant.project_id, "container": upload(client, tenant)}
    real["post"] = schedule(client, tenant, real["container"], at(600))[0]["id"]
    other_kind = real[wrong_kind[ep.id_kind]]
    _error(_call(client, ep, other_kind, tenant.headers, tenant), 404, "NOT_FOUND")


# --- 422 ------------------------------------------------------------------------------------


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


# (method, url template, request kwargs, the path expected among details.issues)
VALIDATION_CASES = {
    "cancel reason 1025": ("DELETE", CANCEL, _json({"reason": "r" * 1025}), "reason"),
    "cancel reason not a string": ("DELETE", CANCEL, _json({"reason": 5}), "reason"),
    "cancel unknown field": ("DELETE", CANCEL, _json({"why": "x"}), "why"),
    "schedule in the past": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, scheduledFor=at(-45)),
        "scheduledFor",
    ),
    "schedule naive time": (
        "POST",
        SCHEDULE,
        _s(scheduledFor="2031-01-01T00:00:00"),
        "scheduledFor",
    ),
    "schedule not a time": ("POST", SCHEDULE, _s(scheduledFor="tomorrow"), "scheduledFor"),
    "schedule past year 9999 in UTC": (
        "POST",
        SCHEDULE,
        _s(scheduledFor="9999-12-31T23:59:59-14:00"),
        "scheduledFor",
    ),
    "schedule no time": (
        "POST",
        SCHEDULE,
        lambda c: {"json": {"targets": _sched(c)["json"]["targets"]}},
        "scheduledFor",
    ),
    "schedule 0 targets": ("POST", SCHEDULE, _s(targets=[]), "targets"),
    "schedule 51 targets": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": _sa()} for _ in range(51)]),
        "targets",
    ),
    "schedule foreign account": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": c.other.accounts["tiktok"]}]),
        "targets[0].socialAccountId",
    ),
    "schedule unknown account": (
        "POST",
        SCHEDULE,
        _s(targets=[{"socialAccountId": _sa()}]),
        "targets[0].socialAccountId",
    ),
    "schedule malformed account": (
        "POST",
        SCHEDULE,
        _s(targets=[{"socialAccountId": "sa_nope"}]),
        "targets[0].socialAccountId",
    ),
    "schedule duplicate account": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": c.tenant.accounts["tiktok"]}] * 2),
        "targets[1].socialAccountId",
    ),
    "schedule captionOverride 4001": (
        "POST",
        SCHEDULE,
        _t(captionOverride="c" * 4001),
        "targets[0].captionOverride",
    ),
    "schedule firstCommentOverride 4001": (
        "POST",
        SCHEDULE,
        _t(firstCommentOverride="c" * 4001),
        "targets[0].firstCommentOverride",
    ),
    "schedule bad mode": ("POST", SCHEDULE, _t(mode="story"), "targets[0].mode"),
    "schedule invalid scheduledPostId": (
        "POST",
        SCHEDULE,
        _t(scheduledPostId="sp_nope"),
        "targets[0].scheduledPostId",
    ),
    "schedule taken scheduledPostId": (
        "POST",
        SCHEDULE,
        lambda c: _target(c, scheduledPostId=c.post),
        "targets[0].scheduledPostId",
    ),
    "schedule unknown field": ("POST", SCHEDULE, _s(priority=1), "priority"),
    "schedule unknown target field": ("POST", SCHEDULE, _t(caption="x"), "targets[0].caption"),
    "schedule body not JSON": (
        "POST",
        SCHEDULE,
        lambda _: {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        "body",
    ),
    "schedule body a list": ("POST", SCHEDULE, _json([]), "body"),
    "publish 0 targets": ("POST", PUBLISH, _json({"targets": []}), "targets"),
    "publish foreign account": (
        "POST",
        PUBLISH,
        lambda c: {"json": {"targets": [{"socialAccountId": c.other.accounts["tiktok"]}]}},
        "targets[0].socialAccountId",
    ),
    "publish with scheduledFor": ("POST", PUBLISH, _sched, "scheduledFor"),
    "upload empty caption": ("POST", UPLOAD, lambda _: _up(caption=""), "caption"),
    "upload caption 2201": ("POST", UPLOAD, lambda _: _up(caption="c" * 2201), "caption"),
    "upload no media": ("POST", UPLOAD, lambda _: _up(media=[]), "media"),
    "upload 11 media": ("POST", UPLOAD, lambda _: _up(media=_media(11)), "media"),
    "upload http media": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[{"url": "http://cdn.example.com/a.jpg"}]),
        "media[0].url",
    ),
    "upload bare https": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[*_media(1), {"url": "https://"}]),
        "media[1].url",
    ),
    "upload media type audio": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[{"url": "https://cdn.example.com/a.mp3", "type": "audio"}]),
        "media[0].type",
    ),
    "upload unknown field": ("POST", UPLOAD, lambda _: _up(title="x"), "title"),
    "upload Idempotency-Key 256": (
        "POST",
        UPLOAD,
        lambda _: {**_up(), "headers": {"Idempotency-Key": "k" * 256}},
        "Idempotency-Key",
    ),
    "reschedule too soon": (
        "POST",
        RESCHEDULE,
        lambda _: {"json": {"scheduledFor": at(10)}},
        "scheduledFor",
    ),
    "reschedule naive time": (
        "POST",
        RESCHEDULE,
        _json({"scheduledFor": "2031-01-01T00:00:00"}),
        "scheduledFor",
    ),
    "reschedule unknown field": (
        "POST",
        RESCHEDULE,
        lambda _: {"json": {"scheduledFor": at(600), "caption": "x"}},
        "caption",
    ),
    "posts limit 0": ("GET", POSTS, _query(limit=0), "limit"),
    "posts limit 101": ("GET", POSTS, _query(limit=101), "limit"),
    "posts limit not a number": ("GET", POSTS, _query(limit="ten"), "limit"),
    "posts bad cursor": ("GET", POSTS, _query(cursor="!!!"), "cursor"),
    "posts naive cursor": (
        "GET",
        POSTS,
        _query(cursor=_b64(["2031-01-01T00:00:00", "x"])),
        "cursor",
    ),
    "posts cursor of a dict": ("GET", POSTS, _query(cursor=_b64({"a": 1})), "cursor"),
    "posts cursor of numbers": ("GET", POSTS, _query(cursor=_b64([1, 2])), "cursor"),
    "posts since after until": (
        "GET",
        POSTS,
        _query(since="2031-01-02T00:00:00Z", until="2031-01-01T00:00:00Z"),
        "since",
    ),
    "posts naive since": ("GET", POSTS, _query(since="2031-01-02T00:00:00"), "since"),
    "posts bad status": ("GET", POSTS, _query(status="scheduled"), "status[0]"),
    "accounts bad platform": ("GET", ACCOUNTS, _query(platform="myspace"), "platform"),
    "accounts limit 0": ("GET", ACCOUNTS, _query(limit=0), "limit"),
    "accounts limit 101": ("GET", ACCOUNTS, _query(limit=101), "limit"),
    "accounts bad cursor": ("GET", ACCOUNTS, _query(cursor=_b64("nope")[:-1]), "cursor"),
}


def _send(
    client: TestClient, ctx: Ctx, method: str, template: str, kwargs: dict[str, Any]
) -> httpx.Response:
    url = template.format(post=ctx.post, container=ctx.container, project=ctx.tenant.project_id)
    headers = {**ctx.tenant.headers, **kwargs.pop("headers", {})}
    return client.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def ctx(client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture) -> Ctx:
    container = upload(client, tenant)
    post = schedule(client, tenant, container, at(600))[0]["id"]
    return Ctx(tenant, other_tenant, container, post)


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_errors_name_the_field(client: TestClient, ctx: Ctx, case: str) -> None:
    method, template, kwargs, path = VALIDATION_CASES[case]
    before = _counts()
    r = _send(client, ctx, method, template, kwargs(ctx))
    assert path in _paths(r)
    assert _counts() == before
    assert _row(ctx.post).status == "queued"
    assert _broker_messages() == []


BOUNDARY_CASES = {
    "cancel reason 1024": ("DELETE", CANCEL, _json({"reason": "r" * 1024})),
    "schedule 10 s in the past": ("POST", SCHEDULE, lambda c: _sched(c, scheduledFor=at(-10))),
    "caption 2200": ("POST", UPLOAD, lambda _: _up(caption="c" * 2200)),
    "10 media": ("POST", UPLOAD, lambda _: _up(media=_media(10))),
    # The caption's bound is the platform's (2200), the first comment's the wire's (4000).
    "overrides 2200 and 4000": (
        "POST",
        SCHEDULE,
        _t(captionOverride="c" * 2200, firstCommentOverride="f" * 4000),
    ),
    "reschedule 60 s ahead": ("POST", RESCHEDULE, lambda _: {"json": {"scheduledFor": at(60)}}),
    "posts limit 1": ("GET", POSTS, _query(limit=1)),
    "accounts limit 100": ("GET", ACCOUNTS, _query(limit=100)),
    "Idempotency-Key 255": (
        "POST",
        UPLOAD,
        lambda _: {**_up(), "headers": {"Idempotency-Key": "k" * 255}},
    ),
}


@pytest.mark.parametrize("case", list(BOUNDARY_CASES))
def test_boundaries_just_inside_are_accepted(client: TestClient, ctx: Ctx, case: str) -> None:
    method, template, kwargs = BOUNDARY_CASES[case]
    r = _send(client, ctx, method, template, kwargs(ctx))
    assert r.status_code in (200, 201), r.text


# --- Idempotency-Key ------------------------------------------------------------------------

MUTATING_POSTS = ["upload", "schedule", "publish", "reschedule"]


def _idem_request(
    client: TestClient, ep: Endpoint, tenant: TenantFixture
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(url, body, a different body) for one of the mutating POSTs of `tenant`."""
    id_ = _own_id(client, ep, tenant)
    body = _body(ep, tenant)
    assert body is not None
    other = json.loads(json.dumps(body))
    if ep.name == "upload":
        other["caption"] = "another caption"
    elif ep.name == "reschedule":
        other["scheduledFor"] = at(9000)
    else:
        other["targets"][0]["mode"] = "draft"
    return ep.url(id_), body, other


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_idempotency_key_replays_byte_for_byte(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, different = _idem_request(client, ep, tenant)
    key = {"Idempotency-Key": f"idem-{name}"}
    headers = {**tenant.headers, **key}

    first = client.post(url, headers=headers, json=body)
    assert first.status_code == ep.ok, first.text
    after_first = _counts()
    messages = len(_broker_messages())

    again = client.post(url, headers=headers, json=body)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert _counts() == after_first
    assert len(_broker_messages()) == messages  # a replay sends no second task

    err = _error(client.post(url, headers=headers, json=different), 409, "IDEMPOTENCY_CONFLICT")
    assert err["details"] == {"idempotencyKey": key["Idempotency-Key"]}
    assert _counts() == after_first

    # Keys are per organization: another API key of the same org gets the replay ...
    sibling = {**tenant.key_with("*"), **key}
    assert client.post(url, headers=sibling, json=body).content == first.content
    assert _counts() == after_first
    # ... while another org's same key runs its own request.
    o_url, o_body, _ = _idem_request(client, ep, other_tenant)
    theirs = client.post(o_url, headers={**other_tenant.headers, **key}, json=o_body)
    assert theirs.status_code == ep.ok, theirs.text
    assert theirs.content != first.content
    # ... and did not disturb ours.
    assert client.post(url, headers=headers, json=body).content == first.content


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_without_a_key_every_request_runs(
    client: TestClient, tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    before = _counts()
    first = client.post(url, headers=tenant.headers, json=body)
    second = client.post(url, headers=tenant.headers, json=body)
    assert (first.status_code, second.status_code) == (ep.ok, ep.ok)
    after = _counts()
    assert after["idempotency_keys"] == before["idempotency_keys"]
    if name == "upload":
        assert after["content_containers"] == before["content_containers"] + 2
    elif name in ("schedule", "publish"):
        assert after["scheduled_posts"] == before["scheduled_posts"] + 2
    else:
        assert after["audit_log"] == before["audit_log"] + 2
    if name != "reschedule":
        assert first.json() != second.json()


@pytest.mark.parametrize("name", MUTATING_POSTS)
def test_idempotency_key_too_long(client: TestClient, tenant: TenantFixture, name: str) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    before = _counts()
    r = client.post(url, headers={**tenant.headers, "Idempotency-Key": "k" * 256}, json=body)
    assert _paths(r) == ["Idempotency-Key"]
    assert _counts() == before
    r = client.post(url, headers={**tenant.headers, "Idempotency-Key": "k" * 255}, json=body)
    assert r.status_code == ep.ok, r.text


def test_idempotency_key_expires_after_24_hours(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/content/upload"
    headers = {**tenant.headers, "Idempotency-Key": "old"}
    first = client.post(url, headers=headers, json={"caption": "a", "media": MEDIA})
    assert first.status_code == 201
    with engine().begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    fresh = client.post(url, headers=headers, json={"caption": "b", "media": MEDIA})
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["caption"] == "b"
    assert _count("content_containers") == 2


def test_a_failed_request_is_not_remembered(client: TestClient, tenant: TenantFixture) -> None:
    container = upload(client, tenant)
    url = f"/v1/content/{container}/schedule"
    headers = {**tenant.headers, "Idempotency-Key": "retry-me"}
    body = {"scheduledFor": at(600), "targets": [{"socialAccountId": f"sa_{uuid.uuid4()}"}]}
    assert client.post(url, headers=headers, json=body).status_code == 422
    body["targets"] = [{"socialAccountId": tenant.accounts["tiktok"]}]
    r = client.post(url, headers=headers, json=body)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("name", "when", "later"), [("schedule", -10, 60), ("reschedule", 45, 30)])
def test_a_retry_replays_even_after_its_time_has_come(
    client: TestClient,
    tenant: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    when: int,
    later: int,
) -> None:
    """A client retrying after a lost response must get the replay, not a fresh 422."""
    ep = BY_NAME[name]
    id_ = _own_id(client, ep, tenant)
    body: dict[str, Any] = {"scheduledFor": at(when)}
    if name == "schedule":
        body["targets"] = [{"socialAccountId": tenant.accounts["tiktok"]}]
    headers = {**tenant.headers, "Idempotency-Key": "lost-response"}
    first = client.post(ep.url(id_), headers=headers, json=body)
    assert first.status_code == ep.ok, first.text
    after_first = _counts()

    monkeypatch.setattr(routes, "utcnow", lambda: datetime.now(UTC) + timedelta(seconds=later))
    again = client.post(ep.url(id_), headers=headers, json=body)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert _counts() == after_first


@pytest.mark.parametrize("name", ["upload", "publish"])
def test_concurrent_requests_with_one_key_do_the_work_once(
    client: TestClient, tenant: TenantFixture, name: str
) -> None:
    ep = BY_NAME[name]
    url, body, _ = _idem_request(client, ep, tenant)
    if name == "publish":
        body["targets"].append({"socialAccountId": tenant.accounts["instagram"]})
    before = _counts()
    headers = {**tenant.headers, "Idempotency-Key": "race"}
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def worker() -> None:
        own = TestClient(client.app, raise_server_exceptions=False)
        barrier.wait()
        r = own.post(url, headers=headers, json=body)
        with lock:
            results.append((r.status_code, r.content))

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == threads_n
    assert {status for status, _ in results} == {ep.ok}, results
    assert len({content for _, content in results}) == 1
    after = _counts()
    assert after["idempotency_keys"] == before["idempotency_keys"] + 1
    if name == "upload":
        assert after["content_containers"] == before["content_containers"] + 1
    else:
        assert after["scheduled_posts"] == before["scheduled_posts"] + 2
        assert len(_broker_messages()) == 2


def _wait_for_a_lock_waiter(timeout: float = 10.0) -> None:
    """Block until some backend of this database waits on a lock (our request, below)."""
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with engine().connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("the request never waited on the rival's row")


def test_racing_for_one_scheduled_post_id_is_a_validation_error(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = upload(client, tenant)
    chosen = f"sp_{uuid.uuid4()}"
    body = {
        "scheduledFor": at(600),
        "targets": [{"socialAccountId": tenant.accounts["tiktok"], "scheduledPostId": chosen}],
    }
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            client.post(f"/v1/content/{container}/schedule", headers=tenant.headers, json=body)
        )
    )
    # A rival request holds the id, uncommitted, until ours has checked it and waits on it.
    with transaction() as tx:
        rival = tx.session.get(ContentContainer, container)
        assert rival is not None
        target = posts.Target(tenant.accounts["instagram"], scheduled_post_id=chosen)
        actor = posts.Actor(tenant.organization_id, tenant.key_id, "rival")
        posts.schedule(
            tx.session, actor, rival, utcnow() + timedelta(minutes=10), [target], now=utcnow()
        )
        request.start()
        _wait_for_a_lock_waiter()
    request.join(timeout=30)
    assert _paths(answers[0]) == ["targets[0].scheduledPostId"]
    assert _count("scheduled_posts") == 1


# --- envelope, request ids, 500 -------------------------------------------------------------


def _requests_for_ids(tenant: TenantFixture) -> dict[str, tuple[str, str, dict[str, Any], int]]:
    return {
        "200": (
            "GET",
            f"/v1/projects/{tenant.project_id}/social-accounts",
            {"headers": tenant.headers},
            200,
        ),
        "201": (
            "POST",
            f"/v1/projects/{tenant.project_id}/content/upload",
            {"headers": tenant.headers, "json": {"caption": "x", "media": MEDIA}},
            201,
        ),
        "401": ("GET", f"/v1/projects/{tenant.project_id}/social-accounts", {"headers": {}}, 401),
        "403": (
            "GET",
            f"/v1/projects/{tenant.project_id}/social-accounts",
            {"headers": tenant.key_with("content:read")},
            403,
        ),
        "404 id": (
            "GET",
            f"/v1/scheduled-posts/sp_{uuid.uuid4()}",
            {"headers": tenant.headers},
            404,
        ),
        "404 route": ("GET", "/v1/nothing-here", {"headers": tenant.headers}, 404),
        "404 unauthenticated route": ("GET", "/nope", {"headers": {}}, 404),
        "405": ("PUT", f"/v1/scheduled-posts/sp_{uuid.uuid4()}", {"headers": tenant.headers}, 405),
        "422": (
            "GET",
            f"/v1/projects/{tenant.project_id}/scheduled-posts",
            {"headers": tenant.headers, "params": {"limit": 0}},
            422,
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["200", "201", "401", "403", "404 id", "404 route", "404 unauthenticated route", "405", "422"],
)
def test_request_id_is_echoed_or_minted(
    client: TestClient, tenant: TenantFixture, case: str
) -> None:
    method, url, kwargs, status = _requests_for_ids(tenant)[case]
    headers = kwargs.pop("headers")
    given = client.request(
        method, url, headers={**headers, "X-Request-Id": "caller-id.42"}, **kwargs
    )
    assert given.status_code == status, given.text
    assert given.headers["x-request-id"] == "caller-id.42"
    minted = [client.request(method, url, headers=headers, **kwargs) for _ in range(2)]
    for r in minted:
        assert r.status_code == status
        assert re.match(r"^req_[0-9a-f]{32}$", r.headers["x-request-id"])
    assert minted[0].headers["x-request-id"] != minted[1].headers["x-request-id"]
    if status >= 400:
        code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN_SCOPE", 404: "NOT_FOUND", 422: "VALIDATION"}
        for r in (given, *minted):
            err = _error(r, status, code.get(status, "METHOD_NOT_ALLOWED"))
            assert err["requestId"] == r.headers["x-request-id"]


def test_an_unsafe_request_id_is_replaced(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    for bad in ("has spaces in it", "x" * 201, "<script>"):
        r = client.get(url, headers={**tenant.headers, "X-Request-Id": bad})
        assert r.status_code == 200
        assert re.match(r"^req_[0-9a-f]{32}$", r.headers["x-request-id"])


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("secret SQL: SELECT secret_hash FROM api_keys")


def _db_boom(*_: Any, **__: Any) -> Any:
    raise ProgrammingError("SELECT secret_hash FROM api_keys", {}, Exception("secret SQL"))


@pytest.mark.parametrize(
    ("target", "ep_name", "raiser"),
    [
        ("shared.content.get_container", "get_content", _boom),
        ("shared.content.create_container", "upload", _boom),
        ("shared.posts.list_posts_query", "list_posts", _boom),
        ("shared.posts.schedule", "publish", _boom),
        ("shared.posts.cancel", "cancel", _boom),
        ("shared.posts.get_post", "get_post", _db_boom),
        ("api.deps.authenticate", "list_accounts", _boom),
    ],
)
def test_internal_errors_leak_nothing(
    client: TestClient,
    tenant: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    ep_name: str,
    raiser: Callable[..., Any],
) -> None:
    ep = BY_NAME[ep_name]
    id_ = _own_id(client, ep, tenant)
    monkeypatch.setattr(target, raiser)
    before = _counts()
    headers = {**tenant.headers, "X-Request-Id": "boom-1", "Idempotency-Key": "k500"}
    r = _call(client, ep, id_, headers, tenant)
    err = _error(r, 500, "INTERNAL")
    assert err["requestId"] == "boom-1"
    assert err["details"] == {}
    for leak in ("secret", "SQL", "SELECT", "RuntimeError", "Traceback", "api_keys"):
        assert leak not in r.text
    assert _counts() == before
    assert _broker_messages() == []
    monkeypatch.undo()
    if ep.mutation and ep.method == "POST":
        # A 500 is not remembered: the retry with the same key does the work.
        retry = _call(client, ep, id_, headers, tenant)
        assert retry.status_code == ep.ok, retry.text


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_documents_every_endpoint_and_its_errors(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    params = {"project": "projectId", "container": "containerId", "post": "id"}
    for ep in ENDPOINTS:
        path = ep.template.replace("{id}", "{" + params[ep.id_kind] + "}")
        assert path in spec["paths"], path
        op = spec["paths"][path].get(ep.method.lower())
        assert op is not None, (ep.method, path)
        assert op.get("description") or op.get("summary")
        responses = op["responses"]
        assert str(ep.ok) in responses
        wanted = {"401", "403", "404", "422"} | ({"409"} if ep.mutation else set())
        for status in sorted(wanted):
            assert status in responses, (ep.name, status)
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorEnvelopeDoc"), (ep.name, status)
        if ep.method == "POST":
            names = {p["name"] for p in op.get("parameters", [])}
            assert "Idempotency-Key" in names, ep.name

    schemas = spec["components"]["schemas"]
    envelope = schemas["ErrorEnvelopeDoc"]
    assert envelope["required"] == ["error"]
    inner = schemas[envelope["properties"]["error"]["$ref"].rsplit("/", 1)[-1]]
    assert set(inner["required"]) == {"code", "message", "requestId", "details"}
    cancel_op = spec["paths"]["/v1/scheduled-posts/{id}"]["delete"]
    assert "requestBody" in cancel_op
    assert schemas["CancelIn"]["properties"]["reason"]["anyOf"][0]["maxLength"] == 1024


def test_scheduled_for_has_whole_second_resolution(
    client: TestClient, tenant: TenantFixture
) -> None:
    """A fractional time is rounded up (never earlier than asked), so the time a caller reads
    back is the stored one, and `until` on it is inclusive."""
    container = upload(client, tenant)
    (post,) = schedule(client, tenant, container, "2099-01-01T10:00:00.250Z")
    assert post["scheduledFor"] == "2099-01-01T10:00:01Z"
    r = client.get(
        f"/v1/projects/{tenant.project_id}/scheduled-posts",
        headers=tenant.headers,
        params={"since": post["scheduledFor"], "until": post["scheduledFor"]},
    )
    assert [i["id"] for i in r.json()["items"]] == [post["id"]]
