"""`publisher bench`: the page rendered from the committed figures, and one whole `--size tiny`
run, checked for its report, figures and chart."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from bench.report import Results, render_markdown
from harness.stack import ROOT

DOCS = ROOT / "docs"

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


def test_the_committed_figures_render_the_committed_page_byte_for_byte() -> None:
    # docs/benchmarks.md is what `publisher bench --render docs/bench/benchmarks.json` writes:
    # a change to the template or to a section's context that alters the page shows here.
    page = render_markdown(Results.load(DOCS / "bench" / "benchmarks.json"))
    assert page.encode() == (DOCS / "benchmarks.md").read_bytes()


def test_every_missed_target_renders_its_paragraph() -> None:
    # The committed run meets most targets: miss them all, so that every branch of the page
    # is rendered (a name the template lacks in its context fails the render).
    r = Results.load(DOCS / "bench" / "benchmarks.json")
    r.figures["throughput.ratio"] = 0.5
    for label in r.facts["lag.labels"]:
        r.figures[f"lag.{label}.upload_start_p99_ms"] = 400.0
    steps = r.facts["cancel.steps"]
    for step in steps:
        step["p99"] = 500.0
    steps[-1]["failures"] = {"ReadTimeout": 3}
    r.figures["scale.worker_rss_ratio"] = 1.5
    r.facts["scale.future.plan"] = []

    page = render_markdown(r)

    assert "**Missed by 25.0 points.** Each post cost" in page
    for label in r.facts["lag.labels"]:
        pct = label.removesuffix("pct")
        assert f"**At {pct}% the target is missed by 150.0 ms.** At " in page
    assert "every lower step holding too: **none of the steps**. At 10/s it is missed by" in page
    assert "**Missed by 450.0 ms at the lowest rate.** The same DELETE" in page
    assert "the client gave up on 3 request(s) (ReadTimeout x3)." in page
    assert "(+50.0%): Worker memory grew with the table" in page
    assert "```" not in page and "EXPLAIN ANALYZE" not in page
    assert "\n\n\n" not in page and page.endswith("again.\n")


@pytest.mark.integration
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
