"""Each fault of docs/design.md injected for real against running processes, with the invariants
checked for the posts involved: the right terminal state, one ledger entry or none, none stuck."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, text

from harness.stack import ROOT, Stack, children_of, free_port, wait_until
from shared.kit.db import engine, new_session
from shared.models import TERMINAL, Event, ScheduledPost
from tests.factories import TenantFixture, at, make_tenant, schedule, upload

pytestmark = pytest.mark.integration


def _rows(ids: list[str]) -> dict[str, ScheduledPost]:
    with new_session() as session:
        return {
            p.id: p for p in session.scalars(select(ScheduledPost).where(ScheduledPost.id.in_(ids)))
        }


def _settle(stack: Stack, ids: list[str], timeout: float = 60) -> dict[str, ScheduledPost]:
    """Wait until every post is terminal; then check one ledger entry per published post."""

    def done() -> dict[str, ScheduledPost] | None:
        rows = _rows(ids)
        return rows if all(r.status in TERMINAL for r in rows.values()) else None

    try:
        rows: dict[str, ScheduledPost] = wait_until(done, timeout, interval=0.25, what="settle")
    except AssertionError:
        print({pid: (r.status, r.upload_started_at) for pid, r in _rows(ids).items()})
        print(stack.logs())
        raise
    ledger = Counter(e["idempotencyKey"] for e in stack.ledger()["posts"])
    ext = {e["idempotencyKey"]: e["externalId"] for e in stack.ledger()["posts"]}
    for pid, row in rows.items():
        assert ledger[pid] <= 1, f"{pid} posted {ledger[pid]} times"
        assert (row.status == "published") == (ledger[pid] == 1), (pid, row.status, row.last_error)
        if row.status == "published":
            assert row.external_id == ext[pid]
    return rows


def _held_task_ids(stack: Stack) -> set[str]:
    """Ids of the tasks whose messages a worker has received and not acked yet: the Redis
    transport keeps each in the broker's `unacked` hash until the task has run."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        held = client.hvals("unacked")
    finally:
        client.close()
    # Each value is [message, exchange, routing key]; the task id is in the headers.
    return {json.loads(raw)[0]["headers"]["id"] for raw in held}


def _one_post(api: httpx.Client, tenant: TenantFixture, seconds: float = 1) -> str:
    cid = upload(api, tenant)
    (post,) = schedule(api, tenant, cid, at(seconds))
    return str(post["id"])


@pytest.mark.parametrize("point", ["before_claim", "after_claim", "after_upload"])
def test_worker_killed_at_a_protocol_step(
    point: str, api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """kill -9 of the process running the task, before the claim, while preparing, and after
    the upload before recording: the post still goes out, exactly once."""
    stack.arm(**{point: 60})
    post_id = _one_post(api, live_tenant)
    pid = stack.failpoint_pid(point, post_id)
    stack.arm()
    os.kill(pid, signal.SIGKILL)
    rows = _settle(stack, [post_id], timeout=40)
    assert rows[post_id].status == "published"


def test_worker_killed_mid_upload(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """The platform is slow; the worker dies while the upload is in flight. The reaper's
    reconcile asks the platform by key and settles it without a second post."""
    stack.set_faults(latency_ms=2500)
    post_id = _one_post(api, live_tenant)

    def uploading() -> ScheduledPost | None:
        row = _rows([post_id])[post_id]
        return row if row.upload_started_at is not None else None

    row = wait_until(uploading, 20, interval=0.05, what="upload started")
    wait_until(lambda: stack.ledger()["requests"] >= 1, 5, interval=0.05, what="request sent")
    os.kill(int(row.owner.split(":")[1]), signal.SIGKILL)
    stack.set_faults(latency_ms=0)
    rows = _settle(stack, [post_id], timeout=40)
    assert rows[post_id].status == "published"


def test_whole_worker_node_killed_then_restarted(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """Both worker nodes killed with their ETA messages unacked, then started again: the
    posts they held are re-dispatched and go out once."""
    cid = upload(api, live_tenant)
    posts = schedule(api, live_tenant, cid, at(4), list(live_tenant.accounts.values()))
    ids = [p["id"] for p in posts]
    wait_until(lambda: all(r.task_id for r in _rows(ids).values()), 10, what="dispatched")
    wait_until(
        lambda: {r.task_id for r in _rows(ids).values()} <= _held_task_ids(stack),
        10,
        what="the workers to hold the ETA messages",
    )
    for name in ("worker0", "worker1"):
        os.killpg(stack.procs[name].pid, signal.SIGKILL)
        stack.procs[name].wait()
    for name in ("worker0", "worker1"):
        stack.start_worker(name)
    rows = _settle(stack, ids, timeout=40)
    assert {r.status for r in rows.values()} == {"published"}


def test_redis_restarted_empty(api: httpx.Client, stack: Stack, live_tenant: TenantFixture) -> None:
    """Every queued and ETA message is lost with Redis; PostgreSQL still knows every post,
    and each goes out once."""
    tenant = make_tenant("Flush", sandbox_url=stack.sandbox_url, extra_accounts=10)
    cid = upload(api, tenant)
    soon = schedule(api, tenant, cid, at(3), tenant.extra_accounts[:5])
    later = schedule(api, tenant, cid, at(8), tenant.extra_accounts[5:])
    ids = [p["id"] for p in soon + later]
    wait_until(lambda: all(r.task_id for r in _rows(ids).values()), 10, what="dispatched")
    stack.redis.restart_empty()  # type: ignore[union-attr]
    rows = _settle(stack, ids, timeout=60)
    assert {r.status for r in rows.values()} == {"published"}
    for pid in ids:
        assert rows[pid].published_at >= rows[pid].scheduled_for  # type: ignore[operator]


def test_task_delivered_twice(api: httpx.Client, stack: Stack, live_tenant: TenantFixture) -> None:
    """The same publish task, and a second task for the same post and token, end in one upload."""
    post_id = _one_post(api, live_tenant, seconds=2)
    row = wait_until(lambda: (r := _rows([post_id])[post_id]).task_id and r, 10)
    script = (
        "from worker.celery_app import app\n"
        f"app.send_task('publishing.publish', args=['{post_id}', {row.dispatch_version}],"
        f" task_id='{row.task_id}', queue='publishing')\n"
        f"app.send_task('publishing.publish', args=['{post_id}', {row.dispatch_version}],"
        " queue='publishing')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=stack.env(), check=True)
    rows = _settle(stack, [post_id])
    assert rows[post_id].status == "published"
    assert rows[post_id].attempts == 1


def test_database_connections_killed_mid_flight(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """pg_terminate_backend on the workers' connections, over and over, while posts publish:
    each lost transaction is retried, no post is lost or doubled."""
    tenant = make_tenant("Terminator", sandbox_url=stack.sandbox_url, extra_accounts=30)
    cid = upload(api, tenant)
    posts = schedule(api, tenant, cid, at(2), tenant.extra_accounts)
    ids = [p["id"] for p in posts]
    stop = threading.Event()
    killed = 0

    def terminator() -> None:
        nonlocal killed
        with engine().connect() as conn:
            while not stop.is_set():
                killed += len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'publisher.worker'"
                            " AND datname = current_database()"
                        )
                    ).all()
                )
                conn.commit()
                time.sleep(0.03)

    t = threading.Thread(target=terminator)
    t.start()
    try:
        # Not a wait for a condition: the fault window. Connections are cut for 6 s, which
        # spans the posts' claims, uploads and records (they are due 2 s in).
        time.sleep(6)
    finally:
        stop.set()
        t.join()
    assert killed > 0
    rows = _settle(stack, ids, timeout=60)
    assert {r.status for r in rows.values()} == {"published"}


@pytest.mark.parametrize(
    ("faults", "retried"),
    [
        # 429s and 503s are retried under one key; a post that draws one on every try has
        # found its platform unavailable and waits for it (PLATFORM_OUTAGE_*), then tries again.
        ({"rate_429": 0.5, "retry_after_s": 0.2, "seed": 1}, True),
        ({"rate_503": 0.5, "seed": 2}, True),
        # A lost response is settled by lookup (these faults leave lookups alone): every post
        # goes out, and the platform never sees a second POST.
        ({"rate_lost": 0.5, "seed": 3}, False),
        ({"rate_429": 0.2, "rate_503": 0.2, "rate_lost": 0.2, "latency_ms": 50, "seed": 4}, True),
    ],
    ids=["429", "503", "lost", "mixed"],
)
def test_flaky_platform(
    faults: dict[str, Any], retried: bool, api: httpx.Client, stack: Stack
) -> None:
    """429 (with Retry-After), 503 and lost responses: retried under one key, resolved by
    lookup, waited out when every try failed. Each post ends published with exactly one
    ledger entry: a platform that is only unavailable fails no post."""
    tenant = make_tenant("Flaky", sandbox_url=stack.sandbox_url, extra_accounts=12)
    stack.set_faults(**faults)
    cid = upload(api, tenant)
    ids = [p["id"] for p in schedule(api, tenant, cid, at(1), tenant.extra_accounts)]
    # Checks one ledger entry per published post and none for any other.
    rows = _settle(stack, ids, timeout=90)
    assert {r.status for r in rows.values()} == {"published"}, {
        pid: r.last_error for pid, r in rows.items()
    }
    requests = stack.ledger()["requests"]
    if retried:
        # (Whether any post needed a retry at all depends on the draws for its random key:
        # not asserted.)
        assert requests >= len(ids)
    else:
        assert requests == len(ids)


def test_a_platform_that_cannot_say_is_asked_again_never_posted_twice(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """The response is lost and every lookup fails: the platform cannot say now, so the post
    waits past its point of no return (a cancel loses) and is asked again later, never
    uploaded blind a second time; once lookups answer, it is found and published."""
    stack.set_faults(rate_lost=1.0, rate_lookup_503=1.0)
    post_id = _one_post(api, live_tenant)

    def waiting() -> bool:
        with new_session() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.subject_id == post_id, Event.type == "post.waiting_for_platform")
                )
                or 0
            ) > 0

    wait_until(waiting, 60, what="the post to wait for the platform")
    row = _rows([post_id])[post_id]
    assert row.status == "publishing" and row.upload_started_at is not None
    r = api.delete(f"/v1/scheduled-posts/{post_id}", headers=live_tenant.headers)
    assert r.status_code == 409, r.text
    stack.set_faults(rate_lost=0.0, rate_lookup_503=0.0)
    rows = _settle(stack, [post_id], timeout=60)
    assert rows[post_id].status == "published"
    assert stack.ledger()["requests"] == 1


def test_a_platform_down_longer_than_the_retry_budget_fails_nothing(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """The whole platform answers 503 for longer than every try of a post takes: the posts
    due meanwhile wait for it (past the point of no return on the sandbox, whose upload is
    the first call) and each goes out once when it is back, not failed."""
    tenant = make_tenant("Down", sandbox_url=stack.sandbox_url, extra_accounts=8)
    stack.set_faults(down=True)
    cid = upload(api, tenant)
    ids = [p["id"] for p in schedule(api, tenant, cid, at(1), tenant.extra_accounts)]
    with new_session() as session:

        def waited() -> bool:
            session.rollback()
            count = session.scalar(
                select(func.count(func.distinct(Event.subject_id))).where(
                    Event.subject_id.in_(ids), Event.type == "post.waiting_for_platform"
                )
            )
            return count == len(ids)

        # Every post spent its tries on the outage and waits, none failed.
        wait_until(waited, 90, what="every post to wait for the platform")
    assert {r.status for r in _rows(ids).values()} == {"publishing"}
    stack.set_faults(down=False)
    rows = _settle(stack, ids, timeout=90)
    assert {r.status for r in rows.values()} == {"published"}
    assert stack.ledger()["requests"] == len(ids)


def test_sigterm_lets_a_running_upload_finish(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """Warm shutdown: the worker stops taking work but the upload in flight completes and is
    recorded before the process exits."""
    stack.set_faults(latency_ms=2000)
    post_id = _one_post(api, live_tenant)
    row = wait_until(
        lambda: (r := _rows([post_id])[post_id]).upload_started_at is not None and r,
        20,
        interval=0.05,
    )
    pid = int(row.owner.split(":")[1])
    node = next(
        n for n, p in stack.procs.items() if n.startswith("worker") and pid in children_of(p.pid)
    )
    proc = stack.procs[node]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
        rows = _settle(stack, [post_id], timeout=5)
        assert rows[post_id].status == "published"
    finally:
        # The session's stack gets its worker back whatever happened above.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stack.start_worker(node)


def test_api_answers_503_while_the_database_is_down(stack: Stack) -> None:
    """No database: the API answers 503 UNAVAILABLE in the envelope (within the call's
    timeout); /healthz stays up."""
    port = free_port()
    env = stack.env() | {"DATABASE_URL": f"postgresql+psycopg://root@127.0.0.1:{free_port()}/x"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 20)
        r = httpx.get(
            f"{base}/v1/scheduled-posts/sp_00000000-0000-4000-8000-000000000000",
            headers={"Authorization": "Bearer lp_live_abc_def"},
            timeout=20,
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "UNAVAILABLE"
        assert r.json()["error"]["requestId"] == r.headers["x-request-id"]
        assert httpx.get(f"{base}/readyz").status_code == 503
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_worker_healthcheck(stack: Stack) -> None:
    """The orchestrator's probe: 0 with the worker answering, non-zero for an unknown node."""

    def probe(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "healthcheck", "worker", "--name", name],
            check=False,
            cwd=ROOT,
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = probe("worker0@%h")
    assert ok.returncode == 0, ok.stderr
    assert probe("nobody@nowhere").returncode != 0


def _ticks_sent(stack: Stack, names: list[str]) -> dict[str, int]:
    """How many ticks each beat has sent, from its log."""
    return {
        name: (stack.logdir / f"{name}.log").read_text(errors="replace").count("Sending due task")
        for name in names
    }


def _ticks_lease() -> tuple[str, Any] | None:
    with new_session() as session:
        row = session.execute(
            text("SELECT holder, acquired_at FROM control_leases WHERE name = 'beat.ticks'")
        ).first()
    return (str(row.holder), row.acquired_at) if row else None


def test_any_number_of_beats_one_sends_the_ticks_and_another_takes_over(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """Three beats: only the lease's holder sends ticks. Kill -9 it and another takes over
    within the lease (BEAT_LEASE_S, 5 s): posts due after the kill are dispatched and
    published, each once."""
    names = ["beat", "beat1", "beat2"]
    for name in names[1:]:
        stack.spawn(name, "beat")
    by_pid = {stack.procs[name].pid: name for name in names}
    try:
        lease = wait_until(_ticks_lease, 20, what="a holder of the ticks' lease")
        holder = by_pid[int(lease[0].split(":")[1])]
        before = _ticks_sent(stack, names)
        wait_until(
            lambda: _ticks_sent(stack, [holder])[holder] >= before[holder] + 5,
            30,
            what="five more ticks from the holder",
        )
        after = _ticks_sent(stack, names)
        # Unless the lease changed hands meanwhile (a holder paused past its lease on a loaded
        # machine: then both sent, safely), no other beat sent a tick.
        if _ticks_lease() == lease:
            assert {n: after[n] - before[n] for n in names if n != holder} == {
                n: 0 for n in names if n != holder
            }
        os.killpg(stack.procs[holder].pid, signal.SIGKILL)
        stack.procs[holder].wait()
        killed_at = time.monotonic()
        post_ids = [_one_post(api, live_tenant, seconds=2) for _ in range(5)]
        new = wait_until(
            lambda: (lease_now := _ticks_lease()) and lease_now[0] != lease[0] and lease_now,
            20,
            what="another beat to take the lease",
        )
        took_over = time.monotonic() - killed_at
        successor = by_pid[int(new[0].split(":")[1])]
        assert successor != holder and stack.procs[successor].poll() is None
        rows = _settle(stack, post_ids, timeout=60)
        assert {r.status for r in rows.values()} == {"published"}
        print(f"{holder} killed; {successor} took the ticks over after {took_over:.1f}s")
    finally:
        for name in names:
            proc = stack.procs[name]
            if proc.poll() is None and name != "beat":
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
        if stack.procs["beat"].poll() is not None:
            stack.spawn("beat", "beat")
        for name in names[1:]:
            stack.procs.pop(name, None)
