"""The pool hands out live connections only, without a round trip for one just used: a
connection whose backend PostgreSQL terminated while it sat in the pool is replaced at
checkout, and the transaction that asked for it never sees the loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from api.deps import read_session
from harness.stack import wait_until
from shared.kit import db
from shared.kit.db import engine, init_engine, transaction


@pytest.fixture
def one_connection(database: str) -> Iterator[None]:
    """This process's engine with a pool of one, so the next checkout is the same
    connection; the suite's engine again afterwards."""
    init_engine("publisher.tests.pool", pool_size=1)
    try:
        yield
    finally:
        init_engine("publisher.tests", pool_size=20)


def _backend_pid() -> int:
    with transaction() as tx:
        return int(tx.session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(database: str, pid: int) -> None:
    other = create_engine(database, poolclass=None)
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        wait_until(
            lambda: (
                not conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                ).scalar_one()
            ),
            10,
            what="the backend gone",
        )
    other.dispose()


@pytest.mark.parametrize("ping_after_idle_s", [3600.0, 0.0], ids=["local-check", "ping"])
def test_a_connection_terminated_in_the_pool_is_replaced_at_checkout(
    database: str, one_connection: None, monkeypatch: pytest.MonkeyPatch, ping_after_idle_s: float
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", ping_after_idle_s)
    first = _backend_pid()
    assert _backend_pid() == first  # a pool of one: the same connection, reused
    _terminate(database, first)
    # The next transaction gets a new connection, not an error.
    second = _backend_pid()
    assert second != first
    assert _backend_pid() == second


def test_a_live_connection_is_reused_without_a_ping(
    database: str, one_connection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just used: no round trip before the transaction's own statements."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    _backend_pid()
    pings: list[int] = []
    dialect = engine().dialect
    real_ping = dialect.do_ping

    def counted(connection: Any) -> bool:
        pings.append(1)
        return real_ping(connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    for _ in range(3):
        _backend_pid()
    assert pings == []
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    _backend_pid()
    assert pings == [1]


def test_a_read_session_whose_connection_died_ends_quietly(
    database: str, one_connection: None
) -> None:
    """The API's read session ends after its answer has started: a connection lost by then (a
    restart, a terminated backend) is dropped, not raised into a response already sent."""
    ending = read_session()
    session = next(ending)
    pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
    _terminate(database, pid)
    with pytest.raises(StopIteration):
        next(ending)
    assert _backend_pid() != pid
