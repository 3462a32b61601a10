"""Faults on a seeded schedule: processes killed, Redis emptied, connections cut, a flaky
platform (the sandbox, or the Instagram and TikTok emulators). Every kind enabled is injected
at least once per run, in a shuffled cycle."""

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
from chaos.options import (
    OPT_IN_FAULTS,
    PARTITION_FAULTS_OF,
    PLATFORM_FAULTS_OF,
    PLATFORMS_OF,
    PROCESS_FAULTS,
    all_faults_of,
)
from harness.netns import Namespace
from harness.pgcluster import PrivatePostgres, StopMode
from harness.stack import Stack, children_of
from sandbox import faults as sandbox_faults
from sandbox import instagram_faults, tiktok_faults

Knobs = Mapping[str, float | int | str]

# How long a platform fault stays on.
SPELL_S: Final = 5.0
# The knobs an emulator holds for a whole run (set at start, and what a spell's end goes
# back to). Instagram: a quota that never runs out, so it is not what fails posts; containers
# that take real (short) time to process, so posts spend time preparing between the claim and
# the point of no return; and a second media_publish of one container posting again, so a
# wrong retry shows in the ledger. TikTok: no daily cap or per-token rate limit in the way of
# a load far denser than one creator's, and processing and moderation that take real time, so
# posts are polled while they wait.
RUN_KNOBS: Final[dict[str, Knobs]] = {
    "sandbox": {},
    "instagram": {
        "quota_total": 1_000_000,
        "image_processing_s": 0.05,
        "video_processing_s": 0.3,
        "duplicate_publish": "post",
    },
    "tiktok": {
        "daily_cap": 1_000_000,
        "enforce_rate_limits": False,
        "processing_s": 0.5,
        "moderation_s": 0.5,
    },
}
# Each platform fault, once: the knobs it sets on each platform while it is on
# (sandbox/faults.py, sandbox/instagram_faults.py, sandbox/tiktok_faults.py). An adapter none
# of whose platforms a kind lists cannot be given it. The emulators' publish (init) errors and
# lost answers come after the call may have posted, so they test the lookup that decides
# whether to publish again (a wrong second publish shows in the ledger). `slow_completion`:
# Instagram containers that take seconds to finish, waited for under a renewed lease, and TikTok
# posts whose processing outlasts a lease (the chaos stack's LEASE_S is 10 s), which no reaper
# may take for stuck.
SPELLS: Final[dict[str, dict[str, Knobs]]] = {
    "latency": {
        "sandbox": {"latency_ms": 1500, "latency_jitter_ms": 500},
        "instagram": {"latency_ms": 1000, "latency_jitter_ms": 500, "publish_latency_ms": 1000},
        "tiktok": {"latency_ms": 1000, "latency_jitter_ms": 500, "init_latency_ms": 1000},
    },
    "http_429": {
        "sandbox": {"rate_429": 0.3, "retry_after_s": 0.5},
        "instagram": {"rate_limited": 0.3},
        "tiktok": {"rate_limited": 0.3},
    },
    "http_503": {
        "sandbox": {"rate_503": 0.3},
        "instagram": {"rate_server_error": 0.3, "rate_server_error_publish": 0.3},
        "tiktok": {"rate_server_error": 0.3, "rate_server_error_init": 0.3},
    },
    "lost_response": {
        "sandbox": {"rate_lost": 0.3},
        "instagram": {"rate_lost": 0.2, "rate_lost_publish": 0.3},
        "tiktok": {"rate_lost": 0.2, "rate_lost_init": 0.3},
    },
    "container_error": {
        "instagram": {"rate_container_error": 0.3},
        "tiktok": {"rate_fail": 0.3, "fail_reason": "internal"},
    },
    "slow_completion": {
        "instagram": {"video_processing_s": 3.0},
        "tiktok": {"processing_s": 15.0, "moderation_s": 3.0},
    },
    # Every platform at once answers 503 to every call, for `--outage` seconds rather than a
    # spell: longer than the platform retry budget, so the posts due meanwhile wait for the
    # platform (PLATFORM_OUTAGE_*) and must go out once each when it is back.
    "platform_down": {
        "sandbox": {"down": True},
        "instagram": {"down": True},
        "tiktok": {"down": True},
    },
}
_DEFAULTS: Final[dict[str, Mapping[str, float | int | str | None]]] = {
    "sandbox": sandbox_faults.DEFAULTS,
    "instagram": instagram_faults.DEFAULTS,
    "tiktok": tiktok_faults.DEFAULTS,
}
# Off is every knob a spell touches on that platform back at the run's value, else its
# default. A knob the platform doesn't define fails here, at import, rather than as a 400 in
# the middle of a run.
FAULTS_OFF: Final[dict[str, dict[str, float | int | str | None]]] = {
    platform: {
        name: RUN_KNOBS[platform].get(name, _DEFAULTS[platform][name])
        for by_platform in SPELLS.values()
        for name in by_platform.get(platform, {})
    }
    for platform in _DEFAULTS
}
for _platform, _knobs in RUN_KNOBS.items():
    if set(_knobs) - set(_DEFAULTS[_platform]):
        raise AssertionError(f"RUN_KNOBS sets knobs {_platform} does not have")
if {
    a: tuple(k for k in SPELLS if set(PLATFORMS_OF[a]) & set(SPELLS[k])) for a in PLATFORMS_OF
} != PLATFORM_FAULTS_OF:
    raise AssertionError("chaos/options.py and SPELLS disagree on each adapter's faults")


def completion_allowance_s() -> float:
    """The longest TikTok may take to complete a post on its own in a run: its processing
    and moderation at their slowest (the run's knobs or a spell's). Invariant 5's bound for
    such a post is this much longer; the caller adds one poll interval."""
    spells = [RUN_KNOBS["tiktok"], *(by.get("tiktok", {}) for by in SPELLS.values())]

    def longest(name: str) -> float:
        return max(float(k.get(name, _DEFAULTS["tiktok"][name] or 0)) for k in spells)

    return longest("processing_s") + longest("moderation_s")


class Injector:
    """Injects one fault every `every_s` seconds (with jitter) until stopped."""

    def __init__(
        self,
        kinds: list[str],
        every_s: float,
        seed: int,
        history: History,
        platform_urls: Mapping[str, str],
        stack: Stack | None = None,
        database_url: str | None = None,
        adapter: str = "sandbox",
        outage_s: float = SPELL_S,
        cluster: PrivatePostgres | None = None,
        netns: Namespace | None = None,
        partition_s: float = SPELL_S,
    ) -> None:
        unknown = set(kinds) - set(all_faults_of(adapter))
        if unknown:
            raise ValueError(f"unknown faults for {adapter}: {', '.join(sorted(unknown))}")
        if stack is None and set(kinds) & set(PROCESS_FAULTS + OPT_IN_FAULTS):
            raise ValueError("process faults need the local stack (not available with --target)")
        if netns is None and set(kinds) & set(PARTITION_FAULTS_OF[adapter]):
            raise ValueError("partition faults need a worker node in a network namespace")
        self.netns = netns
        self.partition_s = partition_s
        self.kinds = kinds
        self.every_s = every_s
        self.rng = random.Random(seed ^ 0x5EED)
        self.history = history
        # The platforms the accounts post to (PLATFORMS_OF), each at its base URL.
        if set(platform_urls) != set(PLATFORMS_OF[adapter]):
            raise ValueError(f"{adapter} posts to {', '.join(PLATFORMS_OF[adapter])}")
        self.platform_urls = {p: url.rstrip("/") for p, url in platform_urls.items()}
        self.adapter = adapter
        self.spell_s = {"platform_down": outage_s}
        self.stack = stack
        # Pre-ping: the server may have restarted (pg_restart) since this last connected.
        self.db = (
            create_engine(database_url, pool_size=1, pool_pre_ping=True) if database_url else None
        )
        if "pg_restart" in kinds and cluster is None:
            raise ValueError("pg_restart needs the stack on a private PostgreSQL cluster")
        self.cluster = cluster
        self._restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.actions: dict[str, Callable[[], str]] = {
            "worker_kill": self._worker_kill,
            "redis_restart": self._redis_restart,
            "pg_terminate": self._pg_terminate,
            "pg_restart": self._pg_restart,
            **{kind: partial(self._spell, kind) for kind in PLATFORM_FAULTS_OF[adapter]},
            **{
                kind: partial(self._partition, kind.removeprefix("partition_"))
                for kind in PARTITION_FAULTS_OF[adapter]
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
            began = time.time()
            try:
                detail = self.actions[kind]()
            except Exception as exc:  # a fault that could not be injected is itself recorded
                detail = f"injection failed: {type(exc).__name__}: {exc}"
            self.history.fault(Fault(kind, time.time(), detail, began))

    def _faults_off(self) -> None:
        for platform, url in self.platform_urls.items():
            httpx.put(f"{url}/faults", json=FAULTS_OFF[platform]).raise_for_status()

    def _spell(self, kind: str) -> str:
        on = {p: SPELLS[kind][p] for p in self.platform_urls if p in SPELLS[kind]}
        for platform, faults in on.items():
            url = self.platform_urls[platform]
            httpx.put(f"{url}/faults", json=dict(faults)).raise_for_status()
        self._stop.wait(self.spell_s.get(kind, SPELL_S))
        self._faults_off()
        return "; ".join(
            f"{p}: " + ",".join(f"{k}={v}" for k, v in faults.items()) for p, faults in on.items()
        )

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

    def _partition(self, target: str) -> str:
        """The namespaced worker node cut off from `target` for longer than a lease (what it
        holds meanwhile is the reaper's), then healed."""
        assert self.netns is not None
        with self.netns.partitioned(target):
            self._stop.wait(self.partition_s)
        return f"{target} cut for {self.partition_s:.0f}s"

    def _redis_restart(self) -> str:
        assert self.stack is not None and self.stack.redis is not None
        self.stack.redis.restart_empty()
        return "emptied"

    def _pg_restart(self) -> str:
        """The whole PostgreSQL server down for a few seconds: a fast shutdown and a crash
        (immediate, then recovery) in turn."""
        assert self.cluster is not None
        mode: StopMode = "immediate" if self._restarts % 2 else "fast"
        self._restarts += 1
        down_s = self.rng.uniform(2.0, 5.0)
        self.cluster.restart(mode, down_s=down_s)
        return f"{mode} shutdown, down {down_s:.1f}s"

    def _pg_terminate(self) -> str:
        assert self.db is not None
        with self.db.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name IN ('publisher.worker', 'publisher.api')"
                    " AND pid <> pg_backend_pid() AND datname = current_database()"
                )
            ).scalar_one()
            conn.commit()
        return f"{killed} connections"
