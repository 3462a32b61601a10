"""The deployment under test: harness.stack.Stack, plus plain Celery workers beside it and the
pids and log offsets the measurements read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench import procfs
from harness.pgbouncer import PrivatePgBouncer
from harness.stack import ROOT, Stack, wait_until


@dataclass(frozen=True)
class PlainWorker:
    """A `celery -A app worker` to run beside the stack, on Redis database `db` of its server."""

    name: str
    app: str
    queue: str
    db: int = 0


@dataclass
class BenchStack(Stack):
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="publisher-bench-")))
    plain: list[PlainWorker] = field(default_factory=list)
    # Straight to PostgreSQL, as the bare comparators run: the figures are the product's.
    pooler: PrivatePgBouncer | None = None
    extra: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> BenchStack:
        """Stack.start, then the plain workers, booting side by side: they idle until their
        measurement."""
        super().start()
        for plain in self.plain:
            self.start_celery(plain.name, plain.app, plain.queue, broker_url=self.broker(plain.db))
        for plain in self.plain:
            self._wait_ready(plain.name)
        return self

    def _wait_ready(self, name: str) -> None:
        log = self.logdir / f"{name}.log"

        def ready() -> bool:
            proc = self.procs.get(name) or self.extra[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: see {log}")
            return b" ready." in log.read_bytes()

        wait_until(ready, 90, what=f"{name} ready")

    def broker(self, db: int) -> str:
        """The private redis-server's database `db`."""
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def worker_pids(self) -> list[int]:
        return [p.pid for name, p in self.procs.items() if name.startswith("worker")]

    def set_workers(self, count: int) -> None:
        """Run exactly `count` publisher workers, worker0 to worker{count-1}: the others stop
        (a warm shutdown; between measurements nothing is in flight), the missing start."""
        for name in [n for n in self.procs if n.startswith("worker")]:
            if int(name.removeprefix("worker")) >= count:
                self._stop_one(name)
        missing = [
            name
            for name in (f"worker{i}" for i in range(count))
            if name not in self.procs or self.procs[name].poll() is not None
        ]
        # Side by side: each takes seconds to boot, mostly imports.
        with ThreadPoolExecutor(max_workers=max(1, len(missing))) as pool:
            list(pool.map(self.start_worker, missing))
        self.workers = count

    def _stop_one(self, name: str) -> None:
        proc = self.procs.pop(name)
        self.metrics_ports.pop(name, None)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def start_module(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        """`python -m module args` with the stack's environment, beside the stack; stopped
        with stop_extra, or with the stack."""
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.extra[name] = proc
        return proc

    def pid(self, name: str) -> int:
        proc = self.procs.get(name) or self.extra[name]
        return proc.pid

    def worker_rss(self) -> list[int]:
        """RSS of each worker: its main process plus its pool processes."""
        return [procfs.tree_rss(pid) for pid in self.worker_pids()]

    def start_celery(
        self, name: str, app: str, queue: str, *, broker_url: str | None = None
    ) -> subprocess.Popen[bytes]:
        """A plain `celery -A app worker` with the stack's concurrency, beside the stack."""
        env = self.env()
        env["BENCH_BROKER_URL"] = broker_url or self.redis_url
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--loglevel=INFO",
                f"--concurrency={self.concurrency}",
                f"--queues={queue}",
                f"--hostname={name}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.extra[name] = proc
        return proc

    def stop_extra(self, name: str, *, kill: bool = False) -> None:
        """Stop a plain Celery worker; `kill` skips the warm shutdown (and its redelivery)."""
        proc = self.extra.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for name in list(self.extra):
            self.stop_extra(name, kill=True)
        super().stop()

    def log_offset(self, name: str) -> int:
        path = self.logdir / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name: str, offset: int) -> str:
        with (self.logdir / f"{name}.log").open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
