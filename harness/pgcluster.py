"""A PostgreSQL cluster of a test's own: initdb in a temporary folder, its own port, trust
auth, fsync on. It can be stopped (fast, or immediate: a crash) and started again on the
same data, which the shared server on :5432 cannot be without disturbing everyone on it."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from harness.stack import free_port

StopMode = Literal["smart", "fast", "immediate"]

# PostgreSQL refuses to run as root; as root the cluster runs as this OS user.
SERVER_USER: Final = "postgres"
SUPERUSER: Final = "publisher"
# postgresql.conf additions: durable commits (a crash test: what was committed must survive
# `-m immediate`), a small footprint, and nothing listening beyond 127.0.0.1.
CONFIG: Final = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 16MB
max_connections = 200
log_line_prefix = '%m [%p] '
"""


class PostgresUnavailable(RuntimeError):
    """This machine cannot run a private cluster; the message says why."""


def find_bindir() -> Path | None:
    """PG_BIN, else the newest /usr/lib/postgresql/N/bin (N >= 15) with an initdb."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    usable = [p for p in found if int(p.parent.name) >= 15 and (p / "initdb").exists()]
    return usable[-1] if usable else None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot run here, or None when it can be tried."""
    bindir = find_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        return "no PostgreSQL 15+ initdb (looked in PG_BIN and /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} OS user to run the server"
        if shutil.which("runuser") is None:
            return f"running as root and no `runuser` to run the server as {SERVER_USER!r}"
    return None


class PrivatePostgres:
    """One cluster in a temporary folder on a free port, holding `database`."""

    def __init__(self, database: str = "publisher") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise PostgresUnavailable(reason)
        bindir = find_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.database = database
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="publisher-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.logfile = self.root / "postgres.log"
        self._initialized = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []

    def _run(self, tool: str, *args: str, as_server: bool = True) -> str:
        cmd = [*(self._as_server_user() if as_server else []), str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise PostgresUnavailable(
                f"{tool} exited with {done.returncode}: {done.stderr.strip() or done.stdout}"
                + (f"\n--- server log\n{log}" if log else "")
            )
        return done.stdout

    def _initdb(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--locale=C",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(CONFIG.format(port=self.port, sockets=self.sockets))
        self._initialized = True

    def start(self) -> PrivatePostgres:
        """initdb on first use, then start the server and wait until it takes connections
        (after crash recovery, when the last stop was immediate); the database made once."""
        first = not self._initialized
        if first:
            self._initdb()
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start"
        )
        if first:
            self._run(
                "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                self.database, as_server=False,
            )  # fmt: skip
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server, keeping its data: `fast` rolls back sessions and checkpoints;
        `immediate` kills every process at once, as a crash, and the next start recovers."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: StopMode = "fast", down_s: float = 0.0) -> None:
        """Stop (`mode`), stay down `down_s` seconds, start again on the same port and data."""
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def destroy(self) -> None:
        """Stop the server however it can be, and remove the folder."""
        if self.running:
            try:
                self.stop("immediate")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
