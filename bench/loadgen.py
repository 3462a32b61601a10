"""Load generator for DELETE /v1/scheduled-posts/:id, run as its own process, one DELETE per
post id of --ids. Writes one JSON document to --out.

    python -m bench.loadgen --url URL --token KEY --ids ids.json --rate 50 --out out.json
        Open loop: request i is due at start + i/rate whether or not earlier ones have
        answered, and its latency is measured from that due instant: a slow server cannot
        slow the generator down and hide its own queueing (coordinated omission).
    python -m bench.loadgen --url URL --token KEY --ids ids.json --connections 16 \
            --warmup 5 --duration 20 --out out.json
        Closed loop, to saturate: each of --connections keep-alive HTTP/1.1 connections
        sends the next DELETE as soon as its last one answered, for --warmup then --duration
        seconds (or until the ids run out). Every request's send and answer times go to
        --out; which count as measured is the reader's choice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

REASON = "benchmark: cancel latency under load"
TIMEOUT_S = 30.0


async def _fire(url: str, token: str, ids: list[str], rate: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        # Open a few connections before the clock starts; the first handshake is not a cancel.
        await asyncio.gather(*(client.get("/healthz") for _ in range(min(16, len(ids)))))
        loop = asyncio.get_running_loop()
        failures: dict[str, int] = {}
        start = loop.time() + 0.2

        async def one(i: int, post_id: str) -> tuple[float, float, float, int]:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent = loop.time()
            try:
                response = await client.request(
                    "DELETE", f"/v1/scheduled-posts/{post_id}", json={"reason": REASON}
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                status = 0
            done = loop.time()
            return due - start, (done - due) * 1000, (done - sent) * 1000, status

        rows = await asyncio.gather(*(one(i, p) for i, p in enumerate(ids)))
        elapsed = loop.time() - start
    return {
        "rate": rate,
        "elapsed_s": elapsed,
        "offset_s": [r[0] for r in rows],
        "latency_ms": [r[1] for r in rows],
        "service_ms": [r[2] for r in rows],
        "status": [r[3] for r in rows],
        "failures": failures,
    }


class _Connection:
    """One keep-alive HTTP/1.1 connection, each request written and its answer read by hand:
    a closed loop saturating a server on the same cores must cost far less CPU a request than
    the server does, and an HTTP client library costs about as much as the server."""

    def __init__(self, url: str, token: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.headers = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        """The answer's status; raises on a broken connection (the next request reconnects)."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"{method} {path} HTTP/1.1\r\n{self.headers}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
            lines = answer.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _saturate(
    url: str, token: str, ids: list[str], connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    pool = [_Connection(url, token) for _ in range(connections)]
    # Every connection open before the clock starts.
    await asyncio.gather(*(c.request("GET", "/healthz") for c in pool))
    loop = asyncio.get_running_loop()
    failures: dict[str, int] = {}
    rows: list[tuple[float, float, int]] = []
    todo = iter(ids)  # shared by the connections: each post is canceled once
    body = json.dumps({"reason": REASON}).encode()
    start = loop.time()
    end = start + warmup + duration
    cpu = time.process_time()

    async def run(conn: _Connection) -> None:
        for post_id in todo:
            sent = loop.time()
            if sent >= end:
                return
            try:
                status = await conn.request("DELETE", f"/v1/scheduled-posts/{post_id}", body)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, KeyError) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                status = 0
            rows.append((sent - start, loop.time() - start, status))

    await asyncio.gather(*(run(c) for c in pool))
    cpu = time.process_time() - cpu
    exhausted = loop.time() < end
    for conn in pool:
        conn.close()
    return {
        "connections": connections,
        "warmup_s": warmup,
        "duration_s": duration,
        "exhausted": exhausted,
        "sent_s": [r[0] for r in rows],
        "done_s": [r[1] for r in rows],
        "status": [r[2] for r in rows],
        "failures": failures,
        "client_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ids", type=Path, required=True, help="JSON list of post ids")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--connections", type=int, help="closed loop: connections in use")
    parser.add_argument("--warmup", type=float, default=0.0, help="closed loop: seconds")
    parser.add_argument("--duration", type=float, default=10.0, help="closed loop: seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ids: list[str] = json.loads(args.ids.read_text())
    if args.rate is not None:
        result = asyncio.run(_fire(args.url, args.token, ids, args.rate))
    else:
        result = asyncio.run(
            _saturate(args.url, args.token, ids, args.connections, args.warmup, args.duration)
        )
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
