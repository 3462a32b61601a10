"""`publisher bench`: every measurement against a whole deployment on this machine, in one run.

Starts a private redis-server, the sandbox (no latency, no faults), the API, the Celery
workers and beat on a database of its own (created, migrated, dropped at the end), runs:

1. publish throughput through the whole pipeline, against the bare protocol (bench.floor:
   the protocol's statements by hand in a plain Celery task) and a no-op task on bare
   Celery; then the pipeline again with 1, 2 and 4 worker processes;
2. dispatch lag (scheduledFor -> upload start) under a sustained load;
3. cancels a second, saturated, of DELETE /v1/scheduled-posts/:id against a bare endpoint
   doing a cancel's SQL by hand (bench.floor_api);
4. cancel latency at stepped rates while publishing runs flat out, the API pinned to a core
   of its own;
5. worker memory, the dispatcher tick and cancel latency with a million future posts,
   against an empty table, beside the naive one-ETA-task-per-post design;

and writes the figures to --out (markdown), with a JSON of them and a PNG of the lag and
latency distributions in a `bench/` folder beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bench.sizes import SIZES

if TYPE_CHECKING:
    from bench.report import Results
    from bench.sections import Bench

# The stack as deployed, except where a benchmark would measure the setting instead of the
# system: one key fires thousands of requests a minute, and bursts queue longer than the
# re-dispatch grace (see docs/benchmarks.md, "Settings").
STACK_ENV = {
    "RATE_LIMIT_MULTIPLIER": "100000000",
    "REDISPATCH_GRACE_S": "600",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `publisher bench`."""
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="full: thousands of posts, a million future rows (13-30 min); tiny: 2-3 min",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--workers", type=int, default=2, help="publisher worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="pool size of each worker")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=None,
        help="the benchmark's own database, dropped at the end"
        " (default: DATABASE_URL's server, database publisher_bench)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite --out and its charts from an earlier run's JSON",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")


def build_parser(sub: Any = None) -> argparse.ArgumentParser:
    """A standalone parser, or the `bench` subcommand of `sub` (an add_subparsers() result)."""
    if sub is None:
        parser = argparse.ArgumentParser(prog="publisher bench", description=__doc__)
    else:
        parser = sub.add_parser("bench", help="run the benchmarks, write docs/benchmarks.md")
    add_arguments(parser)
    return parser


def _machine(bench: Bench) -> dict[str, Any]:
    from importlib.metadata import version

    import redis

    from bench import procfs

    assert bench.stack.redis is not None
    server = redis.Redis.from_url(bench.stack.redis_url)
    redis_version = str(cast(dict[str, Any], server.info("server"))["redis_version"])
    server.close()
    return {
        "cpu_model": procfs.cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "memory_gib": round(procfs.mem_total_bytes() / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": str(bench.db.scalar("SHOW server_version")),
        "redis": redis_version,
        "celery": version("celery"),
        "kombu": version("kombu"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _measure(args: argparse.Namespace, workdir: Path) -> Results:
    # Imported here, not at the top: the CLI builds its parser from this module on every run.
    from bench.db import BenchDatabase, default_url
    from bench.report import Results
    from bench.sections import (
        Bench,
        at_scale,
        bare_celery_throughput,
        cancel_saturated,
        cancel_under_load,
        dispatch_lag,
        floor_throughput,
        naive_eta,
        pipeline_throughput,
        plain_workers,
        scaling,
        task_body,
    )
    from bench.stack import BenchStack

    size = SIZES[args.size]
    db = BenchDatabase(args.database_url or default_url())
    stack = BenchStack(
        database_url=db.url,
        workers=args.workers,
        concurrency=args.concurrency,
        env_overrides=dict(STACK_ENV),
        plain=plain_workers(args.workers),
    )
    started = time.monotonic()
    print(f"bench: size {size.name}, database {db.name}, logs in {stack.logdir}", flush=True)
    ok = False
    try:
        db.create()
        stack.start()
        bench = Bench(stack, db, db.make_tenant(stack.sandbox_url), size, args.seed, workdir)
        machine = _machine(bench)

        def section(name: str) -> None:
            bench.facts[f"load.{name}"] = os.getloadavg()[0]

        section("throughput")
        throughput = pipeline_throughput(bench)
        floor = floor_throughput(bench)
        bench.figures["throughput.floor_ratio"] = throughput / floor
        bare = bare_celery_throughput(bench)
        bench.figures["throughput.noop_ratio"] = throughput / bare
        task_body(bench)
        section("scaling")
        scaling(bench, args.workers)
        section("lag")
        dispatch_lag(bench, throughput)
        section("saturated")
        cancel_saturated(bench)
        section("scale")
        at_scale(bench)
        naive_eta(bench)
        # Last: it leaves a backlog behind that only stopping the stack clears quickly.
        section("cancel")
        cancel_under_load(bench, throughput)
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        ok = True
    except BaseException:
        traceback.print_exc()
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        # The logs of a failed run stay for whoever reads the traceback.
        stack.keep_logs = args.keep_logs or not ok
        stack.stop()
        db.drop()
    return Results(
        machine=machine,
        settings={
            "size": size.name,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "stack_env": STACK_ENV,
            "duration_s": round(time.monotonic() - started, 1),
            "sizes": size.__dict__,
        },
        figures=bench.figures,
        facts=bench.facts,
        samples=bench.samples,
    )


def run(args: argparse.Namespace) -> int:
    """Run every benchmark (or re-render one) and write the report; the process exit code."""
    if args.workers < 1 or args.concurrency < 1:
        print("publisher: --workers and --concurrency must be at least 1", file=sys.stderr)
        return 2
    from bench.report import Results, write_report

    if args.render is not None:
        results = Results.load(args.render)
    else:
        with tempfile.TemporaryDirectory(prefix="publisher-bench-io-") as tmp:
            results = _measure(args, Path(tmp))
    written = write_report(results, args.out)
    print(f"bench: wrote {', '.join(str(p) for p in written)}")
    print(json.dumps(results.figures, indent=1, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench`: the same as `publisher bench`."""
    return run(build_parser().parse_args(argv))
