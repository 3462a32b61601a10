"""`make run` (`publisher run`): "publisher is up" is printed once every role answers, not
before; a new user's first Instagram post goes out on it; Ctrl-C (SIGINT) stops them all."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from harness.stack import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The process's output up to and including the line holding `marker`."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    out = ""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} (exit {proc.poll()}):\n{out}")
        if selector.select(timeout=left):
            line = proc.stdout.readline()
            out += line
    return out


def test_run_says_up_only_once_every_role_answers(database: str) -> None:
    roles = ("api", "flower", "worker", "api_metrics", "sandbox", "instagram", "tiktok")
    ports = {role: free_port() for role in roles}
    state = Path(tempfile.mkdtemp(prefix="publisher-run-"))
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "SANDBOX_URL": f"http://127.0.0.1:{ports['sandbox']}",
        "INSTAGRAM_API_URL": f"http://127.0.0.1:{ports['instagram']}",
        "TIKTOK_API_URL": f"http://127.0.0.1:{ports['tiktok']}",
        "STATE_DIR": str(state),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--port",
            str(ports["api"]),
            "--flower-port",
            str(ports["flower"]),
            "--worker-metrics-port",
            str(ports["worker"]),
            "--api-metrics-port",
            str(ports["api_metrics"]),
            "--concurrency",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out = _read_until(proc, "Ctrl-C stops everything", timeout=180)
        assert "publisher is up" in out
        # The moment it says so, each role serves; no retry, no wait.
        assert httpx.get(f"http://127.0.0.1:{ports['api']}/readyz").status_code == 200, out
        assert httpx.get(f"{env['SANDBOX_URL']}/healthz").status_code == 200
        assert httpx.get(f"{env['INSTAGRAM_API_URL']}/healthz").status_code == 200
        assert f"instagram {env['INSTAGRAM_API_URL']}" in out
        assert httpx.get(f"{env['TIKTOK_API_URL']}/healthz").status_code == 200
        assert f"tiktok    {env['TIKTOK_API_URL']}" in out
        assert httpx.get(f"http://127.0.0.1:{ports['flower']}/healthcheck").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['worker']}/metrics").status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{ports['api_metrics']}/metrics")
        assert metrics.status_code == 200
        assert "publisher_posts" in metrics.text
        # ...and the public API port does not serve them.
        assert httpx.get(f"http://127.0.0.1:{ports['api']}/metrics").status_code == 404
        for listed in (str(ports["api"]), str(ports["api_metrics"]), str(ports["flower"])):
            assert listed in out
        _a_new_users_first_instagram_post(env, f"http://127.0.0.1:{ports['api']}")
    finally:
        # The parent stops its children; a terminal's Ctrl-C reaching them too is the same.
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(state, ignore_errors=True)
    assert code == 0


def _a_new_users_first_instagram_post(env: dict[str, str], api: str) -> None:
    """The README's first steps on the running stack: `tenants create` binds the Instagram
    account to the emulator `make run` started, and a post scheduled on it goes out there."""
    made = subprocess.run(
        [sys.executable, "-m", "cli", "tenants", "create", "--name", "First Run", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tenant = json.loads(made.stdout)
    headers = {"Authorization": f"Bearer {tenant['apiKey']}"}
    [account] = [a["id"] for a in tenant["socialAccounts"] if a["platform"] == "instagram"]
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        content = client.post(
            f"/v1/projects/{tenant['projectId']}/content/upload",
            json={"caption": "first run", "media": [{"url": "https://cdn.example.com/a.jpg"}]},
        ).json()
        when = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = client.post(
            f"/v1/content/{content['id']}/schedule",
            json={"scheduledFor": when, "targets": [{"socialAccountId": account}]},
        )
        assert r.status_code == 201, r.text
        post_id = r.json()["items"][0]["id"]
        post = wait_until(
            lambda: (
                (p := client.get(f"/v1/scheduled-posts/{post_id}").json())["status"] == "published"
                and p
            ),
            60,
            what="the Instagram post to go out",
        )
    [entry] = httpx.get(f"{env['INSTAGRAM_API_URL']}/ledger").json()["posts"]
    assert (entry["caption"], entry["externalId"]) == ("first run", post["externalId"])
