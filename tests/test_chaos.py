"""The short chaos profile: an isolated stack, concurrent load, every fault kind, the checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from chaos.options import ALL_FAULTS
from harness.stack import ROOT

pytestmark = pytest.mark.integration


def test_short_chaos_profile_passes_with_every_fault_injected(tmp_path: Path) -> None:
    database = make_url(os.environ["DATABASE_URL"])
    chaos_db = database.set(database=f"{database.database}_chaos")
    report = tmp_path / "chaos.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "chaos",
            "--posts",
            "240",
            "--duration",
            "24",
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
    assert run.returncode == 0, summary + run.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert set(rep["faults"]) == set(ALL_FAULTS), rep["faults"]
    assert rep["faultsFailedToInject"] == 0
    assert [i["number"] for i in rep["invariants"]] == [1, 2, 3, 4, 5, 6, 7]
    assert all(i["ok"] for i in rep["invariants"]), rep["invariants"]
    # Half the cancels are aimed before their post's instant, where a cancel always wins. How
    # many lose to an upload depends on how late the loaded machine publishes (none, some
    # runs): invariants 1 and 4 check each that happened; their number is not a promise.
    assert rep["cancels"]["won"] > 0
    assert isinstance(rep["cancels"]["lost"], int)
    assert rep["reschedules"]["moved"] > 0
    assert rep["posts"] >= 240
    # One line per invariant, with its counts, for people.
    for number in range(1, 8):
        assert f"ok   {number}. " in run.stdout
