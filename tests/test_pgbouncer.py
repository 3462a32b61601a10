"""The product behind PgBouncer in transaction pooling mode (docs/design.md, "Behind a
transaction pooler"): nothing prepared server-side, the timeouts in force in every transaction
and gone after it, the advisory and row locks holding across server connections, and the
test stack's roles really connecting through their private PgBouncer.

Checked by hand: with `prepare_threshold` left at psycopg's default the swap test fails
(`prepared statement "_pg3_0" already exists`), and with the timeouts set by SET instead of
SET LOCAL the leak test sees the 300 ms on a connection that never asked for it."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from api.app import create_app
from chaos.history import Call, History, LedgerEntry
from chaos.run import read_state
from harness import pgbouncer
from harness.pgbouncer import PrivatePgBouncer
from harness.stack import Stack, free_port, wait_until
from shared.kit.db import connect_args, init_engine, transaction
from shared.kit.leases import Holding
from shared.kit.settings import get_settings
from tests.conftest import TEST_DATABASE_URL
from tests.factories import TenantFixture
from tests.test_race import REASON, Ledger, _assert_invariants, _cancel_side, _queued_posts
from tests.test_race import _worker_side as worker_side

QUERY_CANCELED = "57014"
DATABASE = make_url(TEST_DATABASE_URL).database


def _running(**config: int) -> Iterator[PrivatePgBouncer]:
    """A private PgBouncer started with `config`, stopped after; skipped where none runs."""
    reason = pgbouncer.missing()
    if reason is not None:
        pytest.skip(reason)
    b = PrivatePgBouncer(**config).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PrivatePgBouncer]:
    """A private PgBouncer with the harness's pool size."""
    yield from _running()


@pytest.fixture(scope="module")
def one_server() -> Iterator[PrivatePgBouncer]:
    """A PgBouncer with one server connection: every client's transaction runs on it, so
    whatever one client leaves on the server connection the next one meets."""
    yield from _running(pool_size=1)


@contextmanager
def through(bouncer: PrivatePgBouncer, **env: str) -> Iterator[None]:
    """This process's engine on the pooler, as a role's with DATABASE_POOLER=transaction."""
    wanted = bouncer.env_for(TEST_DATABASE_URL) | env
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    get_settings.cache_clear()
    init_engine("publisher.tests.pooled", pool_size=10)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        init_engine("publisher.tests", pool_size=20)


def _direct_client(bouncer: PrivatePgBouncer, **kwargs: object) -> psycopg.Connection[object]:
    return psycopg.connect(
        bouncer.url_for(TEST_DATABASE_URL).replace("postgresql+psycopg", "postgresql"),
        autocommit=True,
        **kwargs,  # type: ignore[arg-type]
    )


def test_statements_survive_the_server_connection_changing_hands(
    one_server: PrivatePgBouncer,
) -> None:
    """Two clients taking turns on one server connection: psycopg's prepared statements
    (named per client, kept per server connection) collide; the product's engine prepares
    none, so the same statements run any number of times."""
    first, second = _direct_client(one_server), _direct_client(one_server)
    with first, second, pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        for _ in range(10):
            for conn in (first, second):
                conn.execute("SELECT %s::int", (1,))

    with through(one_server):
        engines = [
            create_engine(
                get_settings().database_url, connect_args=connect_args(f"publisher.tests.{i}")
            )
            for i in range(2)
        ]
        try:
            for n in range(20):
                for engine in engines:
                    with engine.begin() as conn:
                        assert conn.execute(text("SELECT CAST(:n AS int)"), {"n": n}).scalar() == n
            for _ in range(10):
                with transaction() as tx:
                    assert tx.session.execute(text("SELECT 1")).scalar() == 1
        finally:
            for engine in engines:
                engine.dispose()


def test_the_timeouts_hold_in_each_transaction_and_leave_with_it(
    one_server: PrivatePgBouncer,
) -> None:
    """Through the pooler the startup `options` are refused, so the engine sends none; the
    timeouts are set in each transaction instead: a statement past statement_timeout is cut,
    and the next client on the same server connection finds the server's defaults."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        _direct_client(one_server, options="-c statement_timeout=300")
    with _direct_client(one_server) as conn:
        defaults = [
            conn.execute(f"SHOW {name}").fetchone()
            for name in ("statement_timeout", "lock_timeout")
        ]

    with through(one_server, DB_STATEMENT_TIMEOUT_MS="300"):
        with transaction() as tx:
            shown = [
                tx.session.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                )
            ]
        assert shown == ["300ms", "10s", "1min"]
        with pytest.raises(OperationalError) as cut, transaction() as tx:
            tx.session.execute(text("SELECT pg_sleep(5)"))
        assert getattr(cut.value.orig, "sqlstate", None) == QUERY_CANCELED

        with _direct_client(one_server) as conn:
            after = [
                conn.execute(f"SHOW {name}").fetchone()
                for name in ("statement_timeout", "lock_timeout")
            ]
        assert after == defaults


def test_the_idempotency_lock_holds_across_server_connections(
    bouncer: PrivatePgBouncer, tenant: TenantFixture
) -> None:
    """Two requests with one Idempotency-Key, each in a transaction on its own server
    connection: the second waits on the first's transaction-scoped advisory lock, then
    replays what the first committed."""
    from fastapi.responses import Response

    from api.idempotency import fingerprint, remember, replay

    org, key = tenant.organization_id, "pooled-key"
    fp = fingerprint("POST", "/v1/x", {"a": 1})
    first_holds, first_may_commit = threading.Event(), threading.Event()
    replayed: list[Response | None] = []

    def first() -> None:
        with transaction() as tx:
            assert replay(tx.session, org, key, fp) is None
            first_holds.set()
            first_may_commit.wait(timeout=30)
            remember(tx.session, org, key, fp, Response(b'{"n": 1}', status_code=201))

    def second() -> None:
        first_holds.wait(timeout=30)
        with transaction() as tx:
            replayed.append(replay(tx.session, org, key, fp))

    with through(bouncer):
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        try:

            def second_waits() -> bool:
                with transaction() as tx:
                    return bool(
                        tx.session.execute(
                            text(
                                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                " AND NOT granted"
                            )
                        ).scalar()
                    )

            wait_until(second_waits, 20, what="the second request waiting on the lock")
        finally:
            first_may_commit.set()
            for t in threads:
                t.join(timeout=30)
    assert len(replayed) == 1 and replayed[0] is not None
    assert (replayed[0].status_code, bytes(replayed[0].body)) == (201, b'{"n": 1}')


def test_cancel_races_claim_through_the_pooler(
    bouncer: PrivatePgBouncer, tenant: TenantFixture
) -> None:
    """The transition race of tests/test_race.py, smaller, every transaction through the
    pooler: two deliveries of each post's task and one cancel; the design's invariants hold."""
    n = 60
    ledger = Ledger()
    results: dict[str, tuple[float, float, int]] = {}
    outcomes: Counter[str] = Counter()
    with through(bouncer):
        batch = _queued_posts(tenant, n)

        def run_one(index: int, post_id: str, token: int) -> None:
            import random

            start = threading.Barrier(3)

            def worker(i: int) -> None:
                start.wait(timeout=10)
                outcomes[worker_side(post_id, token, f"w{i}", ledger, random.Random(index))] += 1

            def canceller() -> None:
                start.wait(timeout=10)
                delay = random.Random(index).uniform(0, 0.05)
                results[post_id] = _cancel_side(tenant, post_id, delay)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
            threads.append(threading.Thread(target=canceller))
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)

        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda it: run_one(it[0], *it[1]), enumerate(batch)))

    assert len(results) == n and sum(outcomes.values()) == 2 * n
    history = History()
    for pid, (sent, answered, code) in results.items():
        history.record(Call("cancel", pid, sent, answered, code, reason=REASON))
    history.ledger = [
        LedgerEntry(pid, f"ext-{pid}", at) for pid, times in ledger.uploads.items() for at in times
    ]
    read_state(history, [pid for pid, _ in batch], TEST_DATABASE_URL)
    _assert_invariants(history)


@pytest.fixture
def short_wait() -> Iterator[PrivatePgBouncer]:
    """A PgBouncer that refuses a query after 2 s without a server connection (60 s in the
    harness and the shipped configurations), so a test can wait out its refusals."""
    yield from _running(query_wait_timeout_s=2)


def test_a_pooler_refusing_for_its_server_is_an_outage(short_wait: PrivatePgBouncer) -> None:
    """The server gone behind a pooler the roles already use: the pooler's own refusals
    (`query_wait_timeout`, `server login has been failing`: SQLSTATE 08P01) are the errors
    every edge already takes for an outage: a transaction raises SQLAlchemy's
    OperationalError (not the driver's error from the timeouts' first statement), which
    `run_in_transaction` retries, beat's lease reads "not held" rather than raising, and the
    API answers 503 UNAVAILABLE. Before the fix, the driver's ProtocolViolation escaped the
    `begin` listener raw, beat died of it and the API answered 500."""
    with through(short_wait):
        with transaction() as tx:
            tx.session.execute(text("SELECT 1"))  # connected, the pooler's welcome cached
        short_wait.repoint(free_port())
        for _ in range(3):
            with pytest.raises(OperationalError), transaction() as tx:
                tx.session.execute(text("SELECT 1"))
        lease = Holding("tests.serverless", holder="me", ttl_s=5, renew_s=1, margin_s=1)
        assert lease.held() is False
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            r = client.get(
                "/v1/content/cnt_x", headers={"Authorization": "Bearer lp_live_0a1b_2c3d"}
            )
            assert (r.status_code, r.json()["error"]["code"]) == (503, "UNAVAILABLE"), r.text
            assert r.headers["Retry-After"] == "1"


def test_the_stack_roles_connect_through_pgbouncer(stack: Stack) -> None:
    """Every role of the test stack has DATABASE_URL on its private PgBouncer: the pooler's
    console lists the API's and the workers' connections to the test database, and the
    API answers through it."""
    if stack.pooler is None:
        pytest.skip(f"the stack runs without a pooler ({pgbouncer.SWITCH}=none or no pgbouncer)")
    pooler = stack.pooler
    assert stack.env()["DATABASE_URL"] == pooler.url_for(stack.database_url)
    assert httpx.get(f"{stack.api_url}/readyz").status_code == 200

    def names() -> set[str]:
        return {c["application_name"] for c in pooler.show("CLIENTS") if c["database"] == DATABASE}

    wait_until(
        lambda: {"publisher.api", "publisher.worker"} <= names(),
        30,
        what="the API's and a worker's connections on the pooler",
    )
    pools = [p for p in pooler.show("POOLS") if p["database"] == DATABASE]
    assert [p["pool_mode"] for p in pools] == ["transaction"]
