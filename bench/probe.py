"""Parts of the pipeline timed in a process of their own, whose settings point at the benchmark
deployment (settings are read from the environment once per process). Writes JSON to --out.

    python -m bench.probe tick --count 30 --out tick.json
        shared.publishing.protocol.dispatch_once() --count times, then EXPLAIN ANALYZE of
        the dispatcher's SELECT exactly as the driver sent it.
    python -m bench.probe publish --ids ids.json --out body.json
        shared.publishing.protocol.run_publish() on each post in turn, outside Celery: the CPU
        and wall time of the task body alone, and the statements and commits it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

from shared.kit.db import engine, init_engine


def _tick(count: int, interval: float) -> dict[str, Any]:
    from shared.publishing.protocol import dispatch_once

    captured: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        # The tick's first locking read of scheduled_posts is the due posts' (its later ones
        # re-arm lost polls): keep that one, from the last tick.
        locking = "FOR UPDATE SKIP LOCKED" in statement and "scheduled_posts" in statement
        if locking and not this_tick:
            captured[:] = [(statement, parameters)]
            this_tick.append(statement)

    this_tick: list[str] = []  # the statement kept in the current tick, once it ran

    event.listen(engine(), "before_cursor_execute", capture)
    # The first tick pays for the connection and the broker producer, not for the query.
    dispatch_once()
    durations, sent = [], 0
    for _ in range(count):
        this_tick.clear()
        started = time.perf_counter()
        sent += dispatch_once()
        durations.append((time.perf_counter() - started) * 1000)
        time.sleep(interval)
    event.remove(engine(), "before_cursor_execute", capture)

    plan: list[str] = []
    if captured:
        statement, parameters = captured[0]
        with engine().connect() as conn:
            # EXPLAIN ANALYZE runs the statement, row locks included; the rollback drops them.
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [str(r[0]) for r in rows]
            conn.rollback()
    return {"durations_ms": durations, "sent": sent, "plan": plan}


def _publish(ids: list[str]) -> dict[str, Any]:
    from shared.publishing.protocol import Outcome, run_publish

    counts = {"statements": 0, "commits": 0}

    def on_commit(*_: Any) -> None:
        counts["commits"] += 1

    # Statements counted at the driver: the hot path runs most of its own on the session's
    # psycopg connection, past SQLAlchemy's events.
    execute = psycopg.Cursor.execute

    def counted(cursor: Any, *args: Any, **kw: Any) -> Any:
        counts["statements"] += 1
        return execute(cursor, *args, **kw)

    owner = f"bench-probe:{os.getpid()}"
    # Warm-up: imports, the connection pool and the HTTP client's connection.
    warm = max(1, len(ids) // 10)
    for post_id in ids[:warm]:
        run_publish(post_id, 1, owner)
    measured = ids[warm:]
    event.listen(engine(), "commit", on_commit)
    psycopg.Cursor.execute = counted  # type: ignore[method-assign,assignment]
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        published = sum(run_publish(p, 1, owner) == Outcome.PUBLISHED for p in measured)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    n = len(measured)
    return {
        "posts": n,
        "published": published,
        "cpu_ms_per_post": 1000 * cpu / n,
        "wall_ms_per_post": 1000 * wall / n,
        "statements_per_post": counts["statements"] / n,
        "commits_per_post": counts["commits"] / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    sub = parser.add_subparsers(dest="what", required=True)
    tick = sub.add_parser("tick")
    tick.add_argument("--count", type=int, default=30)
    tick.add_argument("--interval", type=float, default=0.1)
    tick.add_argument("--out", type=Path, required=True)
    publish = sub.add_parser("publish")
    publish.add_argument("--ids", type=Path, required=True, help="JSON list of post ids")
    publish.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    init_engine("publisher.bench.probe", pool_size=2)
    if args.what == "tick":
        result = _tick(args.count, args.interval)
    else:
        result = _publish(json.loads(args.ids.read_text()))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
