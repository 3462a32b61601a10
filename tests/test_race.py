"""Cancel racing the claim on the same rows, hundreds of times: threads on the transitions,
then HTTP cancels against real worker processes; the invariants of docs/design.md checked by
the chaos checker.

Checked by hand: with the row locks taken out of shared/publishing/posts.py the transition
races and the sandbox HTTP race fail. The transition race then reports ~160 uploads after a
200 cancel, double uploads and posts stuck in publishing; the Instagram transition race 8
uploads after a 200 cancel, the TikTok one 13; the HTTP race 1-21 per run. The Instagram HTTP
race still passes without the locks, and the TikTok HTTP race fails in about half the runs
(one upload after a 200 cancel): their stack's 5 s lease is shorter than a platform call's
timeout plus the margin, so the worker renews (and so re-checks its token) just before
`media_publish` or `init`, a second guard that leaves the lock only the few milliseconds
between that renewal and the point of no return; the transition races' 60 s lease leaves
that guard out. The disconnect race, with the locks of `cancel_for_account` and the
worker's transitions out, reports 18-28 uploads after the disconnect canceled their post."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chaos.checker import check, explain
from chaos.history import Call, History, LedgerEntry
from chaos.run import emulator_keys, read_emulator_ledger, read_ledger, read_state
from harness.stack import Stack, wait_until
from shared.content.containers import create_container, get_project
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.settings import Settings, get_settings
from shared.models import TERMINAL, ScheduledPost, SocialAccount
from shared.publishing import posts
from shared.publishing.platforms import PlatformAdapter, Preparation, Uploaded, UploadPayload
from shared.publishing.posts import CancelResult
from shared.publishing.protocol import run_poll, run_publish
from shared.publishing.usecases import cancel_post
from tests.conftest import TEST_DATABASE_URL
from tests.emulators import (
    VIDEO,
    due_post,
    instagram_tenant,
    more_instagram_accounts,
    more_tiktok_accounts,
    served_instagram,
    served_tiktok,
)
from tests.factories import TenantFixture, at_one_instant, make_tenant, upload

SETTINGS = Settings(lease_s=60)


def _assert_invariants(history: History) -> None:
    """the design's invariants (docs/design.md), by the same checker the chaos runs use."""
    verdicts = check(history)
    broken = [v for v in verdicts if not v.ok]
    assert not broken, "\n".join(
        v.line() + "".join(f"\n  {explain(history, pid)}" for pid in list(v.violations)[:5])
        for v in broken
    )


REASON = "race test"


@dataclass
class Ledger:
    """What the test platform received, per post (by idempotency key: the post's key)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uploads: dict[str, list[datetime]] = field(default_factory=dict)

    def upload(self, post_id: str) -> None:
        with self.lock:
            self.uploads.setdefault(post_id, []).append(utcnow())


@dataclass
class CountingPlatform:
    """A platform adapter that records every upload and never fails."""

    ledger: Ledger
    idempotent = True

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        return Preparation()

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded:
        self.ledger.upload(key)
        return Uploaded(f"ext-{key}", None)

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        with self.ledger.lock:
            found = key in self.ledger.uploads
        return Uploaded(f"ext-{key}", None) if found else None


def _queued_posts(tenant: TenantFixture, n: int) -> list[tuple[str, int]]:
    """n posts, already due (scheduledFor is whole seconds), each with a task token.

    The integration tier's stack (real beat and workers) shares this database. Its dispatcher
    re-dispatches a due post whose task has not claimed it within REDISPATCH_GRACE_S, and a
    slow machine takes longer than that to run all 300 races; so the tasks here count as
    sent an hour from now, and that dispatcher leaves these posts to this test's workers."""
    now = utcnow() - timedelta(seconds=2)
    sent = utcnow() + timedelta(hours=1)
    actor = Actor(tenant.organization_id, tenant.key_id, "race-setup")
    out = []
    with transaction() as tx:
        project = get_project(tx.session, tenant.organization_id, tenant.project_id)
        container = create_container(
            tx.session, project, "race", [("https://x.test/a.mp4", None)], now=now
        )
        for _ in range(n):
            scheduled = posts.schedule(
                tx.session,
                actor,
                container,
                now,
                [posts.Target(tenant.accounts["tiktok"])],
                now=sent,
                task_id_for_now=True,
            )
            out += [(d.post_id, d.token) for d in scheduled.dispatches]
    return out


def _worker_side(post_id: str, token: int, owner: str, ledger: Ledger, rng: random.Random) -> str:
    """The worker's own publish use case, with the platform replaced by a counter."""

    def adapter(account: SocialAccount, settings: Settings) -> PlatformAdapter:
        time.sleep(rng.uniform(0, 0.002))  # part of prepare: a cancel may land here
        return CountingPlatform(ledger)

    return run_publish(post_id, token, owner, make_adapter=adapter, settings=SETTINGS).value


def _cancel_side(tenant: TenantFixture, post_id: str, delay: float) -> tuple[float, float, int]:
    """The API's cancel use case: 200 when it won, 409 otherwise, as the route answers."""
    time.sleep(delay)
    actor = Actor(tenant.organization_id, tenant.key_id, f"race-{post_id}")
    sent = time.time()
    done = cancel_post(actor, post_id, REASON, now=utcnow())
    return sent, time.time(), 200 if done.result == CancelResult.WON else 409


def test_cancel_races_claim_on_the_transitions(tenant: TenantFixture) -> None:
    """Per post: two deliveries of its task (duplicate delivery) and one cancel, released
    together; the cancel lands before, between and after the worker's steps."""
    n = 300
    rng = random.Random(7)
    ledger = Ledger()
    batch = _queued_posts(tenant, n)
    results: dict[str, tuple[float, float, int]] = {}
    worker_results: Counter[str] = Counter()

    def run_one(n: int, post_id: str, token: int) -> None:
        start = threading.Barrier(3)
        seed = rng.random()
        # A quarter of the posts give the cancel the head start instead (the workers wait up
        # to 50 ms): without it, a cancel won before the claim only when its random delay
        # beat the claim, a few runs in ten none at all, and the check below failed a correct
        # system.
        cancel_first = n % 4 == 0
        cancel_delay = 0.0 if cancel_first else random.Random(seed).uniform(0, 0.05)

        def worker(i: int) -> None:
            start.wait(timeout=10)
            r = random.Random(seed + i)
            if cancel_first:
                time.sleep(r.uniform(0.02, 0.05))
            outcome = _worker_side(post_id, token, f"w{i}", ledger, r)
            worker_results[outcome] += 1

        def canceller() -> None:
            start.wait(timeout=10)
            results[post_id] = _cancel_side(tenant, post_id, cancel_delay)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        threads.append(threading.Thread(target=canceller))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda npt: run_one(npt[0], *npt[1]), enumerate(batch)))

    assert len(results) == n
    history = History()
    for pid, (sent, answered, code) in results.items():
        history.record(Call("cancel", pid, sent, answered, code, reason=REASON))
    history.ledger = [
        LedgerEntry(pid, f"ext-{pid}", at) for pid, times in ledger.uploads.items() for at in times
    ]
    read_state(history, [pid for pid, _ in batch], TEST_DATABASE_URL)
    _assert_invariants(history)
    won = [pid for pid, (_, _, code) in results.items() if code == 200]
    lost = [pid for pid, (_, _, code) in results.items() if code == 409]
    # The race really raced: cancels won against claimed posts and lost to started uploads.
    with new_session() as session:
        claimed = set(
            session.scalars(select(ScheduledPost.id).where(ScheduledPost.attempted_at.is_not(None)))
        )
    won_after_claim = [pid for pid in won if pid in claimed]
    print(
        f"\n{n} races: {len(won)} cancels won ({len(won_after_claim)} after the claim), "
        f"{len(lost)} lost to the upload; worker outcomes {dict(worker_results)}"
    )
    assert won_after_claim, "no cancel landed between claim and upload; widen the jitter"
    assert lost, "no cancel lost to an upload; the race did not race"
    assert len(won) - len(won_after_claim) > 0, "no cancel won before the claim"


def _race_on_the_transitions(
    tenant: TenantFixture,
    batch: list[tuple[str, int]],
    delays: tuple[float, float],
    emulator_url: str,
) -> tuple[set[str], set[str], Counter[str]]:
    """Each post's publish use case raced by one cancel after a delay drawn from `delays`;
    posts the platform completes on their own are then polled to the end. The invariants
    are checked on the emulator's ledger; the cancels won and lost, and the workers'
    outcomes."""
    rng = random.Random(5)
    wait = {pid: rng.uniform(*delays) for pid, _ in batch}
    results: dict[str, tuple[float, float, int]] = {}
    outcomes: Counter[str] = Counter()

    def worker(post_id: str, token: int) -> None:
        outcomes[run_publish(post_id, token, "w", settings=SETTINGS).value] += 1

    def canceller(post_id: str) -> None:
        results[post_id] = _cancel_side(tenant, post_id, wait[post_id])

    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = []
        for post_id, token in batch:
            futures.append(pool.submit(worker, post_id, token))
            futures.append(pool.submit(canceller, post_id))
        for f in futures:
            f.result()
    ids = [pid for pid, _ in batch]
    deadline = time.monotonic() + 60
    while awaiting := _awaiting(ids):
        assert time.monotonic() < deadline, f"{len(awaiting)} posts never completed"
        for pid, token in awaiting:
            run_poll(pid, token, settings=SETTINGS)
        time.sleep(0.2)
    history = History()
    for pid, (sent, answered, code) in results.items():
        history.record(Call("cancel", pid, sent, answered, code, reason=REASON))
    read_emulator_ledger(history, emulator_url, emulator_keys(TEST_DATABASE_URL, ids))
    read_state(history, ids, TEST_DATABASE_URL)
    _assert_invariants(history)
    won = {pid for pid, (_, _, code) in results.items() if code == 200}
    lost = {pid for pid, (_, _, code) in results.items() if code == 409}
    return won, lost, outcomes


def _awaiting(ids: list[str]) -> list[tuple[str, int]]:
    with new_session() as session:
        rows = session.scalars(
            select(ScheduledPost).where(
                ScheduledPost.id.in_(ids), ScheduledPost.awaiting_since.is_not(None)
            )
        ).all()
        return [(p.id, p.dispatch_version) for p in rows]


def test_cancel_races_the_instagram_publish_on_the_transitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's publish use case with the real Instagram adapter (container, poll,
    quota, media_publish) against the emulator, each post raced by one cancel aimed at its
    point of no return: one container poll (0.25 s) after the claim, where a 20 ms failpoint
    holds the row lock. With no idempotency key, only the lock decides."""
    points = tmp_path / "failpoints"
    points.write_text("at_point_of_no_return=0.02\n")
    monkeypatch.setattr(get_settings(), "failpoints_file", str(points))
    with served_instagram(image_processing_s=0.05, quota_total=1000, seed=3) as ig:
        tenant = instagram_tenant("IgThreads", ig.url)
        accounts = [tenant.accounts["instagram"], *more_instagram_accounts(tenant, ig.url, 4)]
        batch = [
            due_post(tenant, f"thread race {i}", account_id=a) for i in range(24) for a in accounts
        ]
        won, lost, outcomes = _race_on_the_transitions(tenant, batch, (0.15, 0.45), ig.url)
    claimed = _won_after_claim(won)
    print(
        f"\n{len(batch)} Instagram races: {len(won)} cancels won ({len(claimed)} after the "
        f"claim), {len(lost)} lost to media_publish; worker outcomes {dict(outcomes)}"
    )
    assert claimed, "no cancel landed while a container processed"
    assert lost, "no cancel lost to a media_publish"


def test_cancel_races_the_tiktok_init_on_the_transitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on TikTok: the creator check (150 ms of platform latency) between the claim
    and the point of no return, then `init`, then polls until TikTok completes each post."""
    points = tmp_path / "failpoints"
    points.write_text("at_point_of_no_return=0.02\n")
    monkeypatch.setattr(get_settings(), "failpoints_file", str(points))
    with served_tiktok(
        latency_ms=150,
        processing_s=0.2,
        moderation_s=0.1,
        daily_cap=1000,
        enforce_rate_limits=False,
        seed=3,
    ) as tt:
        tenant = make_tenant("TokThreads")
        accounts = more_tiktok_accounts(tenant, tt.url, 5)
        batch = [
            due_post(tenant, f"tok race {i}", [VIDEO], account_id=a)
            for i in range(24)
            for a in accounts
        ]
        won, lost, outcomes = _race_on_the_transitions(tenant, batch, (0.05, 0.4), tt.url)
    claimed = _won_after_claim(won)
    print(
        f"\n{len(batch)} TikTok races: {len(won)} cancels won ({len(claimed)} after the "
        f"claim), {len(lost)} lost to init; worker outcomes {dict(outcomes)}"
    )
    assert claimed, "no cancel landed during the creator check"
    assert lost, "no cancel lost to an init"


def _won_after_claim(won: set[str]) -> set[str]:
    """Of these canceled posts, the ones a worker had claimed first."""
    with new_session() as session:
        return set(
            session.scalars(
                select(ScheduledPost.id).where(
                    ScheduledPost.id.in_(won), ScheduledPost.attempted_at.is_not(None)
                )
            )
        )


def _race_cancels(
    stack: Stack,
    tenant: TenantFixture,
    post_ids: list[str],
    instant: datetime,
    spread_s: float = 2.5,
    react_s: tuple[float, float] = (0.0, 0.0),
) -> list[Call]:
    """Cancel every post over HTTP, at a planned moment up to `spread_s` after `instant` or
    a moment drawn from `react_s` after a worker is seen to claim it; then wait until all are
    terminal. The cancels' calls."""
    # Half the posts get a cancel at a planned moment around the instant; the other half get
    # one the moment a worker is seen to claim them, aimed at the window before the upload.
    rng = random.Random(11)
    planned = set(rng.sample(post_ids, len(post_ids) // 2))
    plan = {pid: rng.uniform(-0.1, spread_s) for pid in planned}
    calls: list[Call] = []

    http = httpx.Client(base_url=stack.api_url, timeout=30, limits=httpx.Limits(max_connections=32))

    def cancel(pid: str) -> None:
        sent = time.time()
        r = http.request(
            "DELETE", f"/v1/scheduled-posts/{pid}", headers=tenant.headers, json={"reason": REASON}
        )
        assert r.status_code in (200, 409), r.text
        calls.append(Call("cancel", pid, sent, time.time(), r.status_code, reason=REASON))

    def after_the_claim(pid: str, delay: float) -> None:
        time.sleep(delay)
        cancel(pid)

    def at_planned_time(pid: str) -> None:
        delay = (instant + timedelta(seconds=plan[pid]) - utcnow()).total_seconds()
        if delay > 0:
            time.sleep(delay)
        cancel(pid)

    # Two pools, so that reactive cancels never queue behind planned ones still sleeping.
    with ThreadPoolExecutor(max_workers=16) as timed, ThreadPoolExecutor(max_workers=16) as pool:
        futures = [timed.submit(at_planned_time, pid) for pid in sorted(planned, key=plan.get)]
        waiting = set(post_ids) - planned
        deadline = time.monotonic() + 60
        while waiting and time.monotonic() < deadline:
            with new_session() as session:
                seen = set(
                    session.scalars(
                        select(ScheduledPost.id).where(
                            ScheduledPost.id.in_(waiting), ScheduledPost.status != "queued"
                        )
                    )
                )
            for pid in sorted(seen):
                futures.append(pool.submit(after_the_claim, pid, rng.uniform(*react_s)))
            waiting -= seen
            time.sleep(0.01)
        for f in futures:
            f.result()
    http.close()

    def all_terminal() -> dict[str, Any] | None:
        with new_session() as session:
            rows = {
                p.id: p
                for p in session.scalars(
                    select(ScheduledPost).where(ScheduledPost.id.in_(post_ids))
                )
            }
        if all(r.status in TERMINAL for r in rows.values()):
            return rows
        return None

    wait_until(all_terminal, 90, interval=0.5, what="all posts terminal")
    return calls


@pytest.mark.integration
def test_http_cancels_race_real_workers(stack: Stack, api: httpx.Client) -> None:
    """200 posts due at the same instant, two worker processes claiming them, and 16 client
    threads cancelling each one, at a moment spread around that instant or as soon as a
    worker is seen to claim it (16 more threads).

    Preparing a payload takes a millisecond here, so a cancel rarely lands between a claim
    and the point of no return; a 12 ms failpoint there stands in for a real platform's
    prepare step (fetching media metadata, say) and gives the lock something to decide."""
    stack.arm(after_claim=0.012)
    tenant = make_tenant("Racer", sandbox_url=stack.sandbox_url, extra_accounts=50)
    containers = [upload(api, tenant, caption=f"wave {i}") for i in range(4)]
    post_ids, instant = at_one_instant(api, tenant, containers, tenant.extra_accounts, 4)
    assert len(post_ids) == 200

    calls = _race_cancels(stack, tenant, post_ids, instant)
    history = History(calls=calls)
    read_ledger(history, stack.sandbox_url)
    read_state(history, post_ids, TEST_DATABASE_URL)
    _assert_invariants(history)
    won = {c.post_id for c in calls if c.status == 200 and c.post_id}
    lost = {c.post_id for c in calls if c.status == 409}
    stack.arm()
    claimed = _won_after_claim(won)
    print(
        f"\n200 HTTP races: {len(won)} cancels won ({len(claimed)} after the claim), "
        f"{len(lost)} lost to the upload"
    )
    assert claimed, "no cancel landed between a claim and the point of no return"
    assert won and lost, (
        f"the cancels did not straddle the claims: {len(won)} won, {len(lost)} lost"
    )


def _http_race_on_an_emulator(
    stack: Stack,
    api: httpx.Client,
    tenant: TenantFixture,
    accounts: list[str],
    emulator_url: str,
    react_s: tuple[float, float],
) -> tuple[History, set[str], set[str], set[str]]:
    """200 posts (20 captions on 10 accounts) due at one instant, raced by HTTP cancels
    against the stack's workers; the invariants checked on the emulator's ledger, matched to
    posts by account and caption. The history, the cancels won and lost, and those won after
    a worker's claim.

    Planned cancels spread over the time the two nodes take to reach the platform with all
    200, so many land after the irreversible call began; the others `react_s` after a claim
    is seen, aimed into the platform step before the point of no return. A 20 ms failpoint
    inside the point of no return's transaction, under the row lock, gives those cancels
    something to decide."""
    containers = [upload(api, tenant, caption=f"wave {i}") for i in range(20)]
    post_ids, instant = at_one_instant(api, tenant, containers, accounts, 6)
    assert len(post_ids) == 200
    assert utcnow() < instant, "scheduling took longer than the lead; raise it"
    stack.arm(at_point_of_no_return=0.02)
    calls = _race_cancels(stack, tenant, post_ids, instant, spread_s=12, react_s=react_s)
    stack.arm()
    history = History(calls=calls)
    read_emulator_ledger(history, emulator_url, emulator_keys(TEST_DATABASE_URL, post_ids))
    read_state(history, post_ids, TEST_DATABASE_URL)
    _assert_invariants(history)
    won = {c.post_id for c in calls if c.status == 200 and c.post_id}
    lost = {c.post_id for c in calls if c.status == 409 and c.post_id}
    assert len(history.ledger) == len(lost)
    return history, won, lost, _won_after_claim(won)


@pytest.mark.integration
def test_http_cancels_race_real_workers_on_instagram(stack: Stack, api: httpx.Client) -> None:
    """The same race on the Instagram emulator, where nothing dedupes a publish. Each post
    waits for its container to finish between the claim and the point of no return (one
    container poll, 0.25 s), so cancels land in that window without a failpoint."""
    stack.reset_instagram()
    stack.set_instagram_faults(quota_total=1000, image_processing_s=0.05, video_processing_s=0.3)
    tenant = instagram_tenant("IgRacer", stack.instagram_url)
    accounts = [tenant.accounts["instagram"]]
    accounts += more_instagram_accounts(tenant, stack.instagram_url, 9)
    history, won, lost, claimed = _http_race_on_an_emulator(
        stack, api, tenant, accounts, stack.instagram_url, react_s=(0.22, 0.32)
    )
    print(
        f"\n200 Instagram races: {len(won)} cancels won ({len(claimed)} while the container "
        f"processed), {len(lost)} lost to media_publish; {len(history.ledger)} public posts"
    )
    assert claimed, "no cancel landed while a container processed"
    assert lost, "no cancel lost to a media_publish; the race did not race"


@pytest.mark.integration
def test_http_cancels_race_real_workers_on_tiktok(stack: Stack, api: httpx.Client) -> None:
    """The same race on the TikTok emulator. Between the claim and the point of no return
    each post asks TikTok for its creator's info (200 ms of platform latency here), so
    cancels land in that window without a failpoint; after `init` no worker waits, and polls
    complete each post as TikTok finishes processing it."""
    stack.reset_tiktok()
    stack.set_tiktok_faults(
        latency_ms=200,
        processing_s=0.5,
        moderation_s=0.2,
        daily_cap=1000,
        enforce_rate_limits=False,
    )
    tenant = make_tenant("TokRacer", sandbox_url=stack.sandbox_url)
    accounts = more_tiktok_accounts(tenant, stack.tiktok_url, 10)
    history, won, lost, claimed = _http_race_on_an_emulator(
        stack, api, tenant, accounts, stack.tiktok_url, react_s=(0.1, 0.25)
    )
    print(
        f"\n200 TikTok races: {len(won)} cancels won ({len(claimed)} during the creator "
        f"check), {len(lost)} lost to init; {len(history.ledger)} TikTok posts"
    )
    assert claimed, "no cancel landed during a creator check"
    assert lost, "no cancel lost to an init; the race did not race"


def test_a_disconnect_races_the_claims_of_its_account_s_posts(tenant: TenantFixture) -> None:
    """120 due posts of one account, each delivered twice to racing workers, and the
    account disconnected in the middle: every post the disconnect canceled never reaches the
    platform, every other one completes, once (the checker counts each canceled post as a
    cancel answered 200 when the disconnect committed)."""
    from shared.accounts.accounts import disconnect_account

    n = 120
    ledger = Ledger()
    batch = _queued_posts(tenant, n)
    rng = random.Random(13)
    outcomes: Counter[str] = Counter()
    timing: dict[str, float] = {}

    def worker(post_id: str, token: int, i: int) -> None:
        r = random.Random(f"{post_id}:{i}")
        outcomes[_worker_side(post_id, token, f"w{i}", ledger, r)] += 1

    def disconnect() -> list[str]:
        # In the thick of it: once a third have gone out, while workers hold claims.
        wait_until(lambda: len(ledger.uploads) >= n // 3, 30, interval=0.001, what="uploads")
        time.sleep(rng.uniform(0, 0.01))
        timing["sent"] = time.time()
        done = disconnect_account(tenant.accounts["tiktok"], "account revoked", operator="race")
        timing["answered"] = time.time()
        return done.canceled

    with ThreadPoolExecutor(max_workers=9) as pool:
        cut = pool.submit(disconnect)
        futures = [pool.submit(worker, pid, tok, i) for pid, tok in batch for i in range(2)]
        for f in futures:
            f.result()
        canceled = cut.result()
    history = History()
    for pid in canceled:
        history.record(
            Call("cancel", pid, timing["sent"], timing["answered"], 200, reason="account revoked")
        )
    history.ledger = [
        LedgerEntry(pid, f"ext-{pid}", at) for pid, times in ledger.uploads.items() for at in times
    ]
    ids = [pid for pid, _ in batch]
    read_state(history, ids, TEST_DATABASE_URL)
    _assert_invariants(history)
    statuses = Counter(p.status for p in history.posts.values())
    print(f"\ndisconnect raced {n} posts: {dict(statuses)}; worker outcomes {dict(outcomes)}")
    assert canceled, "the disconnect canceled nothing: it came after every upload"
    assert _won_after_claim(set(canceled)), "no post was canceled between claim and upload"
    assert statuses["published"], "nothing was published before the disconnect: no race"
    assert set(statuses) <= {"published", "canceled", "failed"}
    # Posts the workers reached after the disconnect failed without calling the platform.
    failed = [p for p in history.posts.values() if p.status == "failed"]
    assert all(p.last_error_code == "ACCOUNT_DISCONNECTED" for p in failed), failed
