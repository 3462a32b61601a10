"""Instagram faults injected for real against running processes (the stack's API, workers and
beat, and its Instagram emulator): kill -9 at each protocol step including after
`media_publish` and before recording, lost answers, failing containers, and a token that
expires mid-run. Posts are matched to the emulator's ledger by caption, which each test makes
unique, since there is no idempotency key to match by."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from harness.stack import Stack, wait_until
from shared.accounts.credentials import unseal
from shared.kit.db import new_session
from shared.models import TERMINAL, ScheduledPost, SocialAccount
from tests.emulators import instagram_tenant
from tests.factories import TenantFixture, at

pytestmark = pytest.mark.integration


@pytest.fixture
def ig_api(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client on the stack's API; its Instagram emulator starts empty and fault-free
    (containers ready at once, so each post's fault sequence does not hang on timing)."""
    stack.reset_instagram()
    stack.set_instagram_faults(image_processing_s=0.0)
    stack.arm()
    with httpx.Client(base_url=stack.api_url, timeout=30) as c:
        yield c


@pytest.fixture
def gram(stack: Stack, ig_api: httpx.Client) -> TenantFixture:
    return instagram_tenant("LiveGram", stack.instagram_url)


def _schedule(
    api: httpx.Client, tenant: TenantFixture, n: int = 1, seconds: float = 1, media: str = "jpg"
) -> dict[str, str]:
    """n posts on the tenant's Instagram account, each with its own caption: id -> caption."""
    out = {}
    for _ in range(n):
        caption = f"live {uuid.uuid4().hex[:12]}"
        r = api.post(
            f"/v1/projects/{tenant.project_id}/content/upload",
            headers=tenant.headers,
            json={"caption": caption, "media": [{"url": f"https://cdn.example.com/m.{media}"}]},
        )
        assert r.status_code == 201, r.text
        r = api.post(
            f"/v1/content/{r.json()['id']}/schedule",
            headers=tenant.headers,
            json={
                "scheduledFor": at(seconds),
                "targets": [{"socialAccountId": tenant.accounts["instagram"]}],
            },
        )
        assert r.status_code == 201, r.text
        out[r.json()["items"][0]["id"]] = caption
    return out


def _settle(stack: Stack, posts: dict[str, str], timeout: float = 60) -> dict[str, ScheduledPost]:
    """Every post terminal; each caption in the ledger at most once, exactly when published,
    and the recorded media id the one the emulator made for it."""

    def rows() -> dict[str, ScheduledPost]:
        with new_session() as session:
            found = session.scalars(select(ScheduledPost).where(ScheduledPost.id.in_(posts)))
            return {p.id: p for p in found}

    def done() -> dict[str, ScheduledPost] | None:
        current = rows()
        return current if all(r.status in TERMINAL for r in current.values()) else None

    try:
        final: dict[str, ScheduledPost] = wait_until(done, timeout, interval=0.25, what="settle")
    except AssertionError:
        print({pid: (r.status, r.upload_started_at) for pid, r in rows().items()})
        print(stack.logs())
        raise
    ledger = stack.instagram_ledger()
    times = Counter(e["caption"] for e in ledger)
    media = {e["caption"]: e["externalId"] for e in ledger}
    for pid, row in final.items():
        caption = posts[pid]
        assert times[caption] <= 1, f"{pid} posted {times[caption]} times"
        assert (row.status == "published") == (times[caption] == 1), (pid, row.last_error)
        if row.status == "published":
            assert row.external_id == media[caption]
    return final


def _internal_id(public_id: str) -> str:
    with new_session() as session:
        post = session.scalars(
            select(ScheduledPost).where(ScheduledPost.public_id == public_id)
        ).one()
        return post.id


@pytest.mark.parametrize("point", ["before_claim", "after_claim", "after_prepare", "after_upload"])
def test_worker_killed_at_each_step(
    point: str, ig_api: httpx.Client, stack: Stack, gram: TenantFixture
) -> None:
    """kill -9 before the claim, while preparing, with the container ready, and after
    `media_publish` answered but before the record: published, exactly once."""
    stack.arm(**{point: 60})
    posts = _schedule(ig_api, gram)
    [post_id] = posts
    pid = stack.failpoint_pid(point, _internal_id(post_id))
    stack.arm()
    os.kill(pid, signal.SIGKILL)
    rows = _settle(stack, {_internal_id(p): c for p, c in posts.items()}, timeout=60)
    assert [r.status for r in rows.values()] == ["published"]


def test_worker_killed_while_media_publish_is_in_flight(
    ig_api: httpx.Client, stack: Stack, gram: TenantFixture
) -> None:
    """The publish lands after its worker died: the reconciler waits out the call's timeout,
    finds the container PUBLISHED and binds its media. Never a second media_publish."""
    stack.set_instagram_faults(publish_latency_ms=2000, duplicate_publish="post")
    posts = {_internal_id(p): c for p, c in _schedule(ig_api, gram).items()}
    [post_id] = posts

    def started() -> bool:
        with new_session() as session:
            row = session.get(ScheduledPost, post_id)
            return row is not None and row.upload_started_at is not None and row.owner is not None

    wait_until(started, 20, what="the point of no return")
    owner = _row_owner(post_id)
    worker_pid = _pool_pid(stack, owner)
    os.kill(worker_pid, signal.SIGKILL)
    rows = _settle(stack, posts, timeout=60)
    assert [r.status for r in rows.values()] == ["published"]


def _row_owner(post_id: str) -> str:
    with new_session() as session:
        row = session.get(ScheduledPost, post_id)
        assert row is not None and row.owner is not None
        return row.owner


def _pool_pid(stack: Stack, owner: str) -> int:
    """The pool process named in the post's `owner` (node:pid:task)."""
    match = re.search(r":(\d+):", owner)
    assert match, owner
    return int(match.group(1))


@pytest.mark.parametrize("how", ["502", "cut"])
def test_lost_media_publish_answers(
    how: str, ig_api: httpx.Client, stack: Stack, gram: TenantFixture
) -> None:
    """Every `media_publish` goes out and its answer is lost; a platform that would post a
    container twice still gets each post once."""
    stack.set_instagram_faults(
        rate_lost_publish=1.0, lost_response=how, duplicate_publish="post", seed=11
    )
    posts = {_internal_id(p): c for p, c in _schedule(ig_api, gram, n=3).items()}
    rows = _settle(stack, posts, timeout=90)
    assert {r.status for r in rows.values()} == {"published"}


def test_failing_containers_and_flaky_calls(
    ig_api: httpx.Client, stack: Stack, gram: TenantFixture
) -> None:
    """Containers that end in ERROR, rate limits and 500s everywhere: each post goes out once
    or fails with nothing posted, and none is stuck."""
    stack.set_instagram_faults(
        rate_container_error=0.3,
        rate_limited=0.1,
        rate_server_error=0.1,
        rate_server_error_publish=0.2,
        seed=5,
    )
    posts = {_internal_id(p): c for p, c in _schedule(ig_api, gram, n=6).items()}
    _settle(stack, posts, timeout=120)


def test_a_token_that_expires_mid_run(stack: Stack, ig_api: httpx.Client) -> None:
    """The first post goes out; the token expires; the next fails ACCOUNT_REAUTH_REQUIRED and
    the account shows `reauth_required` in the API."""
    stack.set_instagram_faults(token_lifetime_s=4)
    tenant = instagram_tenant("Expiring", stack.instagram_url)
    first = {_internal_id(p): c for p, c in _schedule(ig_api, tenant).items()}
    _settle(stack, first)
    with new_session() as session:
        account = session.get(SocialAccount, tenant.accounts["instagram"])
        assert account is not None and account.credentials is not None
        token = unseal(account.credentials).access_token
    wait_until(
        lambda: (
            httpx.get(f"{stack.instagram_url}/me", params={"access_token": token}).status_code
            == 400
        ),
        20,
        what="the token to expire",
    )
    second = {_internal_id(p): c for p, c in _schedule(ig_api, tenant).items()}
    rows = _settle(stack, second)
    [row] = rows.values()
    assert row.status == "failed"
    assert row.last_error is not None and row.last_error["code"] == "ACCOUNT_REAUTH_REQUIRED"
    r = ig_api.get(
        f"/v1/projects/{tenant.project_id}/social-accounts",
        headers=tenant.headers,
        params={"platform": "instagram"},
    )
    assert r.json()["items"][0]["status"] == "reauth_required"


def test_cancel_while_the_container_processes_and_after_media_publish(
    ig_api: httpx.Client, stack: Stack, gram: TenantFixture
) -> None:
    """The README's walk-through: a cancel during container processing is 200 with nothing
    in the ledger; a cancel once media_publish began is 409 and the post goes out."""
    stack.set_instagram_faults(video_processing_s=30, publish_latency_ms=3000)
    [processing] = _schedule(ig_api, gram, media="mp4")
    wait_until(
        lambda: (
            ig_api.get(f"/v1/scheduled-posts/{processing}", headers=gram.headers).json()["status"]
            == "publishing"
        ),
        20,
        what="the claim",
    )
    r = ig_api.request("DELETE", f"/v1/scheduled-posts/{processing}", headers=gram.headers)
    assert r.status_code == 200, r.text
    stack.set_instagram_faults(video_processing_s=0)
    late = _schedule(ig_api, gram, media="jpg")
    [going] = late
    internal = _internal_id(going)

    def started() -> bool:
        with new_session() as session:
            row = session.get(ScheduledPost, internal)
            return row is not None and row.upload_started_at is not None

    wait_until(started, 20, what="the point of no return")
    r = ig_api.request("DELETE", f"/v1/scheduled-posts/{going}", headers=gram.headers)
    assert r.status_code == 409, r.text
    rows = _settle(stack, {internal: late[going]})
    assert [r.status for r in rows.values()] == ["published"]
    assert len(stack.instagram_ledger()) == 1
