"""A PgBouncer of the test's own in transaction pooling mode, in front of the local PostgreSQL:
the stack's processes reach the database through it unless PUBLISHER_TEST_POOLER=none."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

from harness.stack import free_port, wait_until

# Where the local PostgreSQL listens (trust auth for `root`, README "Requirements").
SERVER_HOST = "127.0.0.1"
SERVER_PORT = 5432
# The stack's roles wait for a server connection rather than fail: 20 per database and
# user is well above the transactions a test stack has open at once, and well below the
# local server's max_connections (100, shared by whatever else runs tests on it).
POOL_SIZE = 20
# The env switch: "pgbouncer" (the default where the binary is installed) or "none".
SWITCH = "PUBLISHER_TEST_POOLER"


def binary() -> str | None:
    """Debian's pgbouncer (scripts/ensure-test-tools installs it), or None."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer",) if Path(p).exists()), None
    )


def missing() -> str | None:
    """Why a private PgBouncer cannot run here, or None when it can."""
    if binary() is None:
        return "pgbouncer is not installed (scripts/ensure-test-tools installs Debian's)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "pgbouncer refuses to run as root and there is no postgres user to run as"
    return None


def default_pooler() -> PrivatePgBouncer | None:
    """The pooler a Stack puts in front of the database: PgBouncer where it can run, none
    when PUBLISHER_TEST_POOLER=none (the processes then connect directly)."""
    choice = os.environ.get(SWITCH, "")
    if choice == "none":
        return None
    if choice not in ("", "pgbouncer"):
        raise ValueError(f"{SWITCH} is pgbouncer or none, not {choice!r}")
    reason = missing()
    if reason is not None:
        if choice == "pgbouncer":
            raise RuntimeError(f"{SWITCH}=pgbouncer but {reason}")
        return None
    return PrivatePgBouncer()


class PrivatePgBouncer:
    """pgbouncer on a free port, config and log in a folder of its own, `pool_mode =
    transaction`, any database of the local server, the client's own user (trust auth, as
    the server's). Started by `start()`, gone with `stop()`."""

    def __init__(self, pool_size: int = POOL_SIZE, query_wait_timeout_s: int = 60) -> None:
        self.port = free_port()
        self.pool_size = pool_size
        # How long a query waits for a server connection before PgBouncer refuses it.
        self.query_wait_timeout_s = query_wait_timeout_s
        # The server it pools, and a user of it besides this process's (`serve`).
        self.server_host, self.server_port = SERVER_HOST, SERVER_PORT
        self.server_user: str | None = None
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def serve(self, database_url: str) -> None:
        """Pool the server `database_url` names (a private cluster, say) rather than the
        local one, for its user too; before `start()`."""
        url = make_url(database_url)
        self.server_host = url.host or SERVER_HOST
        self.server_port = url.port or SERVER_PORT
        self.server_user = url.username

    def url_for(self, database_url: str) -> str:
        """`database_url` with its host and port this pooler's: same user, database, driver."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def env_for(self, database_url: str) -> dict[str, str]:
        """What a role's environment needs to go through the pooler (shared/kit/db.py)."""
        return {"DATABASE_URL": self.url_for(database_url), "DATABASE_POOLER": "transaction"}

    @property
    def log(self) -> Path:
        assert self.dir is not None
        return self.dir / "pgbouncer.log"

    def _config(self, user: str) -> str:
        assert self.dir is not None
        return f"""\
[databases]
* = host={self.server_host} port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
admin_users = {user}
stats_users = {user}
max_client_conn = 1000
default_pool_size = {self.pool_size}
reserve_pool_size = 5
server_login_retry = 1
query_wait_timeout = {self.query_wait_timeout_s}
log_connections = 0
log_disconnections = 0
"""

    def start(self) -> PrivatePgBouncer:
        exe = binary()
        reason = missing()
        if exe is None or reason is not None:
            raise RuntimeError(reason)
        root = os.geteuid() == 0
        # As root, pgbouncer drops to postgres (it will not run as root), which must still
        # read its config and auth file: a folder under /tmp, where anyone may pass, not
        # under a private TMPDIR. Its log is its stderr, a file this process opens.
        shared_tmp = "/tmp" if root else None  # noqa: S108 - see above
        self.dir = Path(tempfile.mkdtemp(prefix="publisher-pgbouncer-", dir=shared_tmp))
        self.dir.chmod(0o755)
        user = _os_user()
        # Trust auth still wants each user listed; the server's trust auth does the rest.
        users = sorted({user, self.server_user or user})
        (self.dir / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
        (self.dir / "pgbouncer.ini").write_text(self._config(user))
        command = [exe, *(["-u", "postgres"] if root else []), str(self.dir / "pgbouncer.ini")]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"pgbouncer exited with {self.proc.returncode}:\n{self.logs()}"
                )
            try:
                with self.admin() as conn:
                    conn.execute("SHOW VERSION")
            except psycopg.OperationalError:
                return False  # not listening yet
            return True

        try:
            wait_until(up, 15, what="pgbouncer")
        except BaseException:
            self.stop()  # nothing left listening, nothing left on disk
            raise
        return self

    def repoint(self, port: int) -> None:
        """Pool the server on `port` from now on (RELOAD): the server connections it holds
        close, and every later one logs in there. A port nothing listens on is the server
        gone, as during a restart, while this pooler and its clients carry on."""
        assert self.dir is not None
        self.server_port = port
        (self.dir / "pgbouncer.ini").write_text(self._config(_os_user()))
        with self.admin() as conn:
            conn.execute("RELOAD")

    def admin(self) -> psycopg.Connection[Any]:
        """A connection to pgbouncer's admin console (SHOW POOLS, SHOW CLIENTS, ...)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname="pgbouncer",
            user=_os_user(),
            autocommit=True,
            connect_timeout=2,
            # The console speaks only the simple query protocol.
            cursor_factory=psycopg.ClientCursor,
            prepare_threshold=None,
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """One of the console's SHOW tables (POOLS, CLIENTS, SERVERS...), as dicts."""
        with self.admin() as conn, conn.cursor() as cursor:
            cursor.execute(f"SHOW {what}")
            names = [c.name for c in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def logs(self, tail: int = 40) -> str:
        if self.dir is None or not self.log.exists():
            return "(no pgbouncer log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-tail:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _os_user() -> str:
    """This process's user name: the pooler's admin and, by default, its client."""
    return pwd.getpwuid(os.getuid()).pw_name
