"""What operators see: Prometheus metrics after a real publish and cancel, JSON log lines
that follow one post without leaking a key, and Flower showing the task with its post id."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.stack import Stack, wait_until
from tests.factories import TenantFixture, at, schedule, upload

pytestmark = pytest.mark.integration


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Metric samples summed over processes (worker nodes each serve their own page)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _wait_status(api: httpx.Client, tenant: TenantFixture, post_id: str, status: str) -> None:
    wait_until(
        lambda: (
            api.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers).json()["status"]
            == status
        ),
        20,
        what=f"{post_id} {status}",
    )


def test_metrics_after_a_publish_and_cancels(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    api_before = _samples(stack.api_metrics())
    workers_before = _samples(stack.worker_metrics())

    cid = upload(api, live_tenant)
    (published,) = schedule(api, live_tenant, cid, at(1))
    _wait_status(api, live_tenant, published["id"], "published")
    (queued,) = schedule(api, live_tenant, cid, at(600))
    assert (
        api.delete(f"/v1/scheduled-posts/{queued['id']}", headers=live_tenant.headers).status_code
        == 200
    )
    assert (
        api.delete(
            f"/v1/scheduled-posts/{published['id']}", headers=live_tenant.headers
        ).status_code
        == 409
    )

    api_after = _samples(stack.api_metrics())
    workers_after = _samples(stack.worker_metrics())

    def api_delta(name: str, **labels: str) -> float:
        return _value(api_after, name, **labels) - _value(api_before, name, **labels)

    def worker_delta(name: str, **labels: str) -> float:
        return _value(workers_after, name, **labels) - _value(workers_before, name, **labels)

    assert api_delta("publisher_cancel_total", outcome="won") == 1
    assert api_delta("publisher_cancel_total", outcome="terminal") == 1
    assert api_delta("publisher_cancel_total", outcome="lost_to_upload") == 0
    route = "/v1/scheduled-posts/{id}"
    assert (
        api_delta("publisher_http_requests_total", route=route, method="DELETE", status="200") == 1
    )
    assert (
        api_delta("publisher_http_requests_total", route=route, method="DELETE", status="409") == 1
    )
    assert (
        api_delta("publisher_http_request_duration_seconds_count", route=route, method="DELETE")
        == 2
    )
    assert worker_delta("publisher_publish_total", outcome="published") == 1
    assert worker_delta("publisher_dispatch_lag_seconds_count") == 1
    # Posts by status come from PostgreSQL itself.
    assert _value(api_after, "publisher_posts", status="published") >= 1
    assert ("publisher_expired_leases", frozenset()) in api_after


def test_a_cancel_log_line_carries_the_post_id_and_no_key(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    cid = upload(api, live_tenant)
    (post,) = schedule(api, live_tenant, cid, at(600))
    r = api.request(
        "DELETE",
        f"/v1/scheduled-posts/{post['id']}",
        headers={**live_tenant.headers, "X-Request-Id": "req-log-check-1"},
        json={"reason": "hold"},
    )
    assert r.status_code == 200

    def cancel_line() -> dict[str, object] | None:
        for line in (stack.logdir / "api.log").read_text().splitlines():
            if post["id"] in line and "->canceled" in line:
                entry: dict[str, object] = json.loads(line)
                return entry
        return None

    entry = wait_until(cancel_line, 10, what="cancel log line")
    assert entry["postId"] == post["id"]
    assert entry["transition"] == "queued->canceled"
    assert entry["requestId"] == "req-log-check-1"
    assert entry["role"] == "api"
    secret = live_tenant.token.rsplit("_", 1)[1]
    for path in stack.logdir.glob("*.log"):
        text = path.read_text(errors="replace")
        assert secret not in text, f"the key's secret leaked into {path.name}"
        assert live_tenant.token not in text


def test_flower_shows_the_publish_task_with_its_post_id(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    url = stack.flower_url or stack.start_flower("ops", "s3cret-flower")
    assert httpx.get(f"{url}/api/tasks").status_code == 401  # never without auth
    auth = ("ops", "s3cret-flower")
    cid = upload(api, live_tenant)
    (post,) = schedule(api, live_tenant, cid, at(1))
    _wait_status(api, live_tenant, post["id"], "published")

    def task() -> dict[str, object] | None:
        tasks = httpx.get(f"{url}/api/tasks", auth=auth, params={"limit": 1000}).json()
        for t in tasks.values():
            if t.get("name") == "publishing.publish" and post["id"] in str(t.get("args")):
                found: dict[str, object] = t
                return found if t.get("state") == "SUCCESS" else None
        return None

    found = wait_until(task, 20, what="task in flower")
    assert found["result"] == "'published'"
    names = {t.get("name") for t in httpx.get(f"{url}/api/tasks", auth=auth).json().values()}
    assert "publishing.dispatch_due" not in names  # the ticks stay out of operators' way

    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by scripts/ensure-test-tools"
    shot = Path(tempfile.mkdtemp()) / "flower-task.png"
    page = f"http://ops:s3cret-flower@{url.removeprefix('http://')}/task/{found['uuid']}"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={shot.parent / 'profile'}",
            "--window-size=1400,900",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            page,
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    # A rendered page, not an error screen: docs/img/flower-task.png is one such capture.
    assert shot.stat().st_size > 30_000
