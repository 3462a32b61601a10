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
    "throughput.pipeline.worker_cpu_ms_per_post",
    "throughput.floor.posts_per_s",
    "throughput.floor.worker_cpu_ms_per_post",
    "throughput.bare.tasks_per_s",
    "throughput.floor_ratio",
    "throughput.noop_ratio",
    "throughput.body.cpu_ms_per_post",
    "scaling.1w.pipeline.posts_per_s",
    "scaling.2w.pipeline.posts_per_s",
    "scaling.4w.pipeline.posts_per_s",
    "cancel.saturated.product.cancels_per_s",
    "cancel.saturated.product.p99_ms",
    "cancel.saturated.product.api_cpu_ms_per_cancel",
    "cancel.saturated.floor.cancels_per_s",
    "cancel.saturated.floor.p99_ms",
    "cancel.saturated.floor.api_cpu_ms_per_cancel",
    "cancel.saturated.ratio",
    "lag.50pct.rate_per_s",
    "lag.50pct.upload_start_p50_ms",
    "lag.50pct.upload_start_p99_ms",
    "lag.50pct.upload_start_max_ms",
    "cancel.load.10.p50_ms",
    "cancel.load.10.p99_ms",
    "cancel.load.100.p99_ms",
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
    "## 1. Publish throughput against the bare protocol",
    "### How it grows with worker processes",
    "## 2. Dispatch lag",
    "## 3. Cancel throughput against the bare endpoint",
    "## 4. Cancel latency under load",
    "## 5. Memory and speed at 10,000 future posts",
)
# A figure every run since the bare comparators writes: a committed page without it was
# measured before them, and only a new `make bench` (the full size) can write it again.
CURRENT = "cancel.saturated.ratio"


def _committed() -> Results:
    return Results.load(DOCS / "bench" / "benchmarks.json")


def _with_every_section(r: Results) -> Results:
    """`r`, and stand-ins for the figures of any section its run did not have yet, so that
    a page measured before a section existed still renders every branch of today's."""
    fig, facts, sizes = r.figures, r.facts, r.settings["sizes"]
    pipeline = fig["throughput.pipeline.posts_per_s"]
    fig.setdefault("throughput.floor.posts_per_s", pipeline * 2)
    fig.setdefault("throughput.floor.window_s", fig["throughput.pipeline.window_s"] / 2)
    fig.setdefault("throughput.floor_ratio", 0.5)
    fig.setdefault("throughput.noop_ratio", pipeline / fig["throughput.bare.tasks_per_s"])
    for count in facts.setdefault("scaling.workers", [1, 2, 4]):
        for key in ("posts", "posts_per_s", "window_s"):
            fig.setdefault(f"scaling.{count}w.pipeline.{key}", fig[f"throughput.pipeline.{key}"])
    for label, rate in (("product", 100.0), ("floor", 400.0)):
        for key, value in (
            ("cancels_per_s", rate),
            ("requests", rate * 20),
            ("measured_s", 20.0),
            ("p50_ms", 10.0),
            ("p90_ms", 20.0),
            ("p99_ms", 40.0),
            ("max_ms", 80.0),
        ):
            fig.setdefault(f"cancel.saturated.{label}.{key}", value)
    fig.setdefault("cancel.saturated.ratio", 0.25)
    fig.setdefault("cancel.saturated.connections", 16)
    for key, value in (
        ("scaling_posts", 3000),
        ("saturate_posts", 40000),
        ("saturate_warmup_s", 5),
        ("saturate_s", 20),
    ):
        sizes.setdefault(key, value)
    return r


def test_the_committed_figures_render_the_committed_page_byte_for_byte() -> None:
    # docs/benchmarks.md is what `publisher bench --render docs/bench/benchmarks.json` writes:
    # a change to the template or to a section's context that alters the page shows here.
    r = _committed()
    if CURRENT not in r.figures:
        pytest.skip("docs/benchmarks.md predates the bare comparators: `make bench` rewrites it")
    page = render_markdown(r)
    assert page.encode() == (DOCS / "benchmarks.md").read_bytes()


def test_every_missed_target_renders_its_paragraph() -> None:
    # The committed run meets some targets: miss them all, so that every branch of the page
    # is rendered (a name the template lacks in its context fails the render).
    r = _with_every_section(_committed())
    r.figures["throughput.floor_ratio"] = 0.5
    r.figures["cancel.saturated.ratio"] = 0.25
    r.facts["cancel.layout"] = None
    r.facts["cancel.saturated.floor.exhausted"] = True
    r.facts["cancel.saturated.product.failures"] = {"ReadError": 2}
    r.figures["throughput.pipeline.worker_cpu_ms_per_post"] = 7.5
    r.figures["cancel.saturated.product.api_cpu_ms_per_cancel"] = 5.0
    for label in r.facts["lag.labels"]:
        r.figures[f"lag.{label}.upload_start_p99_ms"] = 400.0
    steps = r.facts["cancel.steps"]
    for step in steps:
        step["p99"] = 500.0
    steps[-1]["failures"] = {"ReadTimeout": 3}
    r.figures["scale.worker_rss_ratio"] = 1.5
    r.facts["scale.future.plan"] = []

    page = render_markdown(r)

    assert "**Missed by 10.0 points.** Each post cost" in page
    assert "**Missed by 25.0 points.** Saturated, one uvicorn process" in page
    assert "Nothing was pinned (one CPU)" in page and "nothing pinned" in page
    assert "| Worker CPU per post | <= 5 ms | 7.50 ms" in page and "2.50 ms over (1.5x)" in page
    assert "| API CPU per cancel | <= 2.5 ms | 5.00 ms" in page and "2.50 ms over (2.0x)" in page
    assert "The bare endpoint canceled every one of its 40,000 posts in" in page
    assert "the client gave up on some requests (ReadError x2)." in page
    assert "From 1 to 4 worker processes the throughput went from" in page
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
        timeout=600,
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
