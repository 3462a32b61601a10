"""`publisher bench --size tiny`: one whole run, checked for its report, figures and chart."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from harness.stack import ROOT

pytestmark = pytest.mark.integration

# One figure of each measurement that every run must produce.
REQUIRED = (
    "throughput.pipeline.posts_per_s",
    "throughput.bare.tasks_per_s",
    "throughput.ratio",
    "throughput.body.cpu_ms_per_post",
    "lag.50pct.rate_per_s",
    "lag.50pct.upload_start_p50_ms",
    "lag.50pct.upload_start_p99_ms",
    "lag.50pct.upload_start_max_ms",
    "cancel.load.10.p50_ms",
    "cancel.load.10.p99_ms",
    "cancel.load.publish_rate_per_s",
    "scale.empty.worker_rss_mib",
    "scale.future.worker_rss_mib",
    "scale.empty.tick_p50_ms",
    "scale.future.tick_p50_ms",
    "scale.empty.cancel_p99_ms",
    "scale.future.cancel_p99_ms",
    "scale.future_rows",
    "naive.worker_bytes_per_post",
    "naive.extrapolated_1m_gib",
)
SECTIONS = (
    "## The machine",
    "## Summary",
    "## 1. Publish throughput against bare Celery",
    "## 2. Dispatch lag",
    "## 3. Cancel latency under load",
    "## 4. Memory and speed at 10,000 future posts",
)


def test_tiny_run_writes_the_report_its_figures_and_the_chart(
    tmp_path: Path, database: str
) -> None:
    # A database of its own beside the test one: the benchmark creates and drops it.
    bench_db = make_url(database)
    bench_url = bench_db.set(database=f"{bench_db.database}_bench").render_as_string(
        hide_password=False
    )
    out = tmp_path / "docs" / "benchmarks.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--size",
            "tiny",
            "--out",
            str(out),
            "--database-url",
            bench_url,
        ],
        cwd=ROOT,
        env=dict(os.environ),
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]

    markdown = out.read_text()
    for heading in SECTIONS:
        assert heading in markdown, heading
    assert "bench/distributions.png" in markdown

    body = json.loads((out.parent / "bench" / "benchmarks.json").read_text())
    for key in ("cpu_model", "cpu_count", "memory_gib", "python", "postgresql", "redis"):
        assert body["machine"][key], key
    assert body["machine"]["celery"].startswith("5.")
    figures = body["figures"]
    missing = [k for k in REQUIRED if k not in figures]
    assert not missing, missing
    not_positive = {
        k: v
        for k, v in figures.items()
        if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
    }
    assert not not_positive, not_positive
    assert {t["name"] for t in body["targets"]} and all(
        isinstance(t["met"], bool) for t in body["targets"]
    )

    chart = (out.parent / "bench" / "distributions.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n") and len(chart) > 10_000
