"""Faults on a seeded schedule: processes killed, Redis emptied, connections cut, a flaky
platform. Every kind enabled is injected at least once per run, in a shuffled cycle."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Final

import httpx
from sqlalchemy import create_engine, text

from chaos.history import Fault, History
from chaos.options import ALL_FAULTS, PROCESS_FAULTS
from harness.stack import Stack, children_of
from sandbox.faults import DEFAULTS

# How long a platform fault stays on.
SPELL_S: Final = 5.0
# The sandbox knobs each platform fault sets while it is on (sandbox/faults.py).
SPELLS: Final[dict[str, dict[str, float]]] = {
    "latency": {"latency_ms": 1500, "latency_jitter_ms": 500},
    "http_429": {"rate_429": 0.3, "retry_after_s": 0.5},
    "http_503": {"rate_503": 0.3},
    "lost_response": {"rate_lost": 0.3},
}
# Off is every knob a spell touches back at its default. A knob the sandbox doesn't define
# fails here, at import, rather than as a 400 in the middle of a run.
FAULTS_OFF: Final[dict[str, float | int | None]] = {
    name: DEFAULTS[name] for spell in SPELLS.values() for name in spell
}


class Injector:
    """Injects one fault every `every_s` seconds (with jitter) until stopped."""

    def __init__(
        self,
        kinds: list[str],
        every_s: float,
        seed: int,
        history: History,
        sandbox_url: str,
        stack: Stack | None = None,
        database_url: str | None = None,
    ) -> None:
        unknown = set(kinds) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        if stack is None and set(kinds) & set(PROCESS_FAULTS):
            raise ValueError("process faults need the local stack (not available with --target)")
        self.kinds = kinds
        self.every_s = every_s
        self.rng = random.Random(seed ^ 0x5EED)
        self.history = history
        self.sandbox_url = sandbox_url.rstrip("/")
        self.stack = stack
        self.db = create_engine(database_url, pool_size=1) if database_url else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.actions: dict[str, Callable[[], str]] = {
            "worker_kill": self._worker_kill,
            "redis_restart": self._redis_restart,
            "pg_terminate": self._pg_terminate,
            **{kind: partial(self._spell, spell) for kind, spell in SPELLS.items()},
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._faults_off()

    def _loop(self) -> None:
        cycle: list[str] = []
        while not self._stop.wait(self.every_s * self.rng.uniform(0.5, 1.5)):
            if not cycle:
                cycle = list(self.kinds)
                self.rng.shuffle(cycle)
            kind = cycle.pop()
            try:
                detail = self.actions[kind]()
            except Exception as exc:  # a fault that could not be injected is itself recorded
                detail = f"injection failed: {type(exc).__name__}: {exc}"
            self.history.fault(Fault(kind, time.time(), detail))

    def _faults_off(self) -> None:
        httpx.put(f"{self.sandbox_url}/faults", json=FAULTS_OFF).raise_for_status()

    def _spell(self, faults: dict[str, float]) -> str:
        httpx.put(f"{self.sandbox_url}/faults", json=faults).raise_for_status()
        self._stop.wait(SPELL_S)
        self._faults_off()
        return ",".join(f"{k}={v:g}" for k, v in faults.items())

    def _worker_kill(self) -> str:
        assert self.stack is not None
        names = sorted(n for n in self.stack.procs if n.startswith("worker"))
        busy = self._busy_pids()
        if busy and self.rng.random() < 0.5:
            # The pool process that holds a post right now: kill -9 mid-protocol.
            pid, post_id = self.rng.choice(busy)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            else:
                return f"pool process {pid} while it held {post_id}"
        name = self.rng.choice(names)
        proc = self.stack.procs[name]
        # Alternate between one pool process (the main one hands its task back) and the whole
        # node (its held ETA messages are lost until re-dispatch), kill -9 either way.
        if self.rng.random() < 0.5:
            children = children_of(proc.pid)
            if children:
                victim = self.rng.choice(children)
                os.kill(victim, signal.SIGKILL)
                return f"{name} pool process {victim}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._stop.wait(1.0)
        self.stack.start_worker(name)
        return f"{name} node (restarted)"

    def _busy_pids(self) -> list[tuple[int, str]]:
        """(pid, post id) of the pool processes holding a post in `publishing` now."""
        if self.db is None:
            return []
        with self.db.connect() as conn:
            rows = conn.execute(
                text("SELECT owner, id FROM scheduled_posts WHERE status = 'publishing'")
            ).all()
        out = []
        for owner, post_id in rows:
            parts = (owner or "").split(":")
            if len(parts) == 3 and parts[1].isdigit():  # host:pid:task, not a reconciler
                out.append((int(parts[1]), str(post_id)))
        return out

    def _redis_restart(self) -> str:
        assert self.stack is not None and self.stack.redis is not None
        self.stack.redis.restart_empty()
        return "emptied"

    def _pg_terminate(self) -> str:
        assert self.db is not None
        with self.db.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name IN ('publisher.worker', 'publisher.api')"
                    " AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            conn.commit()
        return f"{killed} connections"
