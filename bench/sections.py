"""The measurements, each against the running stack and the benchmark database.

Every figure lands in `Bench.figures` under a dotted name (positive numbers only: counts,
rates, durations, sizes), raw distributions in `Bench.samples` (for the charts) and facts
that are not numbers in `Bench.facts`.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from bench import procfs
from bench.db import BenchDatabase, Tenant
from bench.floor import APPLICATION_NAME as FLOOR_DB_NAME
from bench.floor import FLOOR_QUEUE, FLOOR_TASK
from bench.noop import DONE_KEY, NAIVE_QUEUE, NAIVE_TASK, NOOP_QUEUE, NOOP_TASK, make_app
from bench.sizes import (
    CANCEL_TARGET_MS,
    CANCEL_TARGET_RATE,
    DISPATCH_PER_S,
    MIB,
    Size,
)
from bench.stack import BenchStack, PlainWorker
from bench.stats import summary
from harness.stack import ROOT, free_port, wait_until
from shared.kit.clock import utcnow

# How long before its time each second's posts of the lag load are scheduled.
LAG_AHEAD_S = 5.0

NOOP_WORKER = "noop"
FLOOR_WORKER = "floor"
FLOOR_API = "api_floor"
NAIVE_WORKER = "naive"
NAIVE_DB = 1  # the naive worker's own Redis database: its unacked hash is its alone


def plain_workers(workers: int) -> list[PlainWorker]:
    """The bare-Celery and bare-protocol workers (as many as the publisher's), and the naive
    one."""
    return [
        *(PlainWorker(f"{NOOP_WORKER}{i}", "bench.noop", NOOP_QUEUE) for i in range(workers)),
        *(PlainWorker(f"{FLOOR_WORKER}{i}", "bench.floor", FLOOR_QUEUE) for i in range(workers)),
        PlainWorker(NAIVE_WORKER, "bench.noop:naive_app", NAIVE_QUEUE, NAIVE_DB),
    ]


@dataclass
class Bench:
    stack: BenchStack
    db: BenchDatabase
    tenant: Tenant
    size: Size
    seed: int
    workdir: Path
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- helpers -----------------------------------------------------------------------------


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, interval=0.1, what=what)


def _sleep_until(when: datetime) -> None:
    delay = (when - utcnow()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _open(b: Bench, ids: list[str]) -> int:
    """Posts among `ids` not yet in a terminal state."""
    return int(
        b.db.scalar(
            "SELECT count(*) FROM scheduled_posts WHERE id = ANY(:ids)"
            " AND status NOT IN ('published', 'draft', 'failed', 'canceled')",
            ids=ids,
        )
    )


class CpuWindow:
    """CPU seconds each part of the deployment used over a window, and the machine's load.

    Each part's processes are looked up again at the end: one that started inside the window
    (a PostgreSQL backend for a new connection, a replaced pool process) counts from zero.
    """

    def __init__(
        self,
        b: Bench,
        *,
        plain: str | None = None,
        plain_db: str | None = None,
        api: str = "api",
    ) -> None:
        """`plain`: the plain Celery workers whose names start with it stand in for the
        deployment: their processes, Redis, the sandbox, and the PostgreSQL backends of the
        clients named `plain_db` (their application name), if they use the database.
        `api`: the process serving the API, for the deployment."""
        s = b.stack
        self.groups: dict[str, Callable[[], list[int]]]
        if plain is not None:
            self.groups = {
                "workers": lambda: [
                    p
                    for name, proc in s.extra.items()
                    if name.startswith(plain)
                    for p in procfs.tree(proc.pid)
                ],
                "sandbox": lambda: procfs.tree(s.pid("sandbox")),
                "redis": lambda: [s.redis.proc.pid] if s.redis and s.redis.proc else [],
            }
            if plain_db is not None:
                self.groups["postgres"] = lambda: b.db.backend_pids(plain_db)
        else:
            self.groups = {
                "workers": lambda: [p for pid in s.worker_pids() for p in procfs.tree(pid)],
                "beat": lambda: procfs.tree(s.pid("beat")),
                "api": lambda: procfs.tree(s.pid(api)),
                "sandbox": lambda: procfs.tree(s.pid("sandbox")),
                "redis": lambda: [s.redis.proc.pid] if s.redis and s.redis.proc else [],
                "postgres": b.db.backend_pids,
            }
        self.before = {k: procfs.cpu_by_pid(find()) for k, find in self.groups.items()}
        self.machine = procfs.machine_cpu()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group, plus `machine busy %` over the window (of all cores)."""
        used: dict[str, float] = {}
        for k, find in self.groups.items():
            before = self.before[k]
            now = procfs.cpu_by_pid(find())
            used[k] = sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())
        machine = procfs.machine_cpu().minus(self.machine)
        used["machine busy %"] = 100 * machine.busy / machine.total if machine.total else 0.0
        used["window s"] = time.monotonic() - self.started
        return used


def _record_cpu(b: Bench, prefix: str, cpu: dict[str, float], units: int) -> None:
    """Per-unit CPU milliseconds of each group with any use, and the machine's busy share."""
    per_unit = {
        k: 1000 * v / units
        for k, v in cpu.items()
        if k not in ("machine busy %", "window s") and v > 0
    }
    b.facts[f"{prefix}.cpu_ms_per_unit"] = per_unit
    if cpu["machine busy %"] > 0:
        b.figures[f"{prefix}.machine_busy_pct"] = cpu["machine busy %"]
    total = sum(per_unit.values())
    if total > 0:
        b.figures[f"{prefix}.cpu_ms_per_unit"] = total


def _loadgen(b: Bench, ids: list[str], rate: float, tag: str) -> dict[str, Any]:
    """Fire one DELETE per id, open-loop at `rate`, from a separate process."""
    ids_file = b.workdir / f"{tag}.ids.json"
    out = b.workdir / f"{tag}.out.json"
    ids_file.write_text(json.dumps(ids))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            b.stack.api_url,
            "--token",
            b.tenant.token,
            "--ids",
            str(ids_file),
            "--rate",
            str(rate),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=120 + len(ids) / rate,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _probe(b: Bench, tag: str, *args: str) -> dict[str, Any]:
    out = b.workdir / f"{tag}.probe.json"
    subprocess.run(
        [sys.executable, "-m", "bench.probe", *args, "--out", str(out)],
        cwd=ROOT,
        env=b.stack.env(),
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


_TICK_LINE = re.compile(
    r"Task publishing\.dispatch_due\[[^\]]+\] succeeded in ([0-9.eE+-]+)s: (\d+)"
)


def _tick_lines(b: Bench, offsets: dict[str, int]) -> list[tuple[float, int]]:
    """(run time in ms, posts dispatched) of each tick the workers logged since `offsets`."""
    out: list[tuple[float, int]] = []
    for name, offset in offsets.items():
        for seconds, sent in _TICK_LINE.findall(b.stack.log_since(name, offset)):
            out.append((float(seconds) * 1000, int(sent)))
    return out


def _logged_ticks(b: Bench, offsets: dict[str, int], *, dispatched: bool = False) -> list[float]:
    """Run times (ms) of the logged ticks; with `dispatched`, only those that sent posts."""
    return [ms for ms, sent in _tick_lines(b, offsets) if sent or not dispatched]


def _worker_offsets(b: Bench) -> dict[str, int]:
    return {n: b.stack.log_offset(n) for n in b.stack.procs if n.startswith("worker")}


def _steady_rss(sample: Callable[[], int], count: int = 3, interval: float = 1.0) -> int:
    values = []
    for i in range(count):
        if i:
            time.sleep(interval)
        values.append(sample())
    return int(statistics.median(values))


# --- 1. publish throughput against the bare protocol and bare Celery ------------------------


def _window(b: Bench, ids: list[str]) -> tuple[datetime, datetime, int, int]:
    """First claim, last record, how many were published and how many re-dispatched."""
    row = b.db.rows(
        """
        SELECT min(attempted_at), max(published_at),
               count(*) FILTER (WHERE status = 'published'),
               count(*) FILTER (WHERE dispatch_version > 1)
        FROM scheduled_posts WHERE id = ANY(:ids)
        """,
        ids=ids,
    )[0]
    return row[0], row[1], int(row[2]), int(row[3])


def _claims_per_worker(b: Bench, ids: list[str]) -> list[int]:
    """How many of these posts each running publisher worker claimed, busiest first: the
    claim's event names the pool process (`host:pid:task`), /proc its worker."""
    worker_of = {
        pid: name
        for name, proc in b.stack.procs.items()
        if name.startswith("worker")
        for pid in procfs.tree(proc.pid)
    }
    counts = dict.fromkeys(sorted({*worker_of.values()}), 0)
    rows = b.db.rows(
        "SELECT data->>'owner' FROM events WHERE type = 'post.claimed' AND subject_id = ANY(:ids)",
        ids=ids,
    )
    for (owner,) in rows:
        parts = str(owner).split(":")
        name = worker_of.get(int(parts[1])) if len(parts) == 3 and parts[1].isdigit() else None
        if name is not None:
            counts[name] += 1
    return sorted(counts.values(), reverse=True)


def pipeline_throughput(b: Bench, posts: int | None = None, prefix: str = "throughput") -> float:
    """Posts per second from the first claim to the last record, all due at one instant."""
    n = posts or b.size.posts
    b.db.truncate_posts()
    # Long enough for the dispatcher to hand every post its ETA task before they come due.
    lead = 3 + 1.5 * n / DISPATCH_PER_S
    due = (utcnow() + timedelta(seconds=lead)).replace(microsecond=0)
    offsets = _worker_offsets(b)
    ids = b.db.insert_at(b.tenant, [due] * n)
    b.log(f"pipeline: {n} posts due at {due:%H:%M:%S}, {len(b.stack.worker_pids())} workers")
    _wait(
        lambda: b.db.scalar("SELECT count(*) FROM scheduled_posts WHERE task_id IS NULL") == 0,
        lead + 60,
        "every post dispatched",
    )
    b.facts[f"{prefix}.dispatched_before_due"] = utcnow() < due
    # Ticks that found a full batch: what dispatching costs when a burst comes into view.
    full = [(ms, sent) for ms, sent in _tick_lines(b, offsets) if sent]
    if full:
        b.figures[f"{prefix}.dispatch.ticks"] = len(full)
        b.figures[f"{prefix}.dispatch.tick_max_ms"] = max(ms for ms, _ in full)
        b.figures[f"{prefix}.dispatch.ms_per_post"] = sum(ms for ms, _ in full) / sum(
            sent for _, sent in full
        )
    _sleep_until(due - timedelta(seconds=0.2))
    cpu = CpuWindow(b)
    _wait(lambda: _open(b, ids) == 0, 120 + n / 5, "every post published")
    used = cpu.stop()
    first_claim, last_record, published, redispatched = _window(b, ids)
    window = float((last_record - first_claim).total_seconds())
    rate = n / window
    p = f"{prefix}.pipeline"
    b.figures[f"{p}.posts"] = n
    b.figures[f"{p}.workers"] = len(b.stack.worker_pids())
    b.figures[f"{p}.window_s"] = window
    b.figures[f"{p}.posts_per_s"] = rate
    b.figures[f"{p}.due_to_last_s"] = (last_record - due).total_seconds()
    b.facts[f"{p}.published"] = published
    b.facts[f"{p}.redispatched"] = redispatched
    b.facts[f"{p}.claims_per_worker"] = _claims_per_worker(b, ids)
    _record_cpu(b, p, used, n)
    if used["workers"] > 0:
        b.figures[f"{p}.worker_cpu_ms_per_post"] = 1000 * used["workers"] / n
    b.log(f"pipeline: {rate:.1f} posts/s ({published}/{n} published in {window:.2f}s)")
    return rate


def floor_throughput(b: Bench) -> float:
    """The same posts, due at the same instant as ETA tasks, through bench.floor's task."""
    n = b.size.posts
    names = [name for name in b.stack.extra if name.startswith(FLOOR_WORKER)]
    try:
        b.db.truncate_posts()
        # Long enough to send every task before they come due: about 1.3 ms a message.
        lead = 3 + 2 * n / 1000
        due = (utcnow() + timedelta(seconds=lead)).replace(microsecond=0)
        # Held: the rows look dispatched, so the publisher's own dispatcher leaves them alone;
        # the benchmark sends their ETA tasks itself, the dispatcher's message to another queue.
        ids = b.db.insert_at(b.tenant, [due] * n, task_held=True)
        b.log(f"bare protocol: {n} posts due at {due:%H:%M:%S}")
        client = make_app("bench-floor-client", b.stack.redis_url, FLOOR_QUEUE)
        sent = time.monotonic()
        with client.producer_or_acquire() as producer:
            for post_id in ids:
                client.send_task(FLOOR_TASK, args=[post_id, 1], eta=due, producer=producer)
        b.figures["throughput.floor.send_s"] = time.monotonic() - sent
        b.facts["throughput.floor.sent_before_due"] = utcnow() < due
        _sleep_until(due - timedelta(seconds=0.2))
        cpu = CpuWindow(b, plain=FLOOR_WORKER, plain_db=FLOOR_DB_NAME)
        _wait(lambda: _open(b, ids) == 0, 120 + n / 5, "every post published by the floor")
        used = cpu.stop()
    finally:
        for name in names:
            b.stack.stop_extra(name, kill=True)  # idle from here on: nothing to shut down
    first_claim, last_record, published, _ = _window(b, ids)
    window = float((last_record - first_claim).total_seconds())
    rate = n / window
    b.figures["throughput.floor.posts"] = n
    b.figures["throughput.floor.window_s"] = window
    b.figures["throughput.floor.posts_per_s"] = rate
    b.facts["throughput.floor.published"] = published
    events = int(b.db.scalar("SELECT count(*) FROM events WHERE subject_id = ANY(:ids)", ids=ids))
    b.facts["throughput.floor.events_per_post"] = events / n
    _record_cpu(b, "throughput.floor", used, n)
    if used["workers"] > 0:
        b.figures["throughput.floor.worker_cpu_ms_per_post"] = 1000 * used["workers"] / n
    b.log(f"bare protocol: {rate:.1f} posts/s ({published}/{n} published in {window:.2f}s)")
    return rate


def _warm_up(b: Bench) -> None:
    """Two posts per pool process, due now, published before anything is measured: a worker
    just started pays for its first connections and lazy imports on its first posts."""
    n = 2 * len(b.stack.worker_pids()) * b.stack.concurrency
    ids = b.db.insert_at(b.tenant, [utcnow()] * n)
    _wait(lambda: _open(b, ids) == 0, 60 + n, "the warm-up posts published")


def scaling(b: Bench, workers: int) -> None:
    """Pipeline throughput with each worker count of the size, fresh posts each round, then
    the deployment's own count (`workers`) again for the sections after."""
    counts = b.size.scaling_workers
    try:
        for count in counts:
            b.stack.set_workers(count)
            _warm_up(b)
            pipeline_throughput(b, b.size.scaling_posts, f"scaling.{count}w")
    finally:
        b.stack.set_workers(workers)
    b.facts["scaling.workers"] = list(counts)


def bare_celery_throughput(b: Bench) -> float:
    """No-op tasks per second through plain Celery workers with the publisher's settings."""
    n = b.size.posts
    names = [name for name in b.stack.extra if name.startswith(NOOP_WORKER)]
    try:
        done = redis.Redis.from_url(b.stack.redis_url)
        done.delete(DONE_KEY)
        client = make_app("bench-client", b.stack.redis_url, NOOP_QUEUE)
        lead = 3 + n / 1000
        due = utcnow() + timedelta(seconds=lead)
        sent = time.monotonic()
        # The same message as the dispatcher's: the publish task's arguments and an ETA.
        with client.producer_or_acquire() as producer:
            for _ in range(n):
                client.send_task(
                    NOOP_TASK, args=[f"sp_{uuid.uuid4()}", 1], eta=due, producer=producer
                )
        b.figures["throughput.bare.send_s"] = time.monotonic() - sent
        b.facts["throughput.bare.sent_before_due"] = utcnow() < due
        _sleep_until(due - timedelta(seconds=0.2))
        cpu = CpuWindow(b, plain=NOOP_WORKER)
        _wait(lambda: cast(int, done.llen(DONE_KEY)) >= n, 60 + n / 50, "every no-op task run")
        used = cpu.stop()
        times = sorted(float(t) for t in cast(list[bytes], done.lrange(DONE_KEY, 0, -1)))
        done.close()
    finally:
        for name in names:
            b.stack.stop_extra(name, kill=True)  # nothing of theirs is worth a warm shutdown
    window = times[-1] - times[0]
    rate = n / window
    b.figures["throughput.bare.tasks"] = n
    b.figures["throughput.bare.window_s"] = window
    b.figures["throughput.bare.tasks_per_s"] = rate
    _record_cpu(b, "throughput.bare", used, n)
    b.log(f"bare celery: {rate:.1f} tasks/s ({n} in {window:.2f}s)")
    return rate


def task_body(b: Bench) -> None:
    """The publish protocol alone, one post after another in one process, outside Celery."""
    b.db.truncate_posts()
    ids = b.db.insert_at(b.tenant, [utcnow()] * b.size.body_posts, task_held=True)
    ids_file = b.workdir / "body.ids.json"
    ids_file.write_text(json.dumps(ids))
    result = _probe(b, "body", "publish", "--ids", str(ids_file))
    for key in ("cpu_ms_per_post", "wall_ms_per_post", "statements_per_post", "commits_per_post"):
        b.figures[f"throughput.body.{key}"] = result[key]
    b.figures["throughput.body.posts"] = result["posts"]
    b.log(
        f"task body: {result['cpu_ms_per_post']:.2f} ms CPU, {result['wall_ms_per_post']:.2f} ms"
        f" wall, {result['statements_per_post']:.1f} statements per post"
    )


# --- 2. dispatch lag under a sustained load ------------------------------------------------


def dispatch_lag(b: Bench, throughput: float) -> None:
    """upload_started_at - scheduled_for while posts come due at a fixed rate."""
    labels = []
    for fraction in b.size.lag_fractions:
        rate = max(1.0, round(fraction * throughput, 1))
        count = max(2, int(rate * b.size.lag_seconds))
        label = f"{round(fraction * 100)}pct"
        b.db.truncate_posts()
        start = utcnow() + timedelta(seconds=LAG_AHEAD_S + 1)
        # Any instant, not whole seconds: the load arrives evenly, as many clients' would.
        times = [start + timedelta(seconds=i / rate) for i in range(count)]
        b.log(f"lag: {count} posts at {rate:g}/s ({label} of throughput)")
        offsets = _worker_offsets(b)
        ids: list[str] = []
        cpu: CpuWindow | None = None
        # A steady stream of schedules: each second's posts go in LAG_AHEAD_S before they are
        # due, so every tick dispatches about a second's worth, the dispatcher's steady state.
        # Inserting the whole run at once would instead make the first ticks dispatch 500 posts
        # each while the first posts are already due: a backlog of scheduling, not of load.
        per_batch = max(1, round(rate))
        for first in range(0, count, per_batch):
            batch = times[first : first + per_batch]
            _sleep_until(batch[0] - timedelta(seconds=LAG_AHEAD_S))
            ids += b.db.insert_at(b.tenant, batch)
            if cpu is None:
                cpu = CpuWindow(b)
        assert cpu is not None

        def pending(ids: list[str] = ids) -> bool:
            return _open(b, ids) > 0

        _wait(lambda: not pending(), b.size.lag_seconds + 120, "sustained load published")
        used = cpu.stop()
        rows = b.db.rows(
            """
            SELECT extract(epoch FROM upload_started_at - scheduled_for) * 1000,
                   extract(epoch FROM attempted_at - scheduled_for) * 1000,
                   extract(epoch FROM published_at - scheduled_for) * 1000
            FROM scheduled_posts WHERE id = ANY(:ids) AND upload_started_at IS NOT NULL
            """,
            ids=ids,
        )
        upload = [float(r[0]) for r in rows]
        claim = [float(r[1]) for r in rows]
        published = [float(r[2]) for r in rows if r[2] is not None]
        prefix = f"lag.{label}"
        b.figures[f"{prefix}.rate_per_s"] = rate
        b.figures[f"{prefix}.posts"] = count
        b.figures[f"{prefix}.seconds"] = b.size.lag_seconds
        upload_s, claim_s, pub_s = summary(upload), summary(claim), summary(published)
        for key in ("p50", "p90", "p99", "max"):
            b.figures[f"{prefix}.upload_start_{key}_ms"] = upload_s[key]
        for key in ("p50", "p99"):
            b.figures[f"{prefix}.claim_{key}_ms"] = claim_s[key]
            b.figures[f"{prefix}.published_{key}_ms"] = pub_s[key]
        b.samples[f"{prefix}.upload_start_ms"] = [round(v, 2) for v in upload]
        _record_cpu(b, prefix, used, count)
        ticks = _logged_ticks(b, offsets, dispatched=True)
        if ticks:
            b.figures[f"{prefix}.dispatch_tick_p50_ms"] = summary(ticks)["p50"]
            b.figures[f"{prefix}.dispatch_tick_max_ms"] = max(ticks)
        labels.append(label)
        b.log(
            f"lag {label}: p50 {upload_s['p50']:.1f} ms, p99 {upload_s['p99']:.1f} ms,"
            f" max {upload_s['max']:.1f} ms"
        )
    b.facts["lag.labels"] = labels


# --- 3. cancel throughput against the bare endpoint, saturated ----------------------------


def _saturate(b: Bench, url: str, ids: list[str], tag: str) -> dict[str, Any]:
    """Closed-loop DELETEs over the size's connections, from a separate process."""
    size = b.size
    ids_file = b.workdir / f"{tag}.ids.json"
    out = b.workdir / f"{tag}.out.json"
    ids_file.write_text(json.dumps(ids))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--token",
            b.tenant.token,
            "--ids",
            str(ids_file),
            "--connections",
            str(size.saturate_connections),
            "--warmup",
            str(size.saturate_warmup_s),
            "--duration",
            str(size.saturate_s),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=120 + size.saturate_warmup_s + size.saturate_s,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _saturated_point(b: Bench, label: str, server: str, url: str) -> float:
    """Cancels a second, their latency and the serving process's CPU, one endpoint saturated."""
    b.db.truncate_posts()
    # Far-future posts, as in section 4: the cancel is the whole of the work.
    later = utcnow() + timedelta(days=2)
    n = b.size.saturate_posts
    ids = b.db.insert_at(b.tenant, [later + timedelta(seconds=j) for j in range(n)])
    b.log(f"saturated cancels, {label}: {b.size.saturate_connections} connections")
    cpu = CpuWindow(b, api=server)
    result = _saturate(b, url, ids, f"saturate-{label}")
    used = cpu.stop()
    sent: list[float] = result["sent_s"]
    done: list[float] = result["done_s"]
    status: list[int] = result["status"]
    warm = float(result["warmup_s"])
    end = warm + float(result["duration_s"])
    if result["exhausted"] and done:
        end = min(end, max(done))
    answered = [t for t in done if warm <= t <= end]
    measured = [i for i, t in enumerate(sent) if warm <= t < end]
    latency = [(done[i] - sent[i]) * 1000 for i in measured]
    rate = len(answered) / (end - warm)
    s = summary(latency)
    p = f"cancel.saturated.{label}"
    b.figures[f"{p}.cancels_per_s"] = rate
    b.figures[f"{p}.requests"] = len(measured)
    b.figures[f"{p}.measured_s"] = end - warm
    for key in ("p50", "p90", "p99", "max"):
        b.figures[f"{p}.{key}_ms"] = s[key]
    # CPU over the whole run (warm-up included) against every request it answered.
    if used["api"] > 0:
        b.figures[f"{p}.api_cpu_ms_per_cancel"] = 1000 * used["api"] / len(done)
    if result["client_cpu_s"] > 0:
        b.figures[f"{p}.client_cpu_ms_per_request"] = 1000 * result["client_cpu_s"] / len(done)
    _record_cpu(b, p, used, len(done))
    b.facts[f"{p}.errors"] = sum(1 for i in measured if status[i] != 200)
    # What the answers claim, checked in the table: each 200 left a canceled row and its event.
    b.facts[f"{p}.answered_200"] = sum(1 for st in status if st == 200)
    b.facts[f"{p}.canceled_rows"] = int(
        b.db.scalar(
            "SELECT count(*) FROM scheduled_posts WHERE id = ANY(:ids) AND status = 'canceled'",
            ids=ids,
        )
    )
    b.facts[f"{p}.canceled_events"] = int(
        b.db.scalar(
            "SELECT count(*) FROM events WHERE type = 'post.canceled' AND subject_id = ANY(:ids)",
            ids=ids,
        )
    )
    b.facts[f"{p}.failures"] = result["failures"]
    b.facts[f"{p}.exhausted"] = result["exhausted"]
    b.samples[f"{p}.latency_ms"] = [round(v, 2) for v in latency]
    b.log(
        f"saturated cancels, {label}: {rate:.1f}/s, p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms,"
        f" API CPU {b.figures.get(f'{p}.api_cpu_ms_per_cancel', math.nan):.2f} ms a cancel"
    )
    return rate


def cancel_saturated(b: Bench) -> None:
    """The product's DELETE, then bench.floor_api's bare one, each saturated by a closed loop,
    workers idle; the bare endpoint runs only for its measurement."""
    product = _saturated_point(b, "product", "api", b.stack.api_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    b.stack.start_module(FLOOR_API, "bench.floor_api", "--port", str(port))
    try:
        _wait(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, "the bare endpoint")
        floor = _saturated_point(b, "floor", FLOOR_API, url)
    finally:
        b.stack.stop_extra(FLOOR_API)
    b.figures["cancel.saturated.ratio"] = product / floor
    b.figures["cancel.saturated.connections"] = b.size.saturate_connections


# --- 4. cancel latency under load -------------------------------------------------------


def _production_layout(b: Bench) -> dict[str, list[int]] | None:
    """The API on the first CPU, every worker process (publishing and webhooks, with their
    pools) on the others: the pool leaves the API a core. None, nothing pinned, on one CPU.

    PostgreSQL, Redis and the sandbox share this machine and float; the API, and the
    backends serving it, get the CPU weight a container's `cpu_shares` or a pod's CPU
    request gives them in production (docker-compose.yml, deploy/), so the workers' share
    of the database cannot take the API's core from it."""
    cpus = procfs.usable_cpus()
    if len(cpus) < 2:
        return None
    procfs.pin(procfs.tree(b.stack.pid("api")), {cpus[0]})
    procfs.pin(_all_workers(b), set(cpus[1:]))
    procfs.weigh(_api_side(b), API_NICENESS)
    return {"api": cpus[:1], "workers": cpus[1:]}


# The API's weight in the production layout (see _production_layout).
API_NICENESS = -10


def _api_side(b: Bench) -> list[int]:
    """The API's processes and the PostgreSQL backends of its connection pool."""
    return procfs.tree(b.stack.pid("api")) + b.db.backend_pids("publisher.api")


def _all_workers(b: Bench) -> list[int]:
    return [
        p
        for name, proc in b.stack.procs.items()
        if name.startswith("worker") or name == "webhooks"
        for p in procfs.tree(proc.pid)
    ]


def _unpin(b: Bench) -> None:
    procfs.pin(procfs.tree(b.stack.pid("api")) + _all_workers(b), set(procfs.usable_cpus()))
    procfs.weigh(_api_side(b), 0)


def cancel_under_load(b: Bench, throughput: float) -> None:
    """DELETE latency at stepped rates while the workers publish as fast as they can, in the
    production layout: the API pinned to a core of its own, the workers to the others.

    The last measurement of a run: what it leaves queued is canceled, not waited for.
    """
    b.facts["cancel.layout"] = _production_layout(b)
    try:
        _cancel_steps(b, throughput)
    finally:
        _unpin(b)


def _cancel_steps(b: Bench, throughput: float) -> None:
    b.db.truncate_posts()
    size = b.size
    # Posts come due as fast as the workers published alone; with the API, the load generator
    # and PostgreSQL's share of the cancels beside them, that is more than they can take, so
    # they never run dry. Fed step by step, so an early stop leaves little behind.
    feed_rate = throughput
    fed_until = utcnow() + timedelta(seconds=1)
    fed = 0

    def feed(seconds: float) -> None:
        nonlocal fed_until, fed
        fed_until = max(fed_until, utcnow())
        count = int(feed_rate * seconds)
        times = [fed_until + timedelta(seconds=i / feed_rate) for i in range(count)]
        b.db.insert_at(b.tenant, times)
        fed_until += timedelta(seconds=seconds)
        fed += count

    warm_up = 3.0
    feed(warm_up)
    b.log(f"cancel: publishing load of {feed_rate:.0f} posts/s")
    steps: list[dict[str, Any]] = []
    started = time.monotonic()
    for rate in size.cancel_rates:
        # The load generator takes a second or two to start: feed past the step's end.
        feed(size.cancel_step_s + 3)
        n = max(2, int(rate * size.cancel_step_s))
        # Far-future posts, beyond the horizon: the cancel is the whole of the work, with no
        # ETA task to revoke, and no lock contention with the posts being published.
        later = utcnow() + timedelta(days=2)
        targets = b.db.insert_at(b.tenant, [later + timedelta(seconds=j) for j in range(n)])
        if not steps:
            time.sleep(max(0.0, warm_up - (time.monotonic() - started)))
        b.log(f"cancel: {n} DELETEs at {rate:g}/s")
        step_start = utcnow()
        cpu = CpuWindow(b)
        result = _loadgen(b, targets, rate, f"cancel-{rate:g}")
        used = cpu.stop()
        step_end = utcnow()
        published = int(
            b.db.scalar(
                "SELECT count(*) FROM scheduled_posts WHERE published_at BETWEEN :a AND :b",
                a=step_start,
                b=step_end,
            )
        )
        latency = result["latency_ms"]
        s = summary(latency)
        ok = sum(1 for st in result["status"] if st == 200)
        steps.append(
            {
                "rate": rate,
                "n": n,
                "ok": ok,
                "errors": n - ok,
                "p50": s["p50"],
                "p90": s["p90"],
                "p99": s["p99"],
                "max": s["max"],
                "service_p99": summary(result["service_ms"])["p99"],
                "machine_busy_pct": used["machine busy %"],
                "api_cpu_ms_per_request": 1000 * used["api"] / n,
                "failures": result.get("failures", {}),
                "publish_rate": published / (step_end - step_start).total_seconds(),
            }
        )
        b.samples[f"cancel.load.{rate:g}.latency_ms"] = [round(v, 2) for v in latency]
        b.log(
            f"cancel {rate:g}/s: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, {ok}/{n} ok,"
            f" publishing at {steps[-1]['publish_rate']:.1f}/s"
        )
        if s["p99"] > 4 * CANCEL_TARGET_MS and rate >= CANCEL_TARGET_RATE:
            break  # past the knee by far: higher rates would only queue more
    # What the load left queued goes away the way a cancel does it: a new token, so tasks
    # still in flight find it stale and do nothing.
    b.db.execute(
        "UPDATE scheduled_posts SET status = 'canceled', canceled_at = now(), updated_at = now(),"
        " dispatch_version = dispatch_version + 1, task_id = NULL WHERE status = 'queued'"
    )
    b.facts["cancel.steps"] = steps
    b.figures["cancel.load.feed_rate_per_s"] = feed_rate
    b.figures["cancel.load.publish_rate_per_s"] = statistics.mean(s["publish_rate"] for s in steps)
    for step in steps:
        prefix = f"cancel.load.{step['rate']:g}"
        b.figures[f"{prefix}.requests"] = step["n"]
        for key in ("p50", "p99", "max"):
            b.figures[f"{prefix}.{key}_ms"] = step[key]


# --- 5. memory and speed at a million future posts ----------------------------------------


def _scale_point(b: Bench, label: str, targets: list[str]) -> None:
    offsets = _worker_offsets(b)
    rss = _steady_rss(lambda: sum(b.stack.worker_rss()))
    tick = _probe(b, f"tick-{label}", "tick", "--count", str(b.size.ticks))
    cpu = CpuWindow(b)
    result = _loadgen(b, targets, b.size.idle_cancel_rate, f"scale-{label}")
    used = cpu.stop()
    b.facts[f"scale.{label}.api_cpu_ms_per_request"] = 1000 * used["api"] / len(targets)
    time.sleep(1)
    logged = _logged_ticks(b, offsets)
    prefix = f"scale.{label}"
    b.figures[f"{prefix}.rows"] = int(b.db.scalar("SELECT count(*) FROM scheduled_posts"))
    b.figures[f"{prefix}.worker_rss_mib"] = rss / MIB
    ts = summary(tick["durations_ms"])
    b.figures[f"{prefix}.tick_p50_ms"] = ts["p50"]
    b.figures[f"{prefix}.tick_max_ms"] = ts["max"]
    if logged:
        ls = summary(logged)
        b.figures[f"{prefix}.worker_tick_p50_ms"] = ls["p50"]
        b.figures[f"{prefix}.worker_tick_max_ms"] = ls["max"]
        b.figures[f"{prefix}.worker_ticks"] = len(logged)
    b.facts[f"{prefix}.plan"] = tick["plan"]
    cs = summary(result["latency_ms"])
    b.figures[f"{prefix}.cancel_requests"] = len(targets)
    b.figures[f"{prefix}.cancel_p50_ms"] = cs["p50"]
    b.figures[f"{prefix}.cancel_p99_ms"] = cs["p99"]
    b.facts[f"{prefix}.cancel_errors"] = sum(1 for s in result["status"] if s != 200)
    b.samples[f"{prefix}.cancel_ms"] = [round(v, 2) for v in result["latency_ms"]]
    b.log(
        f"scale {label}: {b.figures[f'{prefix}.rows']:.0f} rows, worker RSS {rss / MIB:.1f} MiB,"
        f" tick p50 {ts['p50']:.2f} ms, cancel p99 {cs['p99']:.1f} ms"
    )


def at_scale(b: Bench) -> None:
    """Worker RSS, the dispatcher tick and cancel latency: empty table, then a million rows."""
    b.db.truncate_posts()
    cancels = max(2, int(b.size.idle_cancel_rate * b.size.idle_cancel_s))
    now = utcnow()
    # Far beyond the horizon, like the million: no task, nothing for the workers to hold.
    empty_targets = b.db.insert_at(
        b.tenant, [now + timedelta(days=2, seconds=i) for i in range(cancels)]
    )
    time.sleep(b.size.settle_s)
    _scale_point(b, "empty", empty_targets)

    b.db.truncate_posts()
    rows = b.size.future_rows
    b.log(f"scale: inserting {rows} posts due over the next 30 days")
    started = time.monotonic()
    b.db.insert_spread(b.tenant, rows, utcnow() + timedelta(minutes=1), timedelta(days=30), b.seed)
    b.figures["scale.insert_s"] = time.monotonic() - started
    # Let the beat's ticks run against the full table for a while before measuring.
    time.sleep(b.size.settle_s)
    targets = b.db.rows(
        "SELECT id FROM scheduled_posts WHERE scheduled_for > :after ORDER BY random() LIMIT :n",
        after=utcnow() + timedelta(days=1),
        n=cancels,
    )
    _scale_point(b, "future", [str(r[0]) for r in targets])
    b.figures["scale.future_rows"] = rows
    b.figures["scale.worker_rss_ratio"] = (
        b.figures["scale.future.worker_rss_mib"] / b.figures["scale.empty.worker_rss_mib"]
    )


def naive_eta(b: Bench) -> None:
    """The naive design: one ETA task per future post, all held by one plain Celery worker."""
    url = b.stack.broker(NAIVE_DB)
    broker = redis.Redis.from_url(url)
    try:
        pid = b.stack.pid(NAIVE_WORKER)
        rss0 = _steady_rss(lambda: procfs.tree_rss(pid))
        redis0 = int(cast(dict[str, Any], broker.info("memory"))["used_memory"])
        n = b.size.naive_tasks
        client = make_app("bench-naive-client", url, NAIVE_QUEUE, eta_task_limit=False)
        now = utcnow()
        b.log(f"naive: sending {n} ETA tasks due over the next 30 days")
        with client.producer_or_acquire() as producer:
            for _ in range(n):
                eta = now + timedelta(seconds=b.rng.uniform(3600, 30 * 86400))
                client.send_task(
                    NAIVE_TASK, args=[f"sp_{uuid.uuid4()}", 1], eta=eta, producer=producer
                )
        _wait(
            lambda: (
                cast(int, broker.llen(NAIVE_QUEUE)) == 0 and cast(int, broker.hlen("unacked")) >= n
            ),
            120 + n / 100,
            "the worker holding every ETA task",
        )
        previous, rss1 = 0, procfs.tree_rss(pid)
        deadline = time.monotonic() + 30
        while abs(rss1 - previous) > rss1 / 200 and time.monotonic() < deadline:
            time.sleep(1)
            previous, rss1 = rss1, procfs.tree_rss(pid)
        redis1 = int(cast(dict[str, Any], broker.info("memory"))["used_memory"])
    finally:
        b.stack.stop_extra(NAIVE_WORKER, kill=True)
        broker.flushdb()
        broker.close()
    per_post = (rss1 - rss0) / n
    b.figures["naive.tasks"] = n
    b.figures["naive.worker_rss_before_mib"] = rss0 / MIB
    b.figures["naive.worker_rss_after_mib"] = rss1 / MIB
    b.figures["naive.worker_bytes_per_post"] = per_post
    b.figures["naive.extrapolated_1m_gib"] = per_post * 1_000_000 / 1024**3
    b.figures["naive.redis_bytes_per_post"] = (redis1 - redis0) / n
    b.log(f"naive: {per_post:.0f} worker bytes per future post, {n} held")
