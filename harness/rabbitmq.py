"""A RabbitMQ node of the test's own, so a test can restart it, wipe it or kill it without
touching the machine's shared node on 5672: its own node name, ports, data and log folders,
configuration and Erlang cookie, all in one folder. A stack runs its roles on one with
`Stack(broker="rabbitmq")` (harness/stack.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import amqp

from harness.stack import free_port, wait_until

if TYPE_CHECKING:
    from harness.stack import Stack

# Debian's /usr/sbin/rabbitmq-server switches to the `rabbitmq` user, who cannot write a
# folder of root's; the scripts it wraps run as whoever calls them.
_DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
# RabbitMQ's built-in user, allowed from loopback only: this node listens on nothing else.
GUEST = "guest"


def _script(name: str) -> str | None:
    own = _DEBIAN_SCRIPTS / name
    if own.exists():
        return str(own)
    return shutil.which(name)


def unavailable() -> str | None:
    """Why a private node cannot run here, or None if it can."""
    if _script("rabbitmq-server") is None or _script("rabbitmqctl") is None:
        return "rabbitmq-server is not installed (Debian: apt install rabbitmq-server)"
    return None


class PrivateRabbitMQ:
    """A rabbitmq-server on free ports with its data in `folder`; guest/guest on loopback."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.dist_port = free_port()
        self.nodename = f"publisher-test-{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.home = folder / "home"
        self.data = folder / "mnesia"
        self.logs = folder / "log"
        for path in (self.home, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # consumer_timeout is left at this version's default: what the docs state is
            # what the tests run against (RabbitMQ.consumer_timeout_ms reads it).
            "log.console = false\n"
            "log.file.level = info\n"
        )
        # No plugins: the management plugin's listener on 15672 would clash with the
        # machine's node, and nothing here needs it.
        (folder / "enabled_plugins").write_text("[].\n")
        # An empty env file, so the machine's /etc/rabbitmq/rabbitmq-env.conf (its NODENAME)
        # is not read.
        (folder / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://{GUEST}:{GUEST}@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        """The environment of the node and of every rabbitmqctl call aimed at it."""
        env = dict(os.environ)
        env.update(
            # Erlang makes $HOME/.erlang.cookie (mode 0400) when it is missing: a cookie of
            # this node's own, read by rabbitmqctl with the same HOME.
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.data),
            RABBITMQ_LOG_BASE=str(self.logs),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.folder / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.folder / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def start(self, timeout: float = 90) -> None:
        script = _script("rabbitmq-server")
        assert script is not None, unavailable()
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [script],
            cwd=self.folder,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def accepting() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"rabbitmq-server exited:\n{self.server_log()}")
            try:
                conn = amqp.Connection(
                    f"127.0.0.1:{self.port}", userid=GUEST, password=GUEST, connect_timeout=2
                )
                conn.connect()
            except Exception:  # refused, reset, still booting: not up yet
                return False
            conn.close()
            return True

        wait_until(accepting, timeout, interval=0.25, what="rabbitmq-server")

    def server_log(self, tail: int = 40) -> str:
        lines: list[str] = []
        for path in [*sorted(self.logs.glob("*.log")), self.folder / "server.log"]:
            if path.exists():
                lines += [
                    f"--- {path.name}",
                    *path.read_text(errors="replace").splitlines()[-tail:],
                ]
        return "\n".join(lines)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """`rabbitmqctl -n NODE ARGS`'s output."""
        script = _script("rabbitmqctl")
        assert script is not None, unavailable()
        done = subprocess.run(
            [script, "-n", self.nodename, "-q", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def queues(self) -> dict[str, dict[str, str]]:
        """Every queue: name -> {type, messages, messages_unacknowledged}."""
        out = self.ctl(
            "list_queues",
            "name",
            "type",
            "messages",
            "messages_unacknowledged",
            "--no-table-headers",
        )
        rows = (line.split("\t") for line in out.splitlines() if line.strip())
        return {
            r[0]: {"type": r[1], "messages": r[2], "messages_unacknowledged": r[3]}
            for r in rows
            if len(r) == 4
        }

    def consumer_timeout_ms(self) -> int | None:
        """The node's effective consumer_timeout (None: none)."""
        out = self.ctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
        # {ok,1800000} or undefined
        if not out.startswith("{ok,"):
            return None
        return int(out.removeprefix("{ok,").removesuffix("}"))

    def stop(self) -> None:
        """A clean shutdown: quorum queues keep their messages on disk."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=60)
            self.proc.wait(timeout=60)
        except (subprocess.SubprocessError, OSError):
            self.kill()

    def restart(self) -> None:
        """Stopped and started again on the same data: queues and their messages are kept."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: what RabbitMQ had not written is gone; what it had is on disk."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wipe(self) -> None:
        """Killed, its data deleted: every queue, exchange and message is gone."""
        self.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def restart_empty(self) -> None:
        """Every queued, delayed and unacked message lost, as with a new broker."""
        self.wipe()
        self.start()


def attach(stack: Stack) -> PrivateRabbitMQ:
    """Start a private node in the stack's folder and point the stack's roles at it."""
    node = PrivateRabbitMQ(stack.logdir / "rabbitmq")
    node.start()
    stack.env_overrides["BROKER_URL"] = node.url
    return node
