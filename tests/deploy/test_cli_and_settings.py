"""Consistency with the code: every role's command and probe, in compose and Kubernetes,
parses with the real CLI parser, every environment variable is a setting, and both run
the same commands."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import make_url

from shared.kit.settings import Settings
from tests.deploy.helpers import (
    COMPOSE_SAMPLE_ENV,
    KUSTOMIZATIONS,
    NON_SETTINGS_ENV,
    PUBLISHER_SERVICES,
    ROLE_OF,
    ROLES,
    SETTINGS_ENV,
    _container,
    _containers,
    _flag,
    _healthcheck_argv,
    _k8s_argv,
    _parse_cli,
    _resource,
    _service_argv,
    compose,
)


def test_compose_roles_run_the_cli() -> None:
    services = compose()["services"]
    assert set(services) >= PUBLISHER_SERVICES
    images = {services[name]["image"] for name in PUBLISHER_SERVICES}
    assert len(images) == 1, f"one image for every role: {images}"
    for name in PUBLISHER_SERVICES:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
        args = _parse_cli(_service_argv(service))
        assert args.command == ROLE_OF[name]
        if "healthcheck" in service:
            argv = _healthcheck_argv(service)
            if argv[0] == "publisher":
                _parse_cli(argv)
            else:
                assert argv[:2] == ["python", "-c"], argv
                compile(argv[2], f"{name} healthcheck", "exec")
    assert _healthcheck_argv(services["api"]) == [
        "publisher",
        "healthcheck",
        "api",
        "--url",
        "http://127.0.0.1:8000",
    ]


def test_compose_environment_is_settings() -> None:
    services = compose()["services"]
    for name, service in services.items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        allowed = SETTINGS_ENV if name in PUBLISHER_SERVICES else set(NON_SETTINGS_ENV)
        assert set(environment) <= allowed, f"{name}: {set(environment) - allowed}"
    # The shared environment is one Settings, valid in production, for every role but the
    # sandbox (which reads none).
    env = services["api"]["environment"]
    for name in PUBLISHER_SERVICES - {"sandbox"}:
        assert services[name]["environment"] == env, name
    assert services["sandbox"]["environment"] == {}
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    assert settings.environment == "production"
    assert settings.flower_password == COMPOSE_SAMPLE_ENV["FLOWER_PASSWORD"]
    assert settings.credential_keys == COMPOSE_SAMPLE_ENV["CREDENTIAL_KEYS"]
    # The URLs point at the compose services, with the credentials postgres is started with.
    db = make_url(settings.database_url)
    pg = services["postgres"]["environment"]
    assert db.drivername == "postgresql+psycopg"
    assert (db.host, db.port) == ("postgres", 5432)
    assert (db.username, db.password, db.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert settings.redis_url.startswith("redis://redis:6379/")
    sandbox_port = _flag(_service_argv(services["sandbox"]), "--port")
    assert settings.sandbox_url == f"http://sandbox:{sandbox_port}"
    assert settings.state_dir == "/var/lib/publisher"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_role_and_probe_runs_the_cli(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    roles = set()
    for workload, container in _containers(resources):
        args = _parse_cli(_k8s_argv(container))
        assert args.command == ROLE_OF[workload], f"{workload} runs `{args.command}`"
        roles.add(workload)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if "exec" in container.get(probe, {}):
                _parse_cli(container[probe]["exec"]["command"])
    expected = ROLES - ({"sandbox"} if name != "base" else set())
    assert roles == expected


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_environment_is_settings(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    resources = rendered[name]
    config = _resource(resources, "ConfigMap", "publisher-config")["data"]
    secrets = [r for r in resources if r["kind"] == "Secret"]
    names = set(config)
    for secret in secrets:
        names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for _, container in _containers(resources):
        names |= {e["name"] for e in container.get("env", [])}
    assert names <= SETTINGS_ENV, f"not settings: {names - SETTINGS_ENV}"
    # The ConfigMap and the Secret make one valid Settings. Production ships no Secret: use
    # values of the shape the operator creates.
    secret_data = (
        secrets[0]["stringData"]
        if secrets
        else {
            "FLOWER_PASSWORD": "s3cret-Value",
            "CREDENTIAL_KEYS": COMPOSE_SAMPLE_ENV["CREDENTIAL_KEYS"],
        }
    )
    Settings(**{k.lower(): v for k, v in {**config, **secret_data}.items()})


def test_compose_and_kubernetes_run_the_same_commands(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    services = compose()["services"]
    for role in PUBLISHER_SERVICES:
        assert _service_argv(services[role]) == _k8s_argv(_container(rendered["base"], role))
