"""Fixtures of the deployment tests: the wheel, the rendered kustomizations, and the
compose roles run from the installed wheel against a throwaway database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.deploy.helpers import (
    DEPLOY,
    KUSTOMIZATIONS,
    PIP,
    ROOT,
    SETTINGS_ENV,
    Roles,
    _builder_copies,
    _copied,
    _free_port,
    build_context,
    compose,
    kustomize_in_python,
    kustomize_with_kubectl,
)


# tests/conftest.py's per-test database truncation and Redis flush are not wanted here: nothing
# here uses the test database, and the role processes below keep a broker connection open
# across tests.
@pytest.fixture(autouse=True)
def clean_db() -> None:
    return None


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    return None


# Package scope: made once for all of tests/deploy/, as when these tests were one module.
@pytest.fixture(scope="package")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage, without Docker: the context .dockerignore lets through, what the
    builder COPYs of it, built into a wheel (build tools come from the venv here)."""
    context = tmp_path_factory.mktemp("context")
    sources = _builder_copies()
    for rel in build_context():
        if _copied(rel, sources):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, context / rel)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [
            *PIP,
            "wheel",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("publisher-*.whl")
    return built


# Package scope: made once for all of tests/deploy/, as when these tests were one module.
@pytest.fixture(scope="package")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each kustomization, rendered by kubectl where it is installed."""
    render = kustomize_with_kubectl if shutil.which("kubectl") else kustomize_in_python
    return {name: render(DEPLOY / name) for name in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed on its own, as the runtime stage installs it (dependencies come
    from this venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [*PIP, "install", "--no-index", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


@pytest.fixture(scope="module")
def deploy_database() -> Iterator[str]:
    """A throwaway database beside the suite's own (TEST_DATABASE_URL's, suffixed _deploy),
    missing at first so that `migrate` creates it, dropped after."""
    base = make_url(
        os.environ.get(
            "TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/publisher_test"
        )
    )
    url = base.set(database=f"{base.database}_deploy")

    def drop() -> None:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()

    drop()
    yield url.render_as_string(hide_password=False)
    drop()


@pytest.fixture(scope="module")
def roles(
    installed: Path, deploy_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Roles]:
    """The compose file's environment, with the addresses that exist here."""
    services = compose()["services"]
    workdir = tmp_path_factory.mktemp("roles")
    (workdir / "state").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTINGS_ENV and k not in {"PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(services["api"]["environment"])
    sandbox_port = _free_port()
    env.update(
        DATABASE_URL=deploy_database,
        REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14"),
        SANDBOX_URL=f"http://127.0.0.1:{sandbox_port}",
        STATE_DIR=str(workdir / "state"),
        PYTHONPATH=str(installed),
        PYTHONUNBUFFERED="1",
    )
    r = Roles(env=env, workdir=workdir, python=[sys.executable, "-m", "cli"])
    r.ports["sandbox"] = sandbox_port
    yield r
    for role in list(r.procs):
        if r.procs[role].poll() is None:
            r.stop(role)
