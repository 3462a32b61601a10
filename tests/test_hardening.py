"""Hostile input, one finding at a time: each answer is a clear 4xx in the envelope, and a
request that fails writes nothing (a cancel that fails leaves the post as it was)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from harness.stack import ROOT, free_port, wait_until
from tests.checks import counts as _counts
from tests.checks import envelope_error, issue_paths
from tests.checks import post_row as _row
from tests.factories import TenantFixture, at, schedule, upload

NUL = "\u0000"
SURROGATE = "\ud800"


def _raw_json(client: TestClient, method: str, url: str, tenant: TenantFixture, raw: str) -> Any:
    """A body sent as written: `\\ud800` stays an escape that json.loads turns into a lone
    surrogate, which no client library would produce from a str."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    return client.request(method, url, headers=headers, content=raw.encode())


@pytest.fixture
def queued(client: TestClient, tenant: TenantFixture) -> tuple[str, str]:
    """A content container and a far-future queued post of it."""
    container = upload(client, tenant)
    (post,) = schedule(client, tenant, container, at(3600))
    return container, str(post["id"])


# --- 1 and 2: strings PostgreSQL cannot store ------------------------------------------------


def _body_cases(
    tenant: TenantFixture, container: str, post: str, bad: str
) -> dict[str, tuple[str, str, dict[str, Any], str]]:
    tiktok = tenant.accounts["tiktok"]
    sched = f"/v1/content/{container}/schedule"
    media = [{"url": "https://cdn.example.com/clip.mp4"}]

    def target(**extra: Any) -> dict[str, Any]:
        return {"scheduledFor": at(600), "targets": [{"socialAccountId": tiktok, **extra}]}

    upload_url = f"/v1/projects/{tenant.project_id}/content/upload"
    return {
        "caption": ("POST", upload_url, {"caption": f"a{bad}b", "media": media}, "caption"),
        "media url": (
            "POST",
            upload_url,
            {"caption": "c", "media": [{"url": f"https://cdn.example.com/{bad}.mp4"}]},
            "media[0].url",
        ),
        "socialAccountId": (
            "POST",
            sched,
            {"scheduledFor": at(600), "targets": [{"socialAccountId": f"sa_{bad}"}]},
            "targets[0].socialAccountId",
        ),
        "captionOverride": (
            "POST",
            sched,
            target(captionOverride=bad),
            "targets[0].captionOverride",
        ),
        "firstCommentOverride": (
            "POST",
            sched,
            target(firstCommentOverride=bad),
            "targets[0].firstCommentOverride",
        ),
        "scheduledPostId": (
            "POST",
            sched,
            target(scheduledPostId=f"sp_{bad}"),
            "targets[0].scheduledPostId",
        ),
        "publish-now captionOverride": (
            "POST",
            f"/v1/content/{container}/publish",
            {"targets": [{"socialAccountId": tiktok, "captionOverride": bad}]},
            "targets[0].captionOverride",
        ),
        "cancel reason": ("DELETE", f"/v1/scheduled-posts/{post}", {"reason": bad}, "reason"),
    }


CASE_NAMES = list(_body_cases(TenantFixture("", "", "", "", {"tiktok": ""}), "", "", NUL))


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_unstorable_strings_are_422_and_write_nothing(
    client: TestClient, tenant: TenantFixture, queued: tuple[str, str], case: str, bad: str
) -> None:
    container, post = queued
    method, url, body, path = _body_cases(tenant, container, post, bad)[case]
    before = _counts()
    # json.dumps escapes both as \u0000 and \ud800, exactly what a hostile client sends.
    r = _raw_json(client, method, url, tenant, json.dumps(body))
    assert path in issue_paths(r)
    assert _counts() == before
    # A cancel that fails must leave the post queued *and say so*: it still publishes.
    row = _row(post)
    assert (row.status, row.dispatch_version) == ("queued", 1)


@pytest.mark.parametrize("bad", ["%00", "sa_%00", "%ED%A0%80"])
def test_unstorable_query_values_are_422(
    client: TestClient, tenant: TenantFixture, bad: str
) -> None:
    url = f"/v1/projects/{tenant.project_id}/scheduled-posts?socialAccountId={bad}"
    r = client.get(url, headers=tenant.headers)
    # Percent-decoding replaces invalid UTF-8 (a surrogate's bytes) with U+FFFD: storable,
    # and simply matches nothing.
    if bad == "%ED%A0%80":
        assert r.status_code == 200, r.text
        assert r.json()["items"] == []
    else:
        assert issue_paths(r) == ["socialAccountId"]


@pytest.mark.parametrize("row_id", ["sp_\u0000", "sp_\ud800", "\ud800"])
@pytest.mark.parametrize("listing", ["scheduled-posts", "social-accounts"])
def test_cursors_holding_unstorable_ids_are_422(
    client: TestClient, tenant: TenantFixture, row_id: str, listing: str
) -> None:
    raw = json.dumps(["2027-01-01T00:00:00+00:00", row_id]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    r = client.get(
        f"/v1/projects/{tenant.project_id}/{listing}",
        params={"cursor": cursor},
        headers=tenant.headers,
    )
    assert issue_paths(r) == ["cursor"]


@pytest.mark.parametrize(
    "key", [f"k{NUL}", f"k{SURROGATE}".encode("utf-8", "surrogatepass").decode("latin-1")]
)
def test_idempotency_keys_that_cannot_be_stored_are_422(
    client: TestClient, tenant: TenantFixture, key: str
) -> None:
    before = _counts()
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers={**tenant.headers, "Idempotency-Key": key.encode("latin-1")},  # type: ignore[dict-item]
        json={"caption": "c", "media": [{"url": "https://cdn.example.com/a.mp4"}]},
    )
    if NUL in key:
        assert issue_paths(r) == ["Idempotency-Key"]
        assert _counts() == before
    else:
        # Header bytes are read as Latin-1, which PostgreSQL stores: a key like any other.
        assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "token", [f"lp_live_ab{NUL}cd_ef", "lp_live_abcd_\u00e9f", "lp_live_ab\u00ffcd_ef"]
)
def test_keys_with_bytes_no_key_has_are_401(client: TestClient, token: str) -> None:
    r = client.get(
        "/v1/scheduled-posts/sp_00000000-0000-4000-8000-000000000000",
        headers={"Authorization": f"Bearer {token}".encode("latin-1")},  # type: ignore[dict-item]
    )
    envelope_error(r, 401, "UNAUTHENTICATED")


# --- 3: times at the edge of the calendar ---------------------------------------------------


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59.5Z", "9999-12-31T23:59:59.000001Z", "9999-12-31T23:59:59-14:00"]
)
def test_times_that_overflow_when_rounded_are_422(
    client: TestClient, tenant: TenantFixture, queued: tuple[str, str], when: str
) -> None:
    container, post = queued
    before = _counts()
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": when, "targets": [{"socialAccountId": tenant.accounts["tiktok"]}]},
    )
    assert issue_paths(r) == ["scheduledFor"]
    r = client.post(
        f"/v1/scheduled-posts/{post}/reschedule",
        headers=tenant.headers,
        json={"scheduledFor": when},
    )
    assert issue_paths(r) == ["scheduledFor"]
    assert _counts() == before


def test_the_last_whole_second_of_the_calendar_is_accepted(
    client: TestClient, tenant: TenantFixture, queued: tuple[str, str]
) -> None:
    _, post = queued
    r = client.post(
        f"/v1/scheduled-posts/{post}/reschedule",
        headers=tenant.headers,
        json={"scheduledFor": "9999-12-31T23:59:59Z"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["scheduledFor"] == "9999-12-31T23:59:59Z"


# --- 4: scheduledPostId is per organization -------------------------------------------------


def _schedule_with_id(
    client: TestClient, tenant: TenantFixture, chosen: str, account: str = "tiktok"
) -> httpx.Response:
    container = upload(client, tenant)
    return client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={
            "scheduledFor": at(600),
            "targets": [{"socialAccountId": tenant.accounts[account], "scheduledPostId": chosen}],
        },
    )


def _shape(r: httpx.Response) -> tuple[int, list[str], str]:
    """What a caller can compare between two answers: status, body keys, the post's status."""
    items = r.json()["items"]
    return r.status_code, sorted(items[0]), items[0]["status"]


def test_an_id_another_organization_uses_answers_like_an_unused_one(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    taken, unused = f"sp_{uuid.uuid4()}", f"sp_{uuid.uuid4()}"
    assert _schedule_with_id(client, other_tenant, taken).status_code == 201

    foreign = _schedule_with_id(client, tenant, taken)
    fresh = _schedule_with_id(client, tenant, unused)
    assert foreign.status_code == 201, foreign.text
    assert _shape(foreign) == _shape(fresh)
    assert foreign.json()["items"][0]["id"] == taken

    # Each organization sees its own post under the id, and cancels only its own.
    mine = client.get(f"/v1/scheduled-posts/{taken}", headers=tenant.headers).json()
    theirs = client.get(f"/v1/scheduled-posts/{taken}", headers=other_tenant.headers).json()
    assert mine["socialAccountId"] == tenant.accounts["tiktok"]
    assert theirs["socialAccountId"] == other_tenant.accounts["tiktok"]
    assert client.delete(f"/v1/scheduled-posts/{taken}", headers=tenant.headers).status_code == 200
    again = client.get(f"/v1/scheduled-posts/{taken}", headers=other_tenant.headers)
    assert again.json()["status"] == "queued"

    # Within one organization the id is still taken.
    r = _schedule_with_id(client, tenant, taken, account="instagram")
    assert issue_paths(r) == ["targets[0].scheduledPostId"]


def test_caller_chosen_ids_list_and_page_by_their_wire_id(
    client: TestClient, tenant: TenantFixture
) -> None:
    chosen = sorted(f"sp_{uuid.uuid4()}" for _ in range(3))
    container = upload(client, tenant)
    when = at(900)
    accounts = [tenant.accounts["tiktok"], tenant.accounts["instagram"]]
    for i, post_id in enumerate(chosen[:2]):
        body = {
            "scheduledFor": when,
            "targets": [{"socialAccountId": accounts[i], "scheduledPostId": post_id}],
        }
        r = client.post(f"/v1/content/{container}/schedule", headers=tenant.headers, json=body)
        assert r.status_code == 201, r.text
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            f"/v1/projects/{tenant.project_id}/scheduled-posts",
            params=params,
            headers=tenant.headers,
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(chosen[:2], reverse=True)


# --- 5: what the platform will refuse, known at schedule time --------------------------------


def _container(client: TestClient, tenant: TenantFixture, *urls: str) -> str:
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=tenant.headers,
        json={"caption": "c", "media": [{"url": u} for u in urls]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


VIDEO, IMAGE = "https://cdn.example.com/v.mp4", "https://cdn.example.com/i.jpg"


@pytest.mark.parametrize(
    ("platform", "urls", "override", "path"),
    [
        ("tiktok", [VIDEO], "c" * 2201, "targets[0].captionOverride"),
        ("instagram", [VIDEO], "c" * 2201, "targets[0].captionOverride"),
        ("tiktok", [VIDEO, VIDEO], None, "targets[0].socialAccountId"),
        ("tiktok", [VIDEO, IMAGE], None, "targets[0].socialAccountId"),
    ],
    ids=["tiktok-caption", "instagram-caption", "tiktok-two-videos", "tiktok-mixed"],
)
def test_what_the_platform_refuses_is_422_at_schedule_time(
    client: TestClient,
    tenant: TenantFixture,
    platform: str,
    urls: list[str],
    override: str | None,
    path: str,
) -> None:
    container = _container(client, tenant, *urls)
    target: dict[str, Any] = {"socialAccountId": tenant.accounts[platform]}
    if override is not None:
        target["captionOverride"] = override
    before = _counts()
    for endpoint, body in (
        ("schedule", {"scheduledFor": at(600), "targets": [target]}),
        ("publish", {"targets": [target]}),
    ):
        r = client.post(f"/v1/content/{container}/{endpoint}", headers=tenant.headers, json=body)
        assert issue_paths(r) == [path]
    assert _counts() == before


@pytest.mark.parametrize(
    ("platform", "urls"),
    [("tiktok", [IMAGE] * 10), ("instagram", [VIDEO, IMAGE, VIDEO]), ("tiktok", [VIDEO])],
    ids=["tiktok-photos", "instagram-carousel", "tiktok-video"],
)
def test_what_the_platform_takes_is_scheduled(
    client: TestClient, tenant: TenantFixture, platform: str, urls: list[str]
) -> None:
    container = _container(client, tenant, *urls)
    target = {"socialAccountId": tenant.accounts[platform], "captionOverride": "c" * 2200}
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": at(600), "targets": [target]},
    )
    assert r.status_code == 201, r.text


def test_each_refused_target_is_named(client: TestClient, tenant: TenantFixture) -> None:
    container = _container(client, tenant, VIDEO, IMAGE)
    targets = [
        {"socialAccountId": tenant.accounts["instagram"]},
        {"socialAccountId": tenant.accounts["tiktok"], "captionOverride": "c" * 2201},
    ]
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={"scheduledFor": at(600), "targets": targets},
    )
    assert issue_paths(r) == ["targets[1].captionOverride", "targets[1].socialAccountId"]


# --- 6: 405 and HEAD ------------------------------------------------------------------------


def _documented_methods(client: TestClient) -> dict[str, set[str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return {path: {m.upper() for m in ops} for path, ops in paths.items()}


def _concrete(template: str) -> str:
    return (
        template.replace("{id}", f"sp_{uuid.uuid4()}")
        .replace("{containerId}", f"cnt_{uuid.uuid4()}")
        .replace("{projectId}", f"prj_{uuid.uuid4()}")
    )


def test_every_405_lists_every_allowed_method(client: TestClient) -> None:
    # Two templates can name one path (GET and DELETE of /v1/scheduled-posts/{id}).
    for template, methods in _documented_methods(client).items():
        allowed = {m for t, ms in _documented_methods(client).items() if t == template for m in ms}
        if "GET" in allowed:
            allowed.add("HEAD")
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - methods:
            r = client.request(method, _concrete(template))
            envelope_error(r, 405, "METHOD_NOT_ALLOWED")
            assert set(r.headers["allow"].split(", ")) == allowed, (method, template)


def test_head_answers_like_get_without_a_body(
    client: TestClient, tenant: TenantFixture, queued: tuple[str, str]
) -> None:
    container, post = queued
    for path in (
        f"/v1/scheduled-posts/{post}",
        f"/v1/content/{container}",
        f"/v1/projects/{tenant.project_id}/scheduled-posts",
        f"/v1/projects/{tenant.project_id}/social-accounts",
        f"/v1/scheduled-posts/sp_{uuid.uuid4()}",  # a 404: its headers, no body
        "/healthz",
        "/openapi.json",
    ):
        rid = f"req-head-{uuid.uuid4().hex}"
        got = client.get(path, headers={**tenant.headers, "X-Request-Id": rid})
        head = client.head(path, headers={**tenant.headers, "X-Request-Id": rid})
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["x-request-id"] == rid


def test_head_without_a_key_is_401_without_a_body(client: TestClient) -> None:
    r = client.head(f"/v1/scheduled-posts/sp_{uuid.uuid4()}")
    assert r.status_code == 401
    assert r.content == b""
    assert r.headers["x-request-id"]


# --- 8: metrics are for operators --------------------------------------------------------


def test_the_public_port_serves_no_metrics(client: TestClient, tenant: TenantFixture) -> None:
    # Posts by status across every tenant: served on `publisher api --metrics-port` only.
    for headers in ({}, tenant.headers):
        envelope_error(client.get("/metrics", headers=headers), 404, "NOT_FOUND")


# --- 7: a stalled body ----------------------------------------------------------------------


@pytest.fixture
def api_process(database: str) -> Iterator[str]:
    """The API as its own process, with a one-second body timeout."""
    port = free_port()
    env = {
        **dict(__import__("os").environ),
        "DATABASE_URL": database,
        "BODY_TIMEOUT_S": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, what="api")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _stalled(base: str, rid: str) -> socket.socket:
    """A request that declares 100 bytes of body and sends 2."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        (
            "POST /v1/projects/prj_x/content/upload HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            f"X-Request-Id: {rid}\r\n\r\n{{}}"
        ).encode()
    )
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_a_stalled_body_gets_408_and_holds_nothing(api_process: str) -> None:
    # More stalled requests than the API has threads for its routes (40): none of them holds
    # one, so a request behind them is answered while they wait.
    stalled = [_stalled(api_process, f"req-stall-{i}") for i in range(50)]
    assert httpx.get(f"{api_process}/healthz", timeout=30).status_code == 200
    for i, sock in enumerate(stalled):
        head, _, body = _read_answer(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        error = json.loads(body)["error"]
        assert error["code"] == "REQUEST_TIMEOUT"
        assert error["requestId"] == f"req-stall-{i}"
        assert error["details"] == {"timeoutSeconds": 1.0}
