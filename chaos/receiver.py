"""A webhook receiver for tests and chaos runs: a real HTTP server that verifies each
delivery's signature with its own code (not the product's), answers as told (fail for a
while, fail at a seeded rate, with a status, or hang), and keeps every request it got."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 300


def verify(secrets: list[str], header: str, body: bytes, now: float | None = None) -> bool:
    """API.md's rule, written from the document: `t=<unix>,v1=<hex>[,v1=<hex>]`, HMAC-SHA256
    over `<t>.<raw body>`; valid if any v1 matches any of our secrets and `t` is within
    5 minutes of now."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k == "t"]
    signatures = [v for k, v in fields if k == "v1"]
    if len(stamps) != 1 or not signatures or not stamps[0].isdigit():
        return False
    if abs((now or time.time()) - int(stamps[0])) > TOLERANCE_S:
        return False
    message = stamps[0].encode() + b"." + body
    expected = [hmac.new(s.encode(), message, hashlib.sha256).hexdigest() for s in secrets]
    return any(hmac.compare_digest(e, got) for e in expected for got in signatures)


@dataclass
class Received:
    event_id: str
    body: dict[str, Any]
    verified: bool
    answered: int
    at: float


@dataclass
class Receiver:
    """What the server does and what it saw. `secrets`: what it verifies with. Each event id
    is answered `fail_status` its first `fail_first` times, then `ok_status`."""

    secrets: list[str] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 503
    ok_status: int = 200
    hang_s: float = 0.0
    # And each attempt after those fails with this probability, drawn per (seed, event id,
    # attempt) so a run replays.
    fail_rate: float = 0.0
    seed: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, event_id: str, body: bytes, signature: str) -> int:
        with self.lock:
            seen = sum(r.event_id == event_id for r in self.received)
            draw = random.Random(f"{self.seed}:{event_id}:{seen}").random()
            failing = seen < self.fail_first or draw < self.fail_rate
            status = self.fail_status if failing else self.ok_status
            verified = verify(self.secrets, signature, body)
            self.received.append(
                Received(event_id, json.loads(body), verified, status, time.time())
            )
        return status

    def delivered(self) -> dict[str, Received]:
        """Event id -> its first 2xx delivery: what a receiver that dedupes keeps."""
        with self.lock:
            out: dict[str, Received] = {}
            for r in self.received:
                if 200 <= r.answered < 300 and r.event_id not in out:
                    out[r.event_id] = r
            return out


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    """The receiver on a free loopback port, for the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.hang_s:
                time.sleep(receiver.hang_s)
            status = receiver.answer(
                self.headers.get("X-Layers-Event-Id", ""),
                body,
                self.headers.get("X-Layers-Signature", ""),
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
