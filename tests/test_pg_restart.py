"""A real PostgreSQL restart: the stack runs on a private cluster of its own, which is stopped
mid-run (fast, then as a crash) and started again while posts publish and cancels arrive,
with the stack straight on the server and then behind a private PgBouncer.

The API answers 503 UNAVAILABLE while the server is down, and only then (behind the pooler
a request may instead be held until the server is back, then served); workers, beat and
the webhook worker carry on by themselves; every post ends once, none is lost, doubled or
stuck; a cancel answered 200 before the crash is still a canceled post after it. Skipped,
saying why, where no PostgreSQL 15+ initdb can run (harness/pgcluster.py)."""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from chaos.checker import check, explain
from chaos.history import History
from chaos.load import Client, iso
from chaos.receiver import Receiver, serving
from chaos.run import CHAOS_ENV, HOOKED, pending_deliveries, read_ledger, read_state, receipts
from harness import pgbouncer
from harness.pgbouncer import PrivatePgBouncer
from harness.pgcluster import PostgresUnavailable, PrivatePostgres, StopMode, unavailable_reason
from harness.stack import Stack, wait_until
from shared.kit.migrate import migrate
from shared.models import TERMINAL, DeliveryStatus, ScheduledPost, WebhookDelivery
from shared.tenancy.tenants import create_tenant

pytestmark = pytest.mark.integration

# The run: a schedule request every SCHEDULE_EVERY_S for LOAD_S, each for two accounts and
# due LEADS_S after it is sent, so posts fall due before, during and after the outage; the
# server stops OUTAGE_AT_S into the run and stays down DOWN_S.
LOAD_S = 24.0
SCHEDULE_EVERY_S = 0.5
LEADS_S = (1.5, 4.0, 7.0, 11.0)
OUTAGE_AT_S = 8.0
DOWN_S = 4.0
CANCEL_SHARE = 0.35
# Containers x accounts must cover every request's targets: no account gets one twice.
CONTAINERS = 6
ACCOUNTS = 24
PROBE_EVERY_S = 0.1
# Far longer than any answer should take, even on a machine busy with other work (an answer
# while the server is down is bounded by the pool's connect timeout): past it is a hang.
CLIENT_TIMEOUT_S = 30.0
# Once the server takes connections again, a request may still meet the outage (in flight
# across the start, or on a connection the pool is replacing) this long; none after it.
RECOVERY_S = 3.0
REASON = "held across the restart"


@dataclass(frozen=True)
class Probe:
    sent: float
    answered: float
    status: int  # 0: no answer within CLIENT_TIMEOUT_S
    code: str | None


@dataclass
class Outage:
    stop_called: float = 0.0
    down: float = 0.0  # the stop returned: nothing is left to answer
    start_called: float = 0.0
    up: float = 0.0  # the start returned: the server takes connections

    def overlaps(self, sent: float, answered: float) -> bool:
        """A request that may have met the outage (or the pool's recovery after it)."""
        return sent < self.up + RECOVERY_S and answered > self.stop_called


@dataclass
class Run:
    """The load on one tenant: schedules (retried with their Idempotency-Key on 503, as a
    client does), cancels at times around their posts' due times, and probes."""

    client: Client
    containers: list[str]
    accounts: list[str]
    rng: random.Random
    probe_path: str
    post_ids: list[str] = field(default_factory=list)
    # Idempotency-Key -> every answer its requests got, in order.
    schedules: dict[str, list[int]] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _cancels: list[tuple[float, str]] = field(default_factory=list)

    def schedule(self, i: int) -> None:
        per_container = len(self.accounts) // 2
        cid = self.containers[i // per_container]
        pair = self.accounts[2 * (i % per_container) : 2 * (i % per_container) + 2]
        lead = LEADS_S[i % len(LEADS_S)]
        body = {
            "scheduledFor": iso(time.time() + lead),
            "targets": [{"socialAccountId": a} for a in pair],
        }
        key = f"restart-{i}"
        answers: list[int] = []
        deadline = time.monotonic() + 60
        while True:
            r = self.client.call(
                "schedule",
                "POST",
                f"/v1/content/{cid}/schedule",
                json=body,
                headers={"Idempotency-Key": key},
            )
            answers.append(r.status_code if r is not None else 0)
            if answers[-1] not in (0, 503) or time.monotonic() > deadline:
                break
            # As a client does: after the answer's Retry-After.
            time.sleep(float(r.headers.get("Retry-After", "1")) if r is not None else 1.0)
        with self.lock:
            self.schedules[key] = answers
            if r is None or r.status_code != 201:
                return
            for item in r.json()["items"]:
                self.post_ids.append(item["id"])
                if self.rng.random() < CANCEL_SHARE:
                    at = time.time() + self.rng.uniform(0, lead + 1.0)
                    heapq.heappush(self._cancels, (at, item["id"]))

    def cancel(self, post_id: str) -> None:
        self.client.call(
            "cancel",
            "DELETE",
            f"/v1/scheduled-posts/{post_id}",
            post_id=post_id,
            json={"reason": REASON},
        )

    def cancels_left(self) -> bool:
        with self.lock:
            return bool(self._cancels)

    def due_cancels(self, now: float) -> list[str]:
        with self.lock:
            due = []
            while self._cancels and self._cancels[0][0] <= now:
                due.append(heapq.heappop(self._cancels)[1])
            return due

    def probe_until(self, stop: threading.Event) -> None:
        """A read every PROBE_EVERY_S: what a caller sees of the database, second by second."""
        http = self.client.http
        while not stop.is_set():
            sent = time.time()
            status, code = 0, None
            try:
                r = http.get(self.probe_path)
                status = r.status_code
                code = r.json().get("error", {}).get("code") if status != 200 else None
            except (httpx.HTTPError, ValueError):
                pass  # no answer (status 0), or one that is no envelope (code None)
            self.probes.append(Probe(sent, time.time(), status, code))
            stop.wait(PROBE_EVERY_S)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL cluster on this machine: {reason}")
    pg = PrivatePostgres()
    try:
        pg.start()
    except PostgresUnavailable as exc:
        pg.destroy()
        pytest.skip(f"a private PostgreSQL cluster cannot run on this machine: {exc}")
    yield pg
    pg.destroy()


@pytest.fixture(scope="module")
def pg_stack(request: pytest.FixtureRequest, cluster: PrivatePostgres) -> Iterator[Stack]:
    """The whole stack (API, two workers, the webhook worker, beat, sandbox) on the cluster,
    straight to the server (`direct`) or through a private PgBouncer in transaction mode
    (`pooled`), as the test's `path` says."""
    pooled = request.param == "pooled"
    if pooled and (reason := pgbouncer.missing()) is not None:
        pytest.skip(f"no PgBouncer to restart the server behind: {reason}")
    migrate(cluster.url)
    # The chaos runs' short leases, with the production default's re-dispatch grace: after an
    # outage every due post and webhook attempt is re-sent at once, and on a busy machine that
    # backlog can take longer than the chaos runs' 5 s to drain, when each re-dispatch makes
    # the task still queued before it stale (see docs/operations.md, "The primary restarted").
    env = dict(CHAOS_ENV) | {"REDISPATCH_GRACE_S": "15"}
    pooler = PrivatePgBouncer() if pooled else None
    s = Stack(database_url=cluster.url, workers=2, env_overrides=env, pooler=pooler)
    try:
        s.start()
    except BaseException:
        # Interrupted too: no process of the stack outlives the test.
        print(s.logs())
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture(scope="module")
def db(cluster: PrivatePostgres) -> Iterator[Engine]:
    """The test's own reads of the cluster: a connection per use, none kept across a restart."""
    engine = create_engine(cluster.url, poolclass=NullPool)
    yield engine
    engine.dispose()


def _tenant(db: Engine, stack: Stack, name: str) -> tuple[str, str, list[str]]:
    """An organization on the cluster with ACCOUNTS sandbox accounts: key, project, accounts."""
    with Session(db, expire_on_commit=False) as session:
        t = create_tenant(
            session,
            name,
            ["tiktok", "instagram"],
            sandbox_url=stack.sandbox_url,
            extra_accounts=ACCOUNTS - 2,
        )
        session.commit()
    return t.key.token, t.project_id, [a.id for a in t.social_accounts + t.extra_accounts]


def _organization_posts(db: Engine, project_id: str) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            select(ScheduledPost.id, ScheduledPost.status).where(
                ScheduledPost.project_id == project_id
            )
        ).all()
    return {pid: str(status) for pid, status in rows}


def _print_unsettled(db: Engine, project_id: str) -> None:
    """What a failed settle left: each post not terminal, and each delivery still pending."""
    with db.connect() as conn:
        for row in conn.execute(
            select(ScheduledPost).where(
                ScheduledPost.project_id == project_id, ScheduledPost.status.not_in(TERMINAL)
            )
        ).all():
            print("unsettled post", dict(row._mapping))
        for row in conn.execute(
            select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.PENDING)
        ).all():
            print("pending delivery", dict(row._mapping))


def _assert_invariants(history: History) -> None:
    broken = [v for v in check(history) if not v.ok]
    assert not broken, "\n".join(
        v.line() + "".join(f"\n  {explain(history, pid)}" for pid in list(v.violations)[:5])
        for v in broken
    )


def _restart(cluster: PrivatePostgres, mode: StopMode, at: float, outage: Outage) -> None:
    time.sleep(max(0.0, at - time.time()))
    outage.stop_called = time.time()
    cluster.stop(mode)
    outage.down = time.time()
    # Not a wait for a condition: the outage itself, during which the prober, the retried
    # schedules and the cancels meet a server that is not there.
    time.sleep(DOWN_S)
    outage.start_called = time.time()
    cluster.start()
    outage.up = time.time()


def _outage(run: Run, cluster: PrivatePostgres, mode: StopMode, started: float) -> Outage:
    """Schedules, cancels and probes for LOAD_S, with the server stopped (`mode`) OUTAGE_AT_S
    in and started DOWN_S after it was down."""
    outage = Outage()
    stop = threading.Event()
    prober = threading.Thread(target=run.probe_until, args=(stop,))
    prober.start()
    try:
        # Enough threads that schedules retrying through the outage never hold up a cancel.
        with ThreadPoolExecutor(max_workers=48) as pool:
            restart = pool.submit(_restart, cluster, mode, started + OUTAGE_AT_S, outage)
            scheduled: list[Future[None]] = []
            while (
                (now := time.time()) < started + LOAD_S
                or not all(f.done() for f in scheduled)
                or run.cancels_left()
            ):
                if now < started + LOAD_S and now >= started + len(scheduled) * SCHEDULE_EVERY_S:
                    scheduled.append(pool.submit(run.schedule, len(scheduled)))
                for pid in run.due_cancels(now):
                    pool.submit(run.cancel, pid)
                time.sleep(0.02)
            restart.result()
            for f in scheduled:
                f.result()
    finally:
        stop.set()
        prober.join()
        if not cluster.running:
            cluster.start()
    return outage


def _check_answers(run: Run, history: History, outage: Outage, pooled: bool) -> None:
    """503 UNAVAILABLE while the server is down and only then; never a 500, never a hang.
    Behind the pooler a request may instead wait for the server: PgBouncer holds a query
    that has no server connection yet (up to its `query_wait_timeout`) and runs it once the
    server is back, and refuses, with an error the API answers 503, those that come while
    its logins keep failing."""
    probes = run.probes
    hung = [p for p in probes if p.status == 0]
    assert not hung, f"{len(hung)} reads got no answer within {CLIENT_TIMEOUT_S}s: {hung[:3]}"
    odd = [p for p in probes if p.status not in (200, 503)]
    assert not odd, f"reads answered neither 200 nor 503: {odd[:5]}"
    # A read sent and answered while the server was down can only be 503 UNAVAILABLE; on a
    # busy machine an answer may take longer than the outage, so there may be few of those,
    # but some read that met the outage says so.
    down = [p for p in probes if outage.down <= p.sent and p.answered <= outage.start_called]
    wrong = [p for p in down if (p.status, p.code) != (503, "UNAVAILABLE")]
    assert not wrong, f"reads while the server was down not 503 UNAVAILABLE: {wrong[:5]}"
    met = [p for p in probes if p.sent <= outage.start_called and p.answered >= outage.down]
    held = [p for p in met if pooled and p.status == 200 and p.answered >= outage.up]
    assert held or any((p.status, p.code) == (503, "UNAVAILABLE") for p in met), met
    outside = [p for p in probes if p.status == 503 and not outage.overlaps(p.sent, p.answered)]
    assert not outside, f"503s outside the outage (up at {outage.up:.3f}): {outside[:5]}"
    assert any(p.status == 200 and p.sent >= outage.up for p in probes), "never back to 200"

    hung_calls = [c for c in history.calls if c.status == 0]
    assert not hung_calls, f"calls with no answer within {CLIENT_TIMEOUT_S}s: {hung_calls[:3]}"
    errors = [c for c in history.calls if c.status >= 500 and c.status != 503]
    assert not errors, f"server errors: {errors[:5]}"
    late = [
        c
        for c in history.calls
        if c.status == 503 and not outage.overlaps(c.sent_at, c.answered_at)
    ]
    assert not late, f"503s outside the outage (up at {outage.up:.3f}): {late[:5]}"
    for key, answers in run.schedules.items():
        # A retry meets the first attempt's outcome: its replayed 201, or, when that attempt
        # never committed and its time has passed meanwhile, a 422.
        assert answers[-1] == 201 or (answers[-1] == 422 and 503 in answers), (key, answers)
    # Straight to the server every request that meets the outage is refused, so some
    # schedule is; behind the pooler, held ones are served instead.
    assert pooled or any(a[-1] == 201 and 503 in a for a in run.schedules.values()), (
        "no schedule met the outage and was retried: the run did not test the replay"
    )


# Straight to the server, stopped both ways; behind the pooler, the crash.
@pytest.mark.parametrize(
    ("mode", "pg_stack"),
    [("fast", "direct"), ("immediate", "direct"), ("immediate", "pooled")],
    indirect=["pg_stack"],
)
def test_postgres_restart_mid_run(
    mode: StopMode, cluster: PrivatePostgres, pg_stack: Stack, db: Engine
) -> None:
    """The server stops mid-run (`fast`: sessions rolled back, a checkpoint; `immediate`: a
    crash, then recovery) while posts publish and cancels arrive, and comes back DOWN_S later."""
    pooled = pg_stack.pooler is not None
    pg_stack.reset_sandbox()
    token, project_id, accounts = _tenant(db, pg_stack, f"Restart {mode} {pooled}")
    history = History()
    client = Client(pg_stack.api_url, token, history)
    client.http.timeout = httpx.Timeout(CLIENT_TIMEOUT_S)
    with serving(Receiver(seed=7)) as receiver:
        r = client.http.post(
            "/v1/webhook-endpoints", json={"url": receiver.url, "eventTypes": HOOKED}
        )
        assert r.status_code == 201, r.text
        receiver.secrets = [r.json()["secret"]]
        containers = []
        for n in range(CONTAINERS):
            r = client.http.post(
                f"/v1/projects/{project_id}/content/upload",
                json={
                    "caption": f"restart {mode} {n}",
                    "media": [{"url": "https://cdn.example.com/clip.mp4"}],
                },
            )
            assert r.status_code == 201, r.text
            containers.append(r.json()["id"])
        run = Run(
            client,
            containers,
            accounts,
            random.Random(f"restart-{mode}-{pooled}"),
            probe_path=f"/v1/content/{containers[0]}",
        )
        outage = _outage(run, cluster, mode, time.time())
        try:
            _check_answers(run, history, outage, pooled)

            def settled() -> dict[str, str] | None:
                posts = _organization_posts(db, project_id)
                return posts if all(s in TERMINAL for s in posts.values()) else None

            try:
                posts = wait_until(settled, 120, interval=0.5, what="every post terminal")
                wait_until(lambda: pending_deliveries(db) == 0, 120, what="webhook deliveries")
            except AssertionError:
                _print_unsettled(db, project_id)
                raise
        except AssertionError:
            print(pg_stack.logs(80))
            raise
        # Nothing lost, nothing made that no client was told of: the posts on the server
        # after the restart are exactly those the schedules' 201s (first or replayed) named.
        assert set(posts) == set(run.post_ids)
        assert len(run.post_ids) == len(set(run.post_ids))
        read_ledger(history, pg_stack.sandbox_url)
        read_state(history, run.post_ids, cluster.url)
        history.webhooks_pending = pending_deliveries(db)
        history.webhooks = {"steady": receipts(receiver)}
    _assert_invariants(history)
    won = {c.post_id: c for c in history.calls if c.kind == "cancel" and c.status == 200}
    assert any(c.answered_at < outage.stop_called for c in won.values()), "no 200 before it"
    for pid in won:
        assert history.posts[str(pid)].status == "canceled", (pid, history.posts[str(pid)])
    # Each role carried on by itself: nothing was restarted, and nothing exited.
    exited = {name: p.returncode for name, p in pg_stack.procs.items() if p.poll() is not None}
    assert not exited, exited
    statuses = Counter(p.status for p in history.posts.values())
    lags = sorted(
        (p.finished_at - p.scheduled_for).total_seconds()
        for p in history.posts.values()
        if p.status == "published" and p.finished_at is not None
    )
    back = min(p.sent for p in run.probes if p.status == 200 and p.sent >= outage.up)
    last_503 = max(
        [c.sent_at for c in history.calls if c.status == 503]
        + [p.sent for p in run.probes if p.status == 503],
        default=outage.up,
    )
    print(
        f"\n{mode} {'behind the pooler' if pooled else 'direct'}:"
        f" down {outage.start_called - outage.down:.1f}s (stop took"
        f" {outage.down - outage.stop_called:.2f}s, start {outage.up - outage.start_called:.2f}s);"
        f" first 200 {back - outage.up:.2f}s after up, last 503 sent"
        f" {last_503 - outage.up:+.2f}s after it; posts {dict(statuses)}; cancels won"
        f" {len(won)}; 503s {sum(c.status == 503 for c in history.calls)} calls"
        f" + {sum(p.status == 503 for p in run.probes)} reads; publish lag max {lags[-1]:.1f}s,"
        f" median {lags[len(lags) // 2]:.1f}s"
    )
