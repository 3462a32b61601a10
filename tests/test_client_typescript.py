"""The TypeScript client (clients/typescript) against the real stack: its live tests, run by
Node's own test runner, with the API's URL, keys, project and accounts in the environment,
and a webhook receiver served from here. And the served OpenAPI document checked against the
client's table of operations."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from harness.stack import ROOT, Stack
from tests.factories import TenantFixture

pytestmark = pytest.mark.integration

CLIENT = ROOT / "clients" / "typescript"
LIVE = CLIENT / "dist" / "test" / "live"
NODE_TIMEOUT_S = 420


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def built() -> Path:
    """The client compiled (its tests too), installed first if `make` has not done it."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js 20 (node, npm) is needed for the TypeScript client's tests")
    if not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        _run(["npm", "ci", "--no-audit", "--no-fund"])
    _run(["npm", "run", "--silent", "build"])
    return LIVE


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command,
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


def _node_test(files: list[Path], **env: str) -> None:
    """`node --test` on these compiled tests, one file at a time (they share one tenant);
    fails with node's whole report, and prints it otherwise (`pytest -rP` shows it)."""
    report = _run(
        [
            "node",
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            *[str(f) for f in files],
        ],
        env={**os.environ, **env},
    )
    print(report)


@contextmanager
def _receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A webhook receiver on a free loopback port: POST /hook answers 200 and keeps the raw
    body and the signature; GET /received lists what came, for the node side to verify."""
    received: list[dict[str, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                received.append(
                    {
                        "eventId": self.headers.get("X-Layers-Event-Id", ""),
                        "signature": self.headers.get("X-Layers-Signature", ""),
                        "body": base64.b64encode(body).decode(),
                    }
                )
            self._answer(b"")

        def do_GET(self) -> None:
            with lock:
                self._answer(json.dumps(received).encode())

        def _answer(self, payload: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


# `api`: the sandbox starts empty and fault-free, every failpoint disarmed.
@pytest.mark.usefixtures("api")
def test_the_typescript_client_against_the_running_stack(
    built: Path, stack: Stack, live_tenant: TenantFixture
) -> None:
    """Upload, schedule, publish now, cancel inside the window and after publish, the
    approval gate, a real 429 retried, webhooks verified: test/live/*.test.ts."""
    with _receiver() as (receiver_url, received):
        _node_test(
            sorted(f for f in built.glob("*.test.js") if f.name != "openapi.test.js"),
            LAYERS_BASE_URL=stack.api_url,
            LAYERS_API_KEY=live_tenant.token,
            LAYERS_PROJECT_ID=live_tenant.project_id,
            LAYERS_TIKTOK_ACCOUNT_ID=live_tenant.accounts["tiktok"],
            LAYERS_INSTAGRAM_ACCOUNT_ID=live_tenant.accounts["instagram"],
            LAYERS_READ_ONLY_KEY=_token(live_tenant.key_with("publish:read")),
            # A limit set on a key is taken as written, whatever RATE_LIMIT_MULTIPLIER lifts
            # the tiers to: 60 reads a minute, so a burst of 60 meets a real 429.
            LAYERS_LIMITED_KEY=_token(live_tenant.key_with("*", rate_limit_read=60)),
            LAYERS_RECEIVER_URL=receiver_url,
        )
    # Two pings and a replay at least reached the receiver, and node verified each.
    assert len(received) >= 3


def test_every_served_operation_has_a_client_method(built: Path, tmp_path: Path) -> None:
    """The document the API serves, against the client's table of operations, both ways."""
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(create_app().openapi()))
    _node_test([built / "openapi.test.js"], LAYERS_OPENAPI_PATH=str(document))
