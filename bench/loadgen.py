"""Open-loop load generator for DELETE /v1/scheduled-posts/:id, run as its own process.

Request i is due at start + i/rate whether or not earlier ones have answered, and its
latency is measured from that due instant: a slow server cannot slow the generator down and
hide its own queueing (coordinated omission). Writes one JSON document to --out.

    python -m bench.loadgen --url URL --token KEY --ids ids.json --rate 50 --out out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

REASON = "benchmark: cancel latency under load"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ids", type=Path, required=True, help="JSON list of post ids")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ids: list[str] = json.loads(args.ids.read_text())
    result = asyncio.run(_fire(args.url, args.token, ids, args.rate))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
