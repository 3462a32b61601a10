"""TikTok against running processes (the stack's API, workers, beat and its TikTok emulator):
asynchronous completion held by no worker, kill -9 after `init` before its `publish_id` is
saved, lost `init` and status answers, moderation longer than a lease, and a cancel during the
creator check. Posts are matched to the emulator's ledger by caption, unique per test."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from harness.stack import Stack, wait_until
from shared.accounts.accounts import emulator_tiktok_account
from shared.kit.db import new_session, transaction
from shared.models import TERMINAL, ScheduledPost
from shared.tenancy.tenants import create_tenant
from tests.factories import TenantFixture, at, fixture_of

pytestmark = pytest.mark.integration


@pytest.fixture
def tt_api(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client on the stack's API; the TikTok emulator starts empty, processing a post
    in half a second and moderating it in a quarter more."""
    stack.reset_tiktok()
    stack.set_tiktok_faults(processing_s=0.5, moderation_s=0.25)
    stack.arm()
    with httpx.Client(base_url=stack.api_url, timeout=30) as c:
        yield c


@pytest.fixture
def creator(stack: Stack, tt_api: httpx.Client) -> TenantFixture:
    issued = emulator_tiktok_account(stack.tiktok_url, timeout=5)
    with transaction() as tx:
        t = create_tenant(
            tx.session,
            f"Tok {uuid.uuid4().hex[:6]}",
            ["tiktok"],
            sandbox_url=stack.sandbox_url,
            issued={"tiktok": issued},
        )
    return fixture_of(t)


def _schedule(
    api: httpx.Client, tenant: TenantFixture, n: int = 1, mode: str = "publish"
) -> dict[str, str]:
    """n video posts on the creator, each with its own caption: internal id -> caption."""
    out = {}
    for _ in range(n):
        caption = f"tok {uuid.uuid4().hex[:12]}"
        r = api.post(
            f"/v1/projects/{tenant.project_id}/content/upload",
            headers=tenant.headers,
            json={"caption": caption, "media": [{"url": "https://cdn.example.com/v.mp4"}]},
        )
        assert r.status_code == 201, r.text
        r = api.post(
            f"/v1/content/{r.json()['id']}/schedule",
            headers=tenant.headers,
            json={
                "scheduledFor": at(1),
                "targets": [{"socialAccountId": tenant.accounts["tiktok"], "mode": mode}],
            },
        )
        assert r.status_code == 201, r.text
        out[r.json()["items"][0]["id"]] = caption
    return out


def _rows(ids: list[str]) -> dict[str, ScheduledPost]:
    with new_session() as session:
        found = session.scalars(select(ScheduledPost).where(ScheduledPost.id.in_(ids)))
        return {p.id: p for p in found}


def _settle(stack: Stack, posts: dict[str, str], timeout: float = 60) -> dict[str, ScheduledPost]:
    """Every post terminal; each caption made by TikTok at most once, exactly when the post
    is published (or a draft), with the recorded id the one TikTok gave."""

    def done() -> dict[str, ScheduledPost] | None:
        rows = _rows(list(posts))
        return rows if all(r.status in TERMINAL for r in rows.values()) else None

    try:
        final: dict[str, ScheduledPost] = wait_until(done, timeout, interval=0.25, what="settle")
    except AssertionError:
        print({p: (r.status, r.awaiting_since, r.polls) for p, r in _rows(list(posts)).items()})
        print(stack.logs())
        raise
    ledger = [e for e in stack.tiktok_ledger() if e["status"] != "FAILED"]
    times = Counter(e["title"] or e["caption"] for e in ledger)
    for pid, row in final.items():
        made = [e for e in ledger if (e["title"] or e["caption"]) == posts[pid]]
        assert times[posts[pid]] <= 1, f"{pid} posted {times[posts[pid]]} times"
        assert (row.status in ("published", "draft")) == (len(made) == 1), (pid, row.last_error)
        if row.status == "published":
            assert row.external_id == made[0]["externalId"]
    return final


def test_a_video_goes_out_with_no_worker_held(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    posts = _schedule(tt_api, creator, n=3)
    rows = _settle(stack, posts)
    assert {r.status for r in rows.values()} == {"published"}
    assert all(r.polls >= 1 and r.platform_handle for r in rows.values())


def test_a_draft_ends_draft(tt_api: httpx.Client, stack: Stack, creator: TenantFixture) -> None:
    posts = _schedule(tt_api, creator, mode="draft")
    # An inbox upload carries no title: the ledger shows it under no caption, so match by id.
    [post_id] = posts
    final = wait_until(
        lambda: (r := _rows([post_id])[post_id]).status in TERMINAL and r, 60, what="draft"
    )
    assert final.status == "draft"
    [entry] = stack.tiktok_ledger()
    assert entry["inbox"] is True and entry["containerId"] == final.platform_handle


def test_killed_after_init_before_the_publish_id_is_saved(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    """The worker dies with TikTok's answer in hand: no handle on the row. The reconciler
    finds the post in the creator's public videos by its caption: published, once."""
    stack.arm(after_upload=60)
    posts = _schedule(tt_api, creator)
    [post_id] = posts
    pid = stack.failpoint_pid("after_upload", post_id)
    stack.arm()
    os.kill(pid, signal.SIGKILL)
    rows = _settle(stack, posts)
    assert [r.status for r in rows.values()] == ["published"]


def test_lost_init_answers_are_never_retried_blind(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    stack.set_tiktok_faults(rate_lost_init=1.0, processing_s=0.2, moderation_s=0)
    posts = _schedule(tt_api, creator, n=2)
    rows = _settle(stack, posts)
    assert {r.status for r in rows.values()} == {"published"}
    assert len(stack.tiktok_ledger()) == 2


def test_lost_status_answers_keep_the_post_waiting(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    """Status reads whose answers are lost tell nothing: the post keeps waiting, polled with
    backoff, and completes once TikTok's answers come through again."""
    stack.set_tiktok_faults(processing_s=8)
    posts = _schedule(tt_api, creator)
    [post_id] = posts
    wait_until(lambda: _rows([post_id])[post_id].awaiting_since, 30, what="the init")
    stack.set_tiktok_faults(rate_lost=1.0)
    polled = _rows([post_id])[post_id].polls
    wait_until(
        lambda: _rows([post_id])[post_id].polls >= polled + 2, 30, what="two lost status reads"
    )
    assert _rows([post_id])[post_id].status == "publishing"
    stack.set_tiktok_faults(rate_lost=0.0)
    rows = _settle(stack, posts)
    assert [r.status for r in rows.values()] == ["published"]


def test_moderation_longer_than_a_lease_is_not_a_stuck_post(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    """The stack's lease is 5 s; TikTok moderates for 8: the reaper leaves the post alone."""
    stack.set_tiktok_faults(moderation_s=8)
    posts = _schedule(tt_api, creator)
    rows = _settle(stack, posts, timeout=90)
    [row] = rows.values()
    assert row.status == "published"
    assert row.attempts == 1  # claimed once, never reaped or reconciled


def test_a_cancel_during_the_creator_check_wins(
    tt_api: httpx.Client, stack: Stack, creator: TenantFixture
) -> None:
    stack.set_tiktok_faults(latency_ms=3000)
    posts = _schedule(tt_api, creator)
    [post_id] = posts
    wait_until(lambda: _rows([post_id])[post_id].status == "publishing", 30, what="the claim")
    r = tt_api.request("DELETE", f"/v1/scheduled-posts/{post_id}", headers=creator.headers)
    assert r.status_code == 200, r.text
    stack.set_tiktok_faults(latency_ms=0)

    def stopped() -> bool:
        for log in stack.logdir.glob("worker*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if post_id in line and "canceled before upload" in line:
                    return True
        return False

    wait_until(stopped, 30, what="the worker to stop at the point of no return")
    assert stack.tiktok_ledger() == []
