"""`make run` (`publisher run`): "publisher is up" is printed once every role answers, not
before; a new user's first Instagram and TikTok posts go out on it; Ctrl-C (SIGINT) stops
them all."""

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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.stack import ROOT, free_port, wait_until
from tests.conftest import database_of_its_own

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


@pytest.fixture
def own_database(database: str) -> Iterator[str]:
    """The run's database, not the session's: the session stack's beats compete for the
    same ticks' lease there, and its dispatcher would send this run's posts."""
    with database_of_its_own(database, "run") as own:
        yield own


def test_run_says_up_only_once_every_role_answers(own_database: str) -> None:
    roles = ("api", "flower", "worker", "api_metrics", "sandbox", "instagram", "tiktok")
    ports = {role: free_port() for role in roles}
    state = Path(tempfile.mkdtemp(prefix="publisher-run-"))
    env = {
        **os.environ,
        "DATABASE_URL": own_database,
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
        _a_new_users_first_posts(env, f"http://127.0.0.1:{ports['api']}")
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


def _a_new_users_first_posts(env: dict[str, str], api: str) -> None:
    """The README's first steps on the running stack: `tenants create` binds the Instagram
    and TikTok accounts to the emulators `make run` started; an image scheduled on Instagram
    goes out there, and on TikTok a video goes `publishing` -> `published` through the
    emulator's asynchronous processing while a draft ends `draft` in the creator's inbox."""
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
    account = {a["platform"]: a["id"] for a in tenant["socialAccounts"]}
    when = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:

        def scheduled(caption: str, media: str, targets: list[dict[str, str]]) -> list[str]:
            content = client.post(
                f"/v1/projects/{tenant['projectId']}/content/upload",
                json={"caption": caption, "media": [{"url": f"https://cdn.example.com/{media}"}]},
            ).json()
            r = client.post(
                f"/v1/content/{content['id']}/schedule",
                json={"scheduledFor": when, "targets": targets},
            )
            assert r.status_code == 201, r.text
            return [p["id"] for p in r.json()["items"]]

        [image] = scheduled("first run", "a.jpg", [{"socialAccountId": account["instagram"]}])
        [video] = scheduled("first tiktok", "a.mp4", [{"socialAccountId": account["tiktok"]}])
        [draft] = scheduled(
            "a draft", "b.mp4", [{"socialAccountId": account["tiktok"], "mode": "draft"}]
        )
        seen: dict[str, set[str]] = {pid: set() for pid in (image, video, draft)}

        def final() -> dict[str, dict[str, Any]] | None:
            rows = {pid: client.get(f"/v1/scheduled-posts/{pid}").json() for pid in seen}
            for pid, row in rows.items():
                seen[pid].add(row["status"])
            done = all(row["status"] in ("published", "draft", "failed") for row in rows.values())
            return rows if done else None

        rows = wait_until(final, 90, interval=0.2, what="the first posts to go out")
    assert {pid: row["status"] for pid, row in rows.items()} == {
        image: "published",
        video: "published",
        draft: "draft",
    }
    # TikTok completed the video on its own, seen from outside while it did.
    assert "publishing" in seen[video]
    [entry] = httpx.get(f"{env['INSTAGRAM_API_URL']}/ledger").json()["posts"]
    assert (entry["caption"], entry["externalId"]) == ("first run", rows[image]["externalId"])
    tiktok = {
        e["containerId"]: e for e in httpx.get(f"{env['TIKTOK_API_URL']}/ledger").json()["posts"]
    }
    assert len(tiktok) == 2
    assert [e["inbox"] for e in tiktok.values()].count(True) == 1
    public = next(e for e in tiktok.values() if not e["inbox"])
    assert (public["caption"], public["externalId"]) == ("first tiktok", rows[video]["externalId"])
