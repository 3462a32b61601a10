"""A whole deployment as local processes: a private redis-server, the sandbox, the API, Celery
workers and beat. Used by the integration tests, chaos runs and benchmarks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis
from sqlalchemy import make_url

from harness import netns

if TYPE_CHECKING:
    from harness.pgbouncer import PrivatePgBouncer
    from harness.rabbitmq import PrivateRabbitMQ

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a Celery node's pool processes, say)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError, redis.RedisError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class PrivateRedis:
    """A redis-server of the test's own on a free port, with nothing kept on disk."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.logdir),
                "--logfile",
                str(self.logdir / "redis.log"),
            ],
            start_new_session=True,
        )
        wait_until(lambda: redis.Redis.from_url(self.url).ping(), 10, what="redis-server")

    def kill(self) -> None:
        """SIGKILL: every queued and unacked message is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart_empty(self) -> None:
        self.kill()
        self.start()


def _default_pooler() -> PrivatePgBouncer | None:
    from harness.pgbouncer import default_pooler  # it builds on this module

    return default_pooler()


@dataclass
class Stack:
    database_url: str
    workers: int = 1
    concurrency: int = 4
    env_overrides: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    sandbox_port: int = field(default_factory=free_port)
    instagram_port: int = field(default_factory=free_port)
    tiktok_port: int = field(default_factory=free_port)
    # Flags of `publisher emulator instagram` (e.g. ["--video-processing-s", "3"]).
    instagram_flags: list[str] = field(default_factory=list)
    api_metrics_port: int = field(default_factory=free_port)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="publisher-it-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: PrivateRedis | None = None
    # Celery's broker: "redis" (the private redis-server) or "rabbitmq", a private node
    # (harness/rabbitmq.py); Redis still holds the rate limits either way.
    celery_broker: str = "redis"
    rabbitmq: PrivateRabbitMQ | None = None
    metrics_ports: dict[str, int] = field(default_factory=dict)
    flower_url: str | None = None
    # stop() removes the logdir unless this is set (a run whose logs someone will read).
    keep_logs: bool = False
    # Every role's DATABASE_URL goes through it (harness/pgbouncer.py); None: straight.
    pooler: PrivatePgBouncer | None = field(default_factory=_default_pooler)
    # A worker node started with a prefix or env of its own (in a network namespace) gets
    # them again when restarted by name.
    worker_hooks: dict[str, tuple[Sequence[str], dict[str, str] | None]] = field(
        default_factory=dict
    )

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    @property
    def tmpdir(self) -> Path:
        """TMPDIR of every process the stack starts: what they leave in it (multiprocess
        metrics directories, multiprocessing's pymp-* folders, more so when a process is
        killed) goes when the stack stops."""
        return self.logdir / "tmp"

    @property
    def failpoints(self) -> Path:
        return self.logdir / "failpoints"

    def arm(self, **points: float) -> None:
        """Arm failpoints (name=seconds) in every worker; arm() with nothing disarms all.
        Written aside and renamed into place: a new file each time, which the workers see
        changed however soon after the last one."""
        staged = self.failpoints.with_suffix(".new")
        staged.write_text("".join(f"{k}={v}\n" for k, v in points.items()))
        staged.replace(self.failpoints)

    def failpoint_pid(self, name: str, post_id: str, timeout: float = 20) -> int:
        """The pid of the worker process that reached failpoint `name` for this post."""
        pattern = re.compile(rf"failpoint {name} post={re.escape(post_id)} pid=(\d+)")

        def find() -> int | None:
            for log in self.logdir.glob("worker*.log"):
                m = pattern.search(log.read_text(errors="replace"))
                if m:
                    return int(m.group(1))
            return None

        pid: int = wait_until(find, timeout, what=f"failpoint {name}")
        return pid

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def instagram_url(self) -> str:
        return f"http://127.0.0.1:{self.instagram_port}"

    @property
    def tiktok_url(self) -> str:
        return f"http://127.0.0.1:{self.tiktok_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            SANDBOX_URL=self.sandbox_url,
            INSTAGRAM_API_URL=self.instagram_url,
            TIKTOK_API_URL=self.tiktok_url,
            ENVIRONMENT="test",
            STATE_DIR=str(self.logdir),
            FAILPOINTS_FILE=str(self.failpoints),
            PYTHONUNBUFFERED="1",
            TMPDIR=str(self.tmpdir),
        )
        if self.pooler is not None:
            env.update(self.pooler.env_for(self.database_url))
        env.update(self.env_overrides)
        return env

    def spawn(
        self, name: str, *args: str, prefix: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`publisher <args>` as `name`; `prefix` runs it through another command (a network
        namespace's `ip netns exec`), `env` replaces some of its environment."""
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=self.env() | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_worker(
        self,
        name: str,
        queues: str = "publishing",
        concurrency: int | None = None,
        *,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        if prefix or env:
            self.worker_hooks[name] = (prefix, env)
        prefix, env = self.worker_hooks.get(name, ((), None))
        port = self.metrics_ports.setdefault(name, free_port())
        log = self.logdir / f"{name}.log"
        # A restarted worker appends to its log: only what comes after this counts as ready.
        offset = log.stat().st_size if log.exists() else 0

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
            with log.open("rb") as f:
                f.seek(offset)
                return b" ready." in f.read()

        proc = self.spawn(
            name,
            "worker",
            "--concurrency",
            str(concurrency or self.concurrency),
            "--name",
            f"{name}@%h",
            "--queues",
            queues,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            prefix=prefix,
            env=env,
        )
        wait_until(ready, 60, what=f"{name} ready")
        return proc

    def start_namespaced_worker(self, name: str, concurrency: int) -> netns.Namespace:
        """A publishing worker node in a network namespace of its own (harness/netns.py),
        reaching PostgreSQL (through the stack's pooler, if any), Redis and the sandbox only
        through the namespace's relays, so each can be cut off alone. The namespace is the
        caller's to close."""
        namespace = netns.Namespace(
            {
                "postgres": make_url(self.env()["DATABASE_URL"]).port or 5432,
                "redis": self.redis.port,  # type: ignore[union-attr]
                "platform": self.sandbox_port,
            }
        ).open()
        env = netns.reachable_urls(
            namespace, self.env(), ["DATABASE_URL", "REDIS_URL", "SANDBOX_URL"]
        )
        try:
            self.start_worker(name, concurrency=concurrency, prefix=namespace.prefix(), env=env)
        except BaseException:
            namespace.close()
            raise
        return namespace

    def start(self) -> Stack:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.arm()
        if self.pooler is not None:
            self.pooler.serve(self.database_url)
            self.pooler.start()
        self.redis = PrivateRedis(self.logdir)
        self.redis.start()
        if self.celery_broker == "rabbitmq":
            from harness.rabbitmq import attach

            self.rabbitmq = attach(self)
        self.spawn("sandbox", "sandbox", "--port", str(self.sandbox_port))
        self.spawn(
            "instagram",
            "emulator",
            "instagram",
            "--port",
            str(self.instagram_port),
            *self.instagram_flags,
        )
        self.spawn("tiktok", "emulator", "tiktok", "--port", str(self.tiktok_port))
        self.spawn(
            "api",
            "api",
            "--port",
            str(self.api_port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.api_metrics_port),
        )
        for i in range(self.workers):
            self.start_worker(f"worker{i}")
        self.start_worker("webhooks", queues="webhooks")
        self.start_worker("control", queues="control", concurrency=2)
        self.spawn("beat", "beat")
        wait_until(
            lambda: httpx.get(f"{self.sandbox_url}/healthz").status_code == 200, 30, what="sandbox"
        )
        wait_until(
            lambda: httpx.get(f"{self.instagram_url}/healthz").status_code == 200,
            30,
            what="instagram emulator",
        )
        wait_until(
            lambda: httpx.get(f"{self.tiktok_url}/healthz").status_code == 200,
            30,
            what="tiktok emulator",
        )
        wait_until(lambda: httpx.get(f"{self.api_url}/readyz").status_code == 200, 30, what="api")
        return self

    def start_flower(self, user: str, password: str) -> str:
        """Flower on a free port with basic auth; returns its base URL."""
        port = free_port()
        self.env_overrides.update(FLOWER_USER=user, FLOWER_PASSWORD=password)
        self.spawn("flower", "flower", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthcheck").status_code == 200, 30, what="flower")
        return url

    def api_metrics(self) -> str:
        """The API's /metrics text, from its own port."""
        return httpx.get(f"http://127.0.0.1:{self.api_metrics_port}/metrics").text

    def worker_metrics(self) -> str:
        """Every running worker's /metrics text, concatenated."""
        return "\n".join(
            httpx.get(f"http://127.0.0.1:{port}/metrics").text
            for name, port in self.metrics_ports.items()
            if self.procs[name].poll() is None
        )

    def stop(self) -> None:
        """Stop every process, then remove what they left on disk: the TMPDIR always (with
        the leftovers of processes killed along the way), the logdir unless `keep_logs`."""
        self._stop_procs()
        if self.redis is not None:
            self.redis.kill()
        if self.rabbitmq is not None:
            self.rabbitmq.kill()
        if self.pooler is not None:
            self.pooler.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if not self.keep_logs:
            shutil.rmtree(self.logdir, ignore_errors=True)

    def _stop_procs(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self, tail: int = 40) -> str:
        out = []
        for path in sorted(self.logdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        if self.pooler is not None:
            out.append("--- pgbouncer.log\n" + self.pooler.logs(tail))
        return "\n".join(out)

    def ledger(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.sandbox_url}/ledger").json()
        return body

    def set_faults(self, **faults: Any) -> None:
        httpx.put(f"{self.sandbox_url}/faults", json=faults).raise_for_status()

    def reset_sandbox(self) -> None:
        """An empty ledger and every fault knob at its default (sandbox/faults.py)."""
        httpx.post(f"{self.sandbox_url}/ledger/reset").raise_for_status()
        httpx.post(f"{self.sandbox_url}/faults/reset").raise_for_status()

    def instagram_ledger(self) -> list[dict[str, Any]]:
        """Every public post the Instagram emulator made."""
        posts: list[dict[str, Any]] = httpx.get(f"{self.instagram_url}/ledger").json()["posts"]
        return posts

    def set_instagram_faults(self, **faults: Any) -> None:
        httpx.put(f"{self.instagram_url}/faults", json=faults).raise_for_status()

    def reset_instagram(self) -> None:
        """No posts, containers or quota used, and every knob at its default."""
        httpx.post(f"{self.instagram_url}/ledger/reset").raise_for_status()
        httpx.post(f"{self.instagram_url}/faults/reset").raise_for_status()

    def tiktok_ledger(self) -> list[dict[str, Any]]:
        """Every post the TikTok emulator made (public, private or to an inbox)."""
        posts: list[dict[str, Any]] = httpx.get(f"{self.tiktok_url}/ledger").json()["posts"]
        return posts

    def set_tiktok_faults(self, **faults: Any) -> None:
        httpx.put(f"{self.tiktok_url}/faults", json=faults).raise_for_status()

    def reset_tiktok(self) -> None:
        httpx.post(f"{self.tiktok_url}/ledger/reset").raise_for_status()
        httpx.post(f"{self.tiktok_url}/faults/reset").raise_for_status()
