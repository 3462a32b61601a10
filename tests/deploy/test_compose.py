"""docker-compose.yml against the Compose Specification schema (vendored, tests/schemas/):
interpolation, documented variables, startup order, scaling and draining, beats and control
workers."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from sqlalchemy import make_url

from shared.kit.settings import Settings
from shared.publishing.tasks import TASK_TIME_LIMIT_S
from tests.deploy.helpers import (
    _VARIABLE,
    COMPOSE_ENV_EXAMPLE,
    COMPOSE_FILE,
    COMPOSE_SAMPLE_ENV,
    COMPOSE_SCHEMA,
    InterpolationError,
    _flag,
    _healthcheck_argv,
    _parse_cli,
    _seconds,
    _service_argv,
    _strings,
    compose,
    compose_raw,
    pgbouncer_ini,
)


def test_compose_matches_the_compose_spec() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for doc in (compose_raw(), compose()):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, "\n".join(errors)
    # The schema is strict enough to catch a misspelt key.
    broken = compose()
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert list(validator.iter_errors(broken))


def test_compose_refuses_to_start_without_its_passwords() -> None:
    for missing in COMPOSE_SAMPLE_ENV:
        env = {k: v for k, v in COMPOSE_SAMPLE_ENV.items() if k != missing}
        with pytest.raises(InterpolationError, match=missing):
            compose(env)
        with pytest.raises(InterpolationError, match=missing):
            compose({**env, missing: ""})
    assert "${FLOWER_PASSWORD:?" in COMPOSE_FILE.read_text()


def test_compose_variables_are_documented() -> None:
    used = {
        m["braced"] or m["named"]
        for value in _strings(compose_raw())
        for m in _VARIABLE.finditer(value)
        if not m["escaped"]
    }
    documented = set(
        re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", COMPOSE_ENV_EXAMPLE.read_text(), re.M)
    )
    assert used <= documented, f"not in deploy/compose.env.example: {used - documented}"


def test_compose_startup_order_and_backing_services() -> None:
    services = compose()["services"]
    for name in ("api", "worker", "beat", "flower"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    migrate = services["migrate"]
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        # The optional pooler, when its profile runs: the migration goes through it.
        "pgbouncer": {"condition": "service_healthy", "required": False},
    }
    assert migrate["restart"] == "no"
    postgres, redis_ = services["postgres"], services["redis"]
    assert postgres["image"] == "postgres:15"
    assert redis_["image"] == "redis:7"
    assert _healthcheck_argv(postgres)[0] == "pg_isready"
    assert _healthcheck_argv(redis_) == ["redis-cli", "ping"]
    volumes = compose()["volumes"]
    for service, target in ((postgres, "/var/lib/postgresql/data"), (redis_, "/data")):
        (mount,) = service["volumes"]
        source, _, path = mount.partition(":")
        assert path == target and source in volumes, mount


def test_compose_worker_scales_and_drains() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N"
    assert _seconds(worker["stop_grace_period"]) > TASK_TIME_LIMIT_S
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"  # Celery's warm shutdown
    argv = _service_argv(worker)
    health = _healthcheck_argv(worker)
    assert _parse_cli(health).action == "worker"
    assert _flag(argv, "--name") == _flag(health, "--name")
    metrics_port = _flag(argv, "--metrics-port")
    assert _flag(argv, "--metrics-host") == "0.0.0.0"
    assert metrics_port in [str(p) for p in worker["expose"]]
    assert worker["labels"]["prometheus.io/port"] == metrics_port
    api = services["api"]
    api_metrics = _flag(_service_argv(api), "--metrics-port")
    assert api_metrics != _flag(_service_argv(api), "--port"), "metrics off the public port"
    assert api["labels"]["prometheus.io/port"] == api_metrics
    assert api_metrics in [str(p) for p in api["expose"]]
    assert api_metrics not in " ".join(api["ports"])
    assert api["labels"]["prometheus.io/path"] == "/metrics"


def test_compose_runs_beats_and_control_workers_with_no_singleton() -> None:
    services = compose()["services"]
    beat = services["beat"]
    # Any number of beats, one sending the ticks: two, and nothing pins the count to one.
    assert "container_name" not in beat
    assert beat["deploy"]["replicas"] >= 2
    assert "/var/lib/publisher" in beat["tmpfs"], "STATE_DIR must be writable"
    control = services["control"]
    argv = _service_argv(control)
    assert _flag(argv, "--queues") == "control" and "container_name" not in control
    assert control["deploy"]["replicas"] >= 2
    assert _flag(_healthcheck_argv(control), "--name") == _flag(argv, "--name")
    # The upload workers take publishing alone: no tick waits behind a burst of uploads.
    assert _flag(_service_argv(services["worker"]), "--queues") == "publishing"


def test_compose_pooler_is_optional_and_in_transaction_mode() -> None:
    """The `pooler` profile's PgBouncer: off by default, pool_mode = transaction in front of
    the postgres service, and the four .env lines that point every role at it make a valid
    Settings that says so (DATABASE_POOLER=transaction)."""
    raw = compose_raw()
    pooler = raw["services"]["pgbouncer"]
    assert pooler["profiles"] == ["pooler"]
    optional = {"pgbouncer", "rabbitmq"}  # each under a profile of its own
    assert all("profiles" not in s for n, s in raw["services"].items() if n not in optional)
    ini = pgbouncer_ini(compose()["configs"]["pgbouncer-ini"]["content"])
    options = ini["pgbouncer"]
    assert options["pool_mode"] == "transaction"
    assert ini["databases"]["publisher"] == "host=postgres port=5432 dbname=publisher"
    assert {c["target"] for c in pooler["configs"]} == {
        "/etc/pgbouncer/pgbouncer.ini",
        "/etc/pgbouncer/userlist.txt",
    }
    userlist = compose()["configs"]["pgbouncer-userlist"]["content"]
    assert userlist.strip() == f'"publisher" "{COMPOSE_SAMPLE_ENV["POSTGRES_PASSWORD"]}"'
    example = COMPOSE_ENV_EXAMPLE.read_text()
    lines = ["COMPOSE_PROFILES=pooler", "DATABASE_HOST=pgbouncer", "DATABASE_PORT=6432"]
    lines.append("DATABASE_POOLER=transaction")
    assert all(f"# {line}\n" in example for line in lines)
    pooled = {**COMPOSE_SAMPLE_ENV, **dict(line.split("=") for line in lines)}
    env = compose(pooled)["services"]["api"]["environment"]
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    url = make_url(settings.database_url)
    assert (url.host, url.port) == ("pgbouncer", int(options["listen_port"]))
    assert settings.database_pooler == "transaction"
