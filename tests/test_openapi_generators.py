"""Clients that two independent generators make of the served OpenAPI document work against
the running API: openapi-python-client's package, and openapi-typescript's types driving
openapi-fetch (type-checked by tsc in strict mode, then run by node). Each runs the same short
flow: upload, schedule, read, list, cancel without a body, and parses error answers.

The TypeScript tools are pinned by tests/openapi_generators/package-lock.json and installed
with `npm ci` by scripts/ensure-test-tools (which `make pytest` runs)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from harness.stack import ROOT, Stack
from tests.factories import TenantFixture

pytestmark = pytest.mark.integration

TOOLS = ROOT / "tests" / "openapi_generators"
NODE_BIN = TOOLS / "node_modules" / ".bin"
UNKNOWN_POST = "sp_00000000-0000-4000-8000-000000000000"


def _run(argv: list[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    said = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"{argv[:2]} exited {done.returncode}:\n{said}"
    return done


@pytest.fixture(scope="module")
def served(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The document the running API serves, as a file."""
    r = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    assert r.status_code == 200
    path = tmp_path_factory.mktemp("served") / "openapi.json"
    path.write_bytes(r.content)
    return path


@pytest.fixture
def generated(served: Path, tmp_path: Path) -> Iterator[ModuleType]:
    """The package openapi-python-client generates, imported."""
    config = tmp_path / "config.yml"
    # No formatter run afterwards: nothing but this test reads the code.
    config.write_text("post_hooks: []\n")
    package = f"publisher_client_{uuid.uuid4().hex[:8]}"
    _run(
        [
            Path(sys.executable).parent / "openapi-python-client",
            "generate",
            "--path",
            served,
            "--output-path",
            tmp_path / package,
            "--meta",
            "none",
            "--config",
            config,
            # A warning is a piece of the document the generator could not use.
            "--fail-on-warning",
        ],
        cwd=tmp_path,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))


def _module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_a_client_generated_by_openapi_python_client(
    generated: ModuleType, stack: Stack, live_tenant: TenantFixture
) -> None:
    # Tags are the SDK's namespaces and operationIds its functions.
    models = _module(generated, "models")
    upload = _module(generated, "api.content.upload_content")
    schedule = _module(generated, "api.publishing.schedule_content")
    get_post = _module(generated, "api.publishing.get_scheduled_post")
    list_posts = _module(generated, "api.publishing.list_scheduled_posts")
    cancel = _module(generated, "api.publishing.cancel_scheduled_post")
    ready = _module(generated, "api.health.get_readiness")
    client = generated.AuthenticatedClient(base_url=stack.api_url, token=live_tenant.token)

    up = upload.sync_detailed(
        project_id=live_tenant.project_id,
        client=client,
        body=models.ContentUploadIn(
            caption="From the generated Python client",
            media=[models.MediaIn(url="https://cdn.example.com/clip.mp4")],
        ),
        idempotency_key=f"py-{uuid.uuid4()}",
    )
    assert up.status_code == 201, up.content
    container = up.parsed
    assert isinstance(container, models.ContainerOut)
    assert container.status == models.ContainerStatus.COMPLETED

    scheduled = schedule.sync_detailed(
        container_id=container.id,
        client=client,
        body=models.ScheduleIn(
            scheduled_for=datetime.now(UTC) + timedelta(hours=1),
            targets=[models.TargetIn(social_account_id=live_tenant.accounts["tiktok"])],
        ),
    )
    assert scheduled.status_code == 201, scheduled.content
    assert isinstance(scheduled.parsed, models.ScheduledPostsCreated)
    (post,) = scheduled.parsed.items
    assert post.status == models.PostStatus.QUEUED
    assert post.platform == models.Platform.TIKTOK
    assert isinstance(post.scheduled_for, datetime) and post.scheduled_for.tzinfo is not None

    read = get_post.sync(id=post.id, client=client)
    assert isinstance(read, models.ScheduledPostOut)
    assert read.scheduled_for == post.scheduled_for
    listed = list_posts.sync(
        project_id=live_tenant.project_id,
        client=client,
        status=[models.PostStatus.QUEUED],
        limit=10,
    )
    assert isinstance(listed, models.ScheduledPostList)
    assert post.id in [p.id for p in listed.items]

    # No body at all: the call that crashed on `Unset` before.
    canceled = cancel.sync_detailed(id=post.id, client=client)
    assert canceled.status_code == 200, canceled.content
    assert isinstance(canceled.parsed, models.CanceledOut)
    assert canceled.parsed.status == "canceled"
    assert isinstance(canceled.parsed.canceled_at, datetime)

    again = cancel.sync_detailed(
        id=post.id, client=client, body=models.CancelIn(reason="once more")
    )
    assert again.status_code == 409
    assert isinstance(again.parsed, models.ConflictErrorEnvelope)
    assert again.parsed.error.code == "CONFLICT"
    assert again.parsed.error.details.status == "canceled"
    assert again.parsed.error.request_id == again.headers["x-request-id"]
    missing = get_post.sync_detailed(id=UNKNOWN_POST, client=client)
    assert isinstance(missing.parsed, models.NotFoundErrorEnvelope)

    probe = ready.sync(client=generated.Client(base_url=stack.api_url))
    assert isinstance(probe, models.Readiness)
    assert probe.status == models.ReadinessStatus.OK


def test_types_generated_by_openapi_typescript_with_openapi_fetch(
    served: Path, stack: Stack, live_tenant: TenantFixture, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_BIN / "tsc").exists(), (
        "the TypeScript tools are missing: run scripts/ensure-test-tools (make pytest does)"
    )
    for name in ("flow.ts", "tsconfig.json", "package.json"):
        shutil.copy(TOOLS / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(TOOLS / "node_modules")
    _run([NODE_BIN / "openapi-typescript", served, "-o", tmp_path / "schema.ts"], cwd=tmp_path)
    # Strict type check of the flow against the generated types, then its JavaScript.
    _run([NODE_BIN / "tsc", "-p", "tsconfig.json"], cwd=tmp_path)
    done = _run(
        [node, "dist/flow.js"],
        cwd=tmp_path,
        API_URL=stack.api_url,
        API_KEY=live_tenant.token,
        PROJECT_ID=live_tenant.project_id,
        SOCIAL_ACCOUNT_ID=live_tenant.accounts["instagram"],
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["listed"] >= 1
    assert seen["conflict"]["status"] == 409
    assert seen["conflict"]["code"] == "CONFLICT"
    assert seen["conflict"]["detailsStatus"] == "canceled"
    assert seen["conflict"]["requestId"]
    # What the flow did, as the API tells it.
    r = httpx.get(
        f"{stack.api_url}/v1/scheduled-posts/{seen['post']}",
        headers=live_tenant.headers,
        timeout=30,
    )
    assert r.status_code == 200
    assert r.json()["status"] == "canceled"
    assert r.json()["canceledAt"] == seen["canceledAt"]
    assert r.json()["containerId"] == seen["container"]
