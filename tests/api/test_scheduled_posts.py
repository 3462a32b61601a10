"""Scheduled posts: schedule, publish now, get, list and paginate, reschedule."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from shared.accounts.accounts import add_social_account
from shared.accounts.tokens import mark_reauth_required
from shared.events import Actor
from shared.kit import ids
from shared.kit.clock import utcnow
from shared.kit.db import engine, transaction
from shared.models import ContentContainer, Project
from shared.publishing import posts
from tests.api.helpers import (
    ISO_Z,
    POST_FIELDS,
    UUID_ID,
    _broker_messages,
    _cancel,
    _parse,
    _post_in,
)
from tests.checks import count as _count
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.checks import issue_paths as _paths
from tests.checks import post_row as _row
from tests.factories import TenantFixture, at, make_tenant, schedule, upload


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
        actor = Actor(tenant.organization_id, tenant.key_id, "rival")
        posts.schedule(
            tx.session, actor, rival, utcnow() + timedelta(minutes=10), [target], now=utcnow()
        )
        request.start()
        _wait_for_a_lock_waiter()
    request.join(timeout=30)
    assert _paths(answers[0]) == ["targets[0].scheduledPostId"]
    assert _count("scheduled_posts") == 1


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


@pytest.mark.parametrize(
    ("platform", "given", "expected"),
    [
        ("instagram", "190/463", "190/463"),
        ("tiktok", "access_token_invalid", "access_token_invalid"),
        # Expired with nothing to refresh it: the code the platform answers a dead token with.
        ("instagram", None, "190"),
        ("tiktok", None, "access_token_invalid"),
    ],
)
def test_publish_now_to_an_account_the_platform_refuses_is_platform_error(
    client: TestClient,
    tenant: TenantFixture,
    platform: str,
    given: str | None,
    expected: str,
) -> None:
    container = upload(client, tenant)
    refused, fine = (
        tenant.accounts[platform],
        tenant.accounts["tiktok" if platform == "instagram" else "instagram"],
    )
    with transaction() as tx:
        mark_reauth_required(tx.session, refused, "the token is no longer valid", given)
    before = _counts()
    r = client.post(
        f"/v1/content/{container}/publish",
        headers=tenant.headers,
        json={"targets": [{"socialAccountId": fine}, {"socialAccountId": refused}]},
    )
    err = _error(r, 409, "PLATFORM_ERROR")
    assert err["details"] == {
        "platformCode": expected,
        "socialAccountId": refused,
        "path": "targets[1].socialAccountId",
    }
    assert "reconnect" in err["message"]
    # All or nothing: not even the account that would have worked got a post.
    assert _counts() == before
    assert _broker_messages() == []

    # For later, the same target is taken: the account may be reconnected before its time.
    (later,) = schedule(client, tenant, container, at(600), [refused])
    assert later["status"] == "queued"


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
                text("SELECT type FROM events WHERE subject_id = :t ORDER BY id"),
                {"t": post["id"]},
            ).scalars()
        )
    assert actions == ["post.scheduled", "post.rescheduled"]


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
