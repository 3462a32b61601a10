"""Faults on a seeded schedule: processes killed, Redis emptied, connections cut, a flaky
platform (the sandbox or the Instagram emulator). Every kind enabled is injected at least
once per run, in a shuffled cycle."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final

import httpx
from sqlalchemy import create_engine, text

from chaos.history import Fault, History
from chaos.options import ADAPTERS, PLATFORM_FAULTS_OF, PROCESS_FAULTS, faults_of
from harness.stack import Stack, children_of
from sandbox import faults as sandbox_faults
from sandbox import instagram_faults

Knobs = Mapping[str, float | str]

# How long a platform fault stays on.
SPELL_S: Final = 5.0
# Each platform fault, once: the knobs it sets on each adapter's platform while it is on
# (sandbox/faults.py, sandbox/instagram_faults.py). An adapter a kind does not list cannot
# be given it. The emulator's publish errors and lost answers come after `media_publish` may
# have posted, so they test the lookup that decides whether to publish again (a wrong second
# publish shows in the ledger: the run sets `duplicate_publish=post` for its whole length,
# since that retry may come after the spell is over).
SPELLS: Final[dict[str, dict[str, Knobs]]] = {
    "latency": {
        "sandbox": {"latency_ms": 1500, "latency_jitter_ms": 500},
        "emulator": {"latency_ms": 1000, "latency_jitter_ms": 500, "publish_latency_ms": 1000},
    },
    "http_429": {
        "sandbox": {"rate_429": 0.3, "retry_after_s": 0.5},
        "emulator": {"rate_limited": 0.3},
    },
    "http_503": {
        "sandbox": {"rate_503": 0.3},
        "emulator": {"rate_server_error": 0.3, "rate_server_error_publish": 0.3},
    },
    "lost_response": {
        "sandbox": {"rate_lost": 0.3},
        "emulator": {"rate_lost": 0.2, "rate_lost_publish": 0.3},
    },
    "container_error": {"emulator": {"rate_container_error": 0.3}},
}
_DEFAULTS: Final[dict[str, Mapping[str, float | int | str | None]]] = {
    "sandbox": sandbox_faults.DEFAULTS,
    "emulator": instagram_faults.DEFAULTS,
}
# Off is every knob a spell touches on that platform back at its default. A knob the
# platform doesn't define fails here, at import, rather than as a 400 in the middle of a run.
FAULTS_OFF: Final[dict[str, dict[str, float | int | str | None]]] = {
    adapter: {
        name: _DEFAULTS[adapter][name]
        for by_adapter in SPELLS.values()
        for name in by_adapter.get(adapter, {})
    }
    for adapter in ADAPTERS
}
if {a: tuple(k for k in SPELLS if a in SPELLS[k]) for a in ADAPTERS} != PLATFORM_FAULTS_OF:
    raise AssertionError("chaos/options.py and SPELLS disagree on each adapter's faults")


class Injector:
    """Injects one fault every `every_s` seconds (with jitter) until stopped."""

    def __init__(
        self,
        kinds: list[str],
        every_s: float,
        seed: int,
        history: History,
        platform_url: str,
        stack: Stack | None = None,
        database_url: str | None = None,
        adapter: str = "sandbox",
    ) -> None:
        unknown = set(kinds) - set(faults_of(adapter))
        if unknown:
            raise ValueError(f"unknown faults for {adapter}: {', '.join(sorted(unknown))}")
        if stack is None and set(kinds) & set(PROCESS_FAULTS):
            raise ValueError("process faults need the local stack (not available with --target)")
        self.kinds = kinds
        self.every_s = every_s
        self.rng = random.Random(seed ^ 0x5EED)
        self.history = history
        # The platform the accounts post to: the sandbox, or the Instagram emulator.
        self.platform_url = platform_url.rstrip("/")
        self.adapter = adapter
        self.stack = stack
        self.db = create_engine(database_url, pool_size=1) if database_url else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.actions: dict[str, Callable[[], str]] = {
            "worker_kill": self._worker_kill,
            "redis_restart": self._redis_restart,
            "pg_terminate": self._pg_terminate,
            **{
                kind: partial(self._spell, spells[adapter])
                for kind, spells in SPELLS.items()
                if adapter in spells
            },
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
        off = FAULTS_OFF[self.adapter]
        httpx.put(f"{self.platform_url}/faults", json=off).raise_for_status()

    def _spell(self, faults: Knobs) -> str:
        httpx.put(f"{self.platform_url}/faults", json=dict(faults)).raise_for_status()
        self._stop.wait(SPELL_S)
        self._faults_off()
        return ",".join(f"{k}={v}" for k, v in faults.items())

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
