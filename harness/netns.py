"""A network namespace for one test host: a veth pair to this machine, a relay per service,
and partitions cut and healed per service.

The machine's PostgreSQL, the stack's redis-server and sandbox listen on 127.0.0.1, which a
namespace cannot reach. Each service gets an address of its own on the host end of the veth,
where a relay (a plain TCP forwarder in this process) passes connections on to the service's
loopback port. A process in the namespace reaches the services only through those addresses,
so `cut("redis")` partitions it from Redis alone: two policy rules inside the namespace
blackhole every packet to and from that one address. Both directions are dropped, and
silently for a connection already open (its packets wait in TCP's retransmissions and flow
again after `heal`), as a partition between two hosts looks to the product; a new connection
fails at once (the kernel refuses a route it knows to be a blackhole).

Nothing changes on the host's own routes or the services' configuration, and the product is
not told: it only sees its URLs point at other addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

# The services a worker talks to, each with its own address on the host end of the veth.
TARGETS: Final = ("postgres", "redis", "platform")
# Names of what this module creates start with this, so leftovers are easy to find.
PREFIX: Final = "pubpt"
# Policy rules for the cuts go before the main table, and the local table moves behind
# them: otherwise a packet for the namespace's own address is accepted before any rule.
_RULE_BASE: Final = 100
_LOCAL_PREF: Final = 32765


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}-probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def leftovers() -> list[str]:
    """Namespaces this module made that still exist (none once every Namespace is closed)."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no interface of this machine uses yet."""
    used = _ip("-4", "addr", "show").stdout
    start = os.getpid() % 250
    for i in range(250):
        net = ipaddress.IPv4Network(f"10.213.{(start + i) % 250}.0/24")
        if f" 10.213.{(start + i) % 250}." not in used:
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16")


class _Relay:
    """TCP from (address, port) to 127.0.0.1:target_port, on an event loop of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, target_port: int) -> None:
        self.loop, self.address, self.target_port = loop, address, target_port
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            # Open connections end with the loop; new ones are refused from here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


@dataclass
class Namespace:
    """One namespace with its veth and relays; `open()` makes it, `close()` removes it all.

    `targets` maps each service (TARGETS) to its loopback port on this machine."""

    targets: dict[str, int]
    name: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}x{os.urandom(2).hex()}")
    subnet: ipaddress.IPv4Network = field(default_factory=_free_subnet)
    relays: dict[str, _Relay] = field(default_factory=dict)
    cuts: set[str] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def host_veth(self) -> str:
        return f"{self.name[-9:]}h"

    @property
    def ns_veth(self) -> str:
        return f"{self.name[-9:]}n"

    @property
    def inside(self) -> str:
        """The namespace's own address."""
        return str(self.subnet[100])

    def address(self, target: str) -> str:
        """The host-side address through which the namespace reaches `target`."""
        return str(self.subnet[1 + TARGETS.index(target)])

    def port(self, target: str) -> int:
        """The relay's port for `target` at `address(target)`."""
        return self.relays[target].port

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def open(self) -> Namespace:
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def _make(self) -> None:
        ns, host, inner = self.name, self.host_veth, self.ns_veth
        _ip("netns", "add", ns)
        _ip("link", "add", host, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        for target in TARGETS:
            _ip("addr", "add", f"{self.address(target)}/{self.subnet.prefixlen}", "dev", host)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "addr", "add", f"{self.inside}/{self.subnet.prefixlen}", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "rule", "add", "pref", str(_LOCAL_PREF), "lookup", "local")
        _ip("-n", ns, "rule", "del", "pref", "0")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        for target, port in self.targets.items():
            relay = _Relay(self._loop, self.address(target), port)
            asyncio.run_coroutine_threadsafe(relay.start(), self._loop).result(10)
            self.relays[target] = relay

    def _rules(self, target: str) -> list[list[str]]:
        pref = _RULE_BASE + 2 * TARGETS.index(target)
        address = self.address(target)
        return [
            ["pref", str(pref), "to", address, "blackhole"],
            ["pref", str(pref + 1), "from", address, "blackhole"],
        ]

    def cut(self, target: str) -> None:
        """Partition the namespace from `target`: nothing passes either way until heal."""
        if target in self.cuts:
            return
        for rule in self._rules(target):
            _ip("-n", self.name, "rule", "add", *rule)
        self.cuts.add(target)

    def heal(self, target: str) -> None:
        if target not in self.cuts:
            return
        for rule in self._rules(target):
            _ip("-n", self.name, "rule", "del", *rule)
        self.cuts.discard(target)

    @contextlib.contextmanager
    def partitioned(self, target: str) -> Iterator[None]:
        """Cut from `target` for the block; healed however it ends."""
        self.cut(target)
        try:
            yield
        finally:
            self.heal(target)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return subprocess.run(
            [*self.prefix(), *argv], check=False, capture_output=True, text=True, timeout=timeout
        )

    def close(self) -> None:
        """Remove the namespace (its veth end, and so the pair, goes with it) and the relays;
        safe to call on a half-made one, and more than once."""
        if self._loop is not None:
            loop = self._loop
            for relay in self.relays.values():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(relay.stop(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None
        self.relays.clear()
        _ip("netns", "del", self.name, check=False)
        # The pair normally goes with its namespace end; a failure before the move leaves it.
        _ip("link", "del", self.host_veth, check=False)
        self.cuts.clear()


def reachable_urls(ns: Namespace, env: dict[str, str], urls: Sequence[str]) -> dict[str, str]:
    """`env`'s variables named in `urls`, rewritten to go through the namespace's relays:
    127.0.0.1:<a relayed port> becomes <the service's address>:<its relay's port>."""
    out = {}
    for var in urls:
        value = env[var]
        for target, relay in ns.relays.items():
            value = value.replace(
                f"127.0.0.1:{relay.target_port}", f"{ns.address(target)}:{relay.port}"
            )
        out[var] = value
    return out
