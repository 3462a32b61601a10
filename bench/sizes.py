"""How big each run is, and the targets its figures are held to. Light to import: the
`publisher` CLI reads it to build its parser."""

from __future__ import annotations

from dataclasses import dataclass

# The dispatcher sends at most this many posts per tick (DISPATCH_BATCH), one tick a second.
DISPATCH_PER_S = 500
LAG_TARGET_MS = 250.0
# Cancel p99 below this at CANCEL_TARGET_RATE cancels a second, publishing flat out.
CANCEL_TARGET_MS = 50.0
CANCEL_TARGET_RATE = 100.0
# The pipeline's throughput against the bare protocol's (bench.floor), and the product's
# saturated cancels a second against the bare endpoint's (bench.floor_api).
FLOOR_RATIO_TARGET = 0.60
CANCEL_RATIO_TARGET = 0.50
# CPU per unit of work: the pipeline's worker processes per post, the API per cancel.
WORKER_CPU_TARGET_MS = 5.0
API_CPU_TARGET_MS = 2.5
MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    name: str
    posts: int  # through the pipeline, the bare protocol, and as no-op tasks through Celery
    scaling_workers: tuple[int, ...]  # worker processes of each scaling round
    scaling_posts: int  # posts of each scaling round
    lag_seconds: float  # how long each sustained load lasts
    lag_fractions: tuple[float, ...]  # its rates, as fractions of the measured throughput
    cancel_rates: tuple[float, ...]  # cancels per second, stepped up
    cancel_step_s: float
    saturate_connections: int  # keep-alive connections of the closed-loop cancel runs
    saturate_warmup_s: float  # their warm-up, not counted
    saturate_s: float  # then measured this long
    saturate_posts: int  # posts to cancel in each: more than the fastest endpoint answers
    future_rows: int
    idle_cancel_rate: float
    idle_cancel_s: float
    ticks: int
    naive_tasks: int
    body_posts: int  # the publish protocol run outside Celery, one post after another
    settle_s: float  # the beat's ticks run against the full table this long before measuring


SIZES = {
    "tiny": Size(
        name="tiny",
        posts=200,
        scaling_workers=(1, 2, 4),
        scaling_posts=40,
        lag_seconds=5,
        lag_fractions=(0.5,),
        cancel_rates=(10, 100),
        cancel_step_s=3,
        saturate_connections=16,
        saturate_warmup_s=0.5,
        saturate_s=2,
        saturate_posts=3_000,
        future_rows=10_000,
        idle_cancel_rate=10,
        idle_cancel_s=2,
        ticks=10,
        naive_tasks=2_000,
        body_posts=40,
        settle_s=2,
    ),
    "full": Size(
        name="full",
        posts=6_000,
        scaling_workers=(1, 2, 4),
        scaling_posts=3_000,
        lag_seconds=60,
        lag_fractions=(0.5, 0.8),
        cancel_rates=(10, 25, 50, 100, 200, 400),
        cancel_step_s=15,
        saturate_connections=16,
        saturate_warmup_s=5,
        saturate_s=20,
        saturate_posts=40_000,
        future_rows=1_000_000,
        idle_cancel_rate=20,
        idle_cancel_s=10,
        ticks=40,
        naive_tasks=50_000,
        body_posts=400,
        settle_s=15,
    ),
}
