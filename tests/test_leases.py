"""Control leases (shared/kit/leases.py): one holder at a time, on the database's clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from harness.stack import wait_until
from shared.kit.db import engine
from shared.kit.leases import Holding, release, take

NAME = "test.lease"


@pytest.fixture(autouse=True)
def _no_lease() -> Iterator[None]:
    with engine().begin() as conn:
        conn.execute(text("DELETE FROM control_leases WHERE name = :n"), {"n": NAME})
    yield
    with engine().begin() as conn:
        conn.execute(text("DELETE FROM control_leases WHERE name = :n"), {"n": NAME})


def test_one_holder_renews_and_the_others_wait_for_expiry() -> None:
    assert take(NAME, "a", 1.0) is True
    assert take(NAME, "b", 1.0) is None
    assert take(NAME, "a", 1.0) is False  # renewed, not taken anew
    # Once a's lease expires (it stopped renewing), b takes it; a no longer can.
    wait_until(lambda: take(NAME, "b", 30.0), 10, what="the lease to expire")
    assert take(NAME, "a", 30.0) is None
    release(NAME, "a")  # not a's to release: nothing happens
    assert take(NAME, "a", 30.0) is None
    release(NAME, "b")
    assert take(NAME, "a", 30.0) is True


def test_of_many_racing_for_a_free_lease_exactly_one_gets_it() -> None:
    holders = [f"h{i}" for i in range(16)]
    with ThreadPoolExecutor(len(holders)) as pool:
        results = list(pool.map(lambda h: take(NAME, h, 30.0), holders))
    assert results.count(True) == 1 and results.count(None) == len(holders) - 1


def test_a_holder_acts_only_while_its_last_renewal_lasts() -> None:
    first = Holding(NAME, "first", ttl_s=2.0, renew_s=0.2, margin_s=0.5)
    second = Holding(NAME, "second", ttl_s=2.0, renew_s=0.2, margin_s=0.5)
    assert first.held() and first.just_taken
    assert not second.held()
    assert 0 < first.seconds_valid() <= 1.5
    # `first` stops renewing (say it froze): it stops acting by its own clock before the
    # database lets `second` in.
    wait_until(lambda: first.seconds_valid() == 0, 5, what="first's lease to lapse")
    stopped = time.monotonic()
    wait_until(second.held, 10, interval=0.05, what="second to take over")
    assert second.just_taken and time.monotonic() >= stopped
    assert not first.held()  # renewing now finds it taken
    second.release()
    wait_until(first.held, 5, interval=0.05, what="first to take the released lease")
    assert first.just_taken
