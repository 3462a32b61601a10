"""The image's entrypoint commands, as far as they run without Docker: the compose roles'
argv run from the installed wheel as plain processes against a throwaway database.

The tests share the module-scoped `roles` and run in order: migrate, start every role
and pass its health check, then stop them all with SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.deploy.helpers import (
    Roles,
    _free_port,
    _healthcheck_argv,
    _service_argv,
    _with_flags,
    compose,
)


def test_roles_run_from_the_installed_wheel(roles: Roles, installed: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import cli.main, shared.kit.migrate; print(cli.main.__file__)"],
        env=roles.env,
        cwd=roles.workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()).is_relative_to(installed)


def test_compose_migrate_creates_and_migrates(roles: Roles) -> None:
    argv = _service_argv(compose()["services"]["migrate"])
    first = roles.run(argv)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created and migrated" in first.stdout
    # Every `docker compose up` runs it again: a no-op that still exits 0.
    again = roles.run(argv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created" not in again.stdout


def test_compose_roles_start_and_pass_their_health_checks(roles: Roles) -> None:
    services = compose()["services"]
    for role in ("api", "flower"):
        roles.ports[role] = _free_port()
    roles.ports["metrics"] = _free_port()
    roles.ports["api_metrics"] = _free_port()
    local = {"host": "127.0.0.1"}
    roles.start(
        "sandbox",
        _with_flags(_service_argv(services["sandbox"]), **local, port=str(roles.ports["sandbox"])),
    )
    api_flags = {"port": str(roles.ports["api"]), "metrics_port": str(roles.ports["api_metrics"])}
    roles.start(
        "api",
        _with_flags(_service_argv(services["api"]), **local, metrics_host="127.0.0.1", **api_flags),
    )
    roles.start(
        "worker",
        _with_flags(
            _service_argv(services["worker"]),
            metrics_host="127.0.0.1",
            metrics_port=str(roles.ports["metrics"]),
        ),
    )
    roles.start("webhooks", _service_argv(services["webhooks"]))
    roles.start("control", _service_argv(services["control"]))
    roles.start("beat", _service_argv(services["beat"]))
    roles.start(
        "flower",
        _with_flags(_service_argv(services["flower"]), **local, port=str(roles.ports["flower"])),
    )

    def url(role: str, path: str) -> str:
        return f"http://127.0.0.1:{roles.ports[role]}{path}"

    roles.wait_for("sandbox", lambda: httpx.get(url("sandbox", "/healthz")).status_code == 200)
    code = _healthcheck_argv(services["sandbox"])[2].replace(":8900", f":{roles.ports['sandbox']}")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)

    roles.wait_for("api", lambda: httpx.get(url("api", "/readyz")).status_code == 200)
    health = _healthcheck_argv(services["api"])
    health = _with_flags(health, url=url("api", ""))
    result = roles.run(health, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert httpx.get(url("api_metrics", "/metrics")).status_code == 200
    assert httpx.get(url("api", "/metrics")).status_code == 404

    # The worker answers the compose health check by the node name it was started with.
    worker_log = roles.workdir / "worker.log"
    roles.wait_for("worker", lambda: b" ready." in worker_log.read_bytes(), timeout=60)
    health = _healthcheck_argv(services["worker"])
    roles.wait_for("worker", lambda: roles.run(health, timeout=30).returncode == 0)
    assert httpx.get(url("metrics", "/metrics")).status_code == 200

    # The webhook deliveries' worker, on its own queue, answers by its own node name.
    webhooks_log = roles.workdir / "webhooks.log"
    roles.wait_for("webhooks", lambda: b" ready." in webhooks_log.read_bytes(), timeout=60)
    assert b".> webhooks" in webhooks_log.read_bytes(), "it takes the webhooks queue"
    health = _healthcheck_argv(services["webhooks"])
    roles.wait_for("webhooks", lambda: roles.run(health, timeout=30).returncode == 0)

    # The control ticks' worker, on its own queue, answers by its own node name.
    control_log = roles.workdir / "control.log"
    roles.wait_for("control", lambda: b" ready." in control_log.read_bytes(), timeout=60)
    assert b".> control" in control_log.read_bytes(), "it takes the control queue"
    health = _healthcheck_argv(services["control"])
    roles.wait_for("control", lambda: roles.run(health, timeout=30).returncode == 0)

    # Flower: basic auth from the environment; /healthcheck answers without it.
    roles.wait_for("flower", lambda: httpx.get(url("flower", "/healthcheck")).status_code == 200)
    assert httpx.get(url("flower", "/")).status_code == 401
    auth = (roles.env["FLOWER_USER"], roles.env["FLOWER_PASSWORD"])
    assert httpx.get(url("flower", "/"), auth=auth, follow_redirects=True).status_code == 200

    # Beat keeps its schedule file under STATE_DIR (an emptyDir or tmpfs in the containers).
    state = Path(roles.env["STATE_DIR"])
    roles.wait_for("beat", lambda: any(state.glob("celerybeat-schedule*")))


def test_compose_roles_stop_cleanly_on_sigterm(roles: Roles) -> None:
    """What `docker compose stop` sends: each role exits on its own well within its grace."""
    assert roles.procs, "the roles did not start"
    codes = {role: roles.stop(role, timeout=30) for role in list(roles.procs)}
    assert all(code in {0, -signal.SIGTERM} for code in codes.values()), codes
    assert codes["worker"] == 0, "the worker's warm shutdown exits 0"
