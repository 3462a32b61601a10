"""The short chaos profiles: an isolated stack, concurrent load, every fault kind, the checker;
on the sandbox platform, and on the Instagram emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from chaos.options import OPT_IN_FAULTS, PARTITION_FAULTS_OF, faults_of
from harness import netns
from harness.stack import ROOT

pytestmark = pytest.mark.integration


def _short_profile(
    tmp_path: Path, *flags: str, kinds: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], str]:
    """Run `publisher chaos` with these flags on its own database; its report (asserted
    to pass, with every fault kind of its adapter injected, or each of `kinds`) and its
    stdout."""
    database = make_url(os.environ["DATABASE_URL"])
    chaos_db = database.set(database=f"{database.database}_chaos")
    report = tmp_path / "chaos.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "chaos",
            *flags,
            "--workers",
            "3",
            "--clients",
            "12",
            "--fault-every",
            "3",
            "--seed",
            "7",
            "--report",
            str(report),
            "--database-url",
            chaos_db.render_as_string(hide_password=False),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("{"))
    print(summary)  # with -s: the run's summary and invariant lines
    assert run.returncode == 0, summary + run.stderr[-3000:]
    rep: dict[str, Any] = json.loads(report.read_text())
    assert set(rep["faults"]) == set(kinds or faults_of(rep["adapter"])), rep["faults"]
    assert rep["faultsFailedToInject"] == 0
    assert [i["number"] for i in rep["invariants"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(i["ok"] for i in rep["invariants"]), rep["invariants"]
    # Half the cancels are aimed before their post's instant, where a cancel always wins. How
    # many lose to an upload depends on how late the loaded machine publishes (none, some
    # runs): invariants 1 and 4 check each that happened; their number is not a promise.
    assert rep["cancels"]["won"] > 0
    assert isinstance(rep["cancels"]["lost"], int)
    # Both receivers (one failing a share of attempts) kept every outcome once (invariant 8).
    assert rep["webhooks"]["pending"] == 0
    assert all(n >= rep["posts"] for n in rep["webhooks"]["kept"].values()), rep["webhooks"]
    # One line per invariant, with its counts, for people.
    for number in range(1, 9):
        assert f"ok   {number}. " in run.stdout
    return rep, run.stdout


def test_short_chaos_profile_passes_with_every_fault_injected(tmp_path: Path) -> None:
    """Every default kind and PostgreSQL restarts: the run's stack is on a private cluster,
    stopped fast and crashed in turn. (The partitions, opt-in too, have a profile of their
    own below: each cut outlasts a lease.)"""
    kinds = faults_of("sandbox") + OPT_IN_FAULTS
    rep, _ = _short_profile(
        tmp_path, "--posts", "240", "--duration", "24", "--faults", ",".join(kinds), kinds=kinds
    )
    assert rep["adapter"] == "sandbox"
    assert rep["reschedules"]["moved"] > 0
    assert rep["posts"] >= 240


def test_short_chaos_profile_with_partitions(tmp_path: Path) -> None:
    """The opt-in partition faults: one worker node in a network namespace, cut off from
    PostgreSQL, Redis and the platform in turn, each for longer than a lease, among the
    others' load (each cut takes LEASE_S + 5 s, hence the longer waves)."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"the partition faults need network namespaces: {reason}")
    kinds = PARTITION_FAULTS_OF["sandbox"]
    rep, _ = _short_profile(
        tmp_path, "--posts", "200", "--duration", "50", "--faults", ",".join(kinds), kinds=kinds
    )
    assert rep["posts"] >= 200


def test_short_chaos_profile_on_the_instagram_emulator(tmp_path: Path) -> None:
    """The same on Instagram and TikTok accounts the stack's emulators issued, where nothing
    dedupes a publish and the ledgers are matched to posts by account and caption; container
    errors (TikTok: posts that end FAILED) and TikTok processing that outlasts a lease too."""
    rep, out = _short_profile(
        tmp_path, "--adapter", "emulator", "--posts", "200", "--duration", "20"
    )
    assert rep["adapter"] == "emulator"
    assert {"container_error", "slow_completion"} <= set(rep["faults"])
    # TikTok's posts were completed by polls, after no worker waited for them.
    assert rep["completedLater"].get("published", 0) > 0, rep["completedLater"]
    assert rep["posts"] >= 200
    # Every public post is some post's, and no account got one caption twice.
    assert rep["ledger"]["entries"] > 0
    assert rep["ledger"]["unmatched"] == 0, rep["ledger"]
    assert rep["ledger"]["repeated"] == 0, rep["ledger"]
    # The emulator counts no requests: the report says so rather than print a 0.
    assert rep["platformRetries"] is None
    assert "platform retries not countable" in out
