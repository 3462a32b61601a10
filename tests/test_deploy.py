"""The deployment artifacts, checked offline: Dockerfile, .dockerignore, docker-compose.yml and
the kustomize manifests under deploy/.

- docker-compose.yml against the Compose Specification schema (vendored, tests/schemas/);
- every kustomization rendered (`kubectl kustomize`, or a small merge of our own where kubectl
  is missing, checked against kubectl where both exist) and every manifest validated against
  the Kubernetes API schemas in strict mode (kubernetes-validate);
- consistency with the code: every role's command and probe parses with the real CLI
  parser, every environment variable is a setting, the ports, names and grace periods agree;
- the image's build and entrypoint commands, as far as they run without Docker: the wheel is
  built from the build context that .dockerignore lets through, installed on its own, and the
  compose roles' argv run from it as plain processes against a throwaway database.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text

from cli.main import build_parser
from shared.settings import Settings
from worker.celery_app import TASK_TIME_LIMIT_S

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DEPLOY = ROOT / "deploy"
DEPLOY_README = DEPLOY / "README.md"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
KUSTOMIZATIONS = ["base", "overlays/production"]
TMP = "/tmp"  # noqa: S108 - the containers' own /tmp, an emptyDir
# Offline: everything comes from this venv or the wheel at hand.
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
# The oldest and a recent Kubernetes minor still in common support.
KUBERNETES_VERSIONS = ["1.30.0", "1.34.0"]

# The compose services that run the publisher image, each named after its CLI role.
ROLES = PUBLISHER_SERVICES = {"migrate", "api", "worker", "beat", "flower", "sandbox"}
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
# Variables that are not settings, and who reads them.
NON_SETTINGS_ENV = {
    "POSTGRES_USER": "the postgres image: the role it creates",
    "POSTGRES_PASSWORD": "the postgres image: that role's password",
    "POSTGRES_DB": "the postgres image: the database it creates",
    "HOSTNAME": "the container runtime; Celery's %h",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client's multiprocess mode (shared/metrics_dir.py)",
    "PYTHONUNBUFFERED": "CPython: logs reach the container runtime at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc writes on a read-only root filesystem",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, in the image's build steps",
    "PIP_NO_INPUT": "pip, in the image's build steps",
}
# Variables the compose file is interpolated with here: the two it requires.
COMPOSE_SAMPLE_ENV = {"POSTGRES_PASSWORD": "pg-secret-1", "FLOWER_PASSWORD": "flower-secret-1"}


def _parse_cli(argv: list[str]) -> Any:
    """argv as the image runs it (`publisher ...`), parsed by the real CLI parser."""
    assert argv and argv[0] == "publisher", f"not a publisher command: {argv}"
    parser = build_parser()
    parser.exit_on_error = False
    try:
        return parser.parse_args(argv[1:])
    except SystemExit as exc:  # argparse exits on errors even with exit_on_error=False
        raise AssertionError(f"`{' '.join(argv)}` does not parse: exit {exc.code}") from exc


def _flag(argv: list[str], name: str) -> str:
    """The value after `name` in argv."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def _with_flags(argv: list[str], **flags: str) -> list[str]:
    """argv with the values of flags it has replaced (metrics_port= for --metrics-port)."""
    out = list(argv)
    for key, value in flags.items():
        name = "--" + key.replace("_", "-")
        out[out.index(name) + 1] = value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seconds(duration: str) -> float:
    """A compose duration ("6m", "1m30s", "90s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# The conftest's per-test database truncation and Redis flush are not wanted here: nothing
# here uses the test database, and the role processes below keep a broker connection open
# across tests.
@pytest.fixture(autouse=True)
def clean_db() -> None:
    return None


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    return None


# --- Dockerfile and .dockerignore --------------------------------------------------------------


@dataclass
class Instruction:
    stage: int
    keyword: str
    args: str


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage, buf = -1, ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword.upper(), " ".join(rest.split())))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation line"
    return out


def _final_stage() -> list[Instruction]:
    instructions = dockerfile_instructions()
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form"
    return [str(v) for v in value]


def _image_uid() -> int:
    users = [i.args for i in _final_stage() if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric so that runAsNonRoot can verify it"
    return int(uid)


def test_dockerfile_entrypoint_is_the_cli_and_the_user_is_not_root() -> None:
    final = _final_stage()
    (entrypoint,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    assert _exec_form(entrypoint) == ["publisher"]
    (cmd,) = [i for i in final if i.keyword == "CMD"]
    argv = _exec_form(cmd)
    assert argv == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert _parse_cli(["publisher", *argv]).command == "api"
    assert _image_uid() != 0
    # Every ENV the image sets is a setting or documented.
    for instruction in dockerfile_instructions():
        if instruction.keyword == "ENV":
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.args)
            assert names
            for name in names:
                assert name in SETTINGS_ENV or name in NON_SETTINGS_ENV, name


def test_dockerfile_hygiene() -> None:
    instructions = dockerfile_instructions()
    froms = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    stage_names = {f[2].lower() for f in froms if len(f) == 3 and f[1].upper() == "AS"}
    for f in froms:
        image = f[0]
        if image.lower() in stage_names:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"pin a tag: FROM {image}"
    assert froms[-1][0] == "python:3.11-slim"

    final = _final_stage()
    for i in final:
        # The wheels are bind-mounted for the install, never copied into a layer.
        assert not (i.keyword in {"COPY", "ADD"} and "/wheels" in i.args), i.args
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|python3-dev)\b", i.args), i.args
        if i.keyword == "RUN" and "pip install" in i.args:
            assert "--no-cache-dir" in i.args
    for i in instructions:
        assert not (i.keyword == "ADD" and "://" in i.args), "ADD of a URL"
        if i.keyword == "RUN" and "apt-get install" in i.args:
            assert "--no-install-recommends" in i.args
            assert "rm -rf /var/lib/apt/lists/*" in i.args, "apt lists left in the layer"
    runs_as = [i.args for i in final if i.keyword == "USER"]
    assert runs_as and runs_as[-1] not in {"root", "0", "0:0"}


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str], str]]:
    """(is_exception, regex, pattern) in file order, as Docker reads .dockerignore."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z"), pattern))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex, _ in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def build_context() -> list[str]:
    """The files `docker build .` sends, relative to the repo root."""
    rules = _dockerignore_rules()
    exceptions = [p for negate, _, p in rules if negate]
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # Do not descend where everything is excluded and no exception reaches inside.
        dirnames[:] = [
            d
            for d in dirnames
            if not _excluded(rel_dir + d, rules)
            or any(p.startswith(rel_dir + d + "/") for p in exceptions)
        ]
        files += [rel_dir + f for f in filenames if not _excluded(rel_dir + f, rules)]
    return sorted(files)


def _builder_copies() -> list[str]:
    """Sources of the first stage's COPY instructions (from the build context), normalised:
    "" is the whole context."""
    sources = []
    for i in dockerfile_instructions():
        if i.stage == 0 and i.keyword == "COPY" and "--from" not in i.args:
            sources += [os.path.normpath(s).removeprefix(".") for s in i.args.split()[:-1]]
    return sources


def _copied(rel: str, sources: list[str]) -> bool:
    return any(s in {"", rel} or rel.startswith(s + "/") for s in sources)


def test_build_context_holds_what_the_wheel_needs_and_nothing_else() -> None:
    context = build_context()
    for unwanted in (".venv/", ".git/", "tests/", "var/", "deploy/", ".env", "__pycache__/"):
        assert not any(f.startswith(unwanted) or f"/{unwanted}" in f for f in context), unwanted
    rules = _dockerignore_rules()
    assert not _excluded("api/app.py", rules)
    assert _excluded(".env", rules) and _excluded("deploy/prod.env", rules)
    # Every package that pyproject.toml ships reaches the builder, with all its files.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    sources = _builder_copies()
    copied = {f for f in context if _copied(f, sources)}
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    for package in packages:
        files = [p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")]
        files = [f for f in files if "__pycache__" not in f]
        assert files and set(files) <= copied, f"{package}/ does not reach the builder"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"


@pytest.fixture(scope="module")
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


def test_the_wheel_carries_the_cli_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "publisher = cli.main:main" in zf.read(entry_points).decode()
    migrations = (ROOT / "shared" / "migrations").rglob("*")
    wanted = {p.relative_to(ROOT).as_posix() for p in migrations if p.suffix in {".py", ".mako"}}
    wanted = {w for w in wanted if "__pycache__" not in w}
    assert wanted <= names, wanted - names
    assert {"cli/__main__.py", "cli/main.py", "api/app.py", "worker/celery_app.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


# --- docker-compose.yml ------------------------------------------------------------------------


class InterpolationError(ValueError):
    pass


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg, current = m["op"], m["arg"], env.get(name)
        assert arg is None or "$" not in arg, "nested interpolation is not supported here"
        if op in {":?", "?"} and (current is None or (op == ":?" and not current)):
            raise InterpolationError(f"{name}: {arg}")
        if op == ":-" and not current:
            return str(arg)
        if op == "-" and current is None:
            return str(arg)
        return current or ""

    return _VARIABLE.sub(substitute, value)


def _strings(value: Any) -> Iterator[str]:
    """Every string value in a YAML document (compose interpolates values, not comments)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def compose_raw() -> dict[str, Any]:
    """docker-compose.yml as YAML: anchors and merge keys resolved, variables not."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` would see it with `env`."""
    result = interpolate(compose_raw(), COMPOSE_SAMPLE_ENV if env is None else env)
    assert isinstance(result, dict)
    return result


def _healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "exec-form health checks, no shell"
    return [str(t) for t in test[1:]]


def _service_argv(service: dict[str, Any]) -> list[str]:
    """The container's argv: the image's ENTRYPOINT, then the service's command."""
    assert "entrypoint" not in service, "every role runs through the image's entrypoint"
    return ["publisher", *[str(c) for c in service["command"]]]


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


def test_compose_roles_run_the_cli() -> None:
    services = compose()["services"]
    assert set(services) >= PUBLISHER_SERVICES
    images = {services[name]["image"] for name in PUBLISHER_SERVICES}
    assert len(images) == 1, f"one image for every role: {images}"
    for name in PUBLISHER_SERVICES:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
        args = _parse_cli(_service_argv(service))
        assert args.command == name
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


def test_compose_startup_order_and_backing_services() -> None:
    services = compose()["services"]
    for name in ("api", "worker", "beat", "flower"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
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


def test_compose_has_exactly_one_beat() -> None:
    beat = compose()["services"]["beat"]
    # A fixed container name makes `--scale beat=2` fail instead of starting a second beat.
    assert beat.get("container_name")
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert "/var/lib/publisher" in beat["tmpfs"], "STATE_DIR must be writable"


# --- Kubernetes --------------------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Lists that a strategic merge patch merges by a key; other lists are replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "replicas", "patches"}


def _merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """A strategic merge patch, for the fields the manifests here patch."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if k == "$patch":
                continue
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        out_list = list(base)
        for item in patch:
            at = [n for n, b in enumerate(out_list) if b.get(merge_key) == item[merge_key]]
            if at:
                out_list[at[0]] = _merge(out_list[at[0]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    if resource["kind"] in WORKLOADS:
        spec: dict[str, Any] = resource["spec"]["template"]["spec"]
        return spec
    return None


def kustomize_in_python(directory: Path) -> list[dict[str, Any]]:
    """The kustomize features the manifests use: resources, patches (strategic merge,
    `$patch: delete` included), namespace, images and replicas. Anything else is refused."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(k) <= KUSTOMIZE_FIELDS, f"not supported here: {set(k) - KUSTOMIZE_FIELDS}"
    resources: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += kustomize_in_python(path)
        else:
            resources += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch_ref in k.get("patches", []):
        assert set(patch_ref) == {"path"}, patch_ref
        for patch in yaml.safe_load_all((directory / patch_ref["path"]).read_text()):
            at = [
                n
                for n, r in enumerate(resources)
                if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]
            ]
            assert len(at) == 1, f"patch {patch_ref['path']} matches {len(at)} resources"
            if patch.get("$patch") == "delete":
                del resources[at[0]]
            else:
                resources[at[0]] = _merge(resources[at[0]], patch)
    if namespace := k.get("namespace"):
        for r in resources:
            if r["kind"] == "Namespace":
                r["metadata"]["name"] = namespace
            elif r["kind"] not in CLUSTER_SCOPED:
                r["metadata"]["namespace"] = namespace
    for image in k.get("images", []):
        for r in resources:
            for c in (_pod_spec(r) or {}).get("containers", []):
                name, _, tag = c["image"].rpartition(":")
                if "/" in tag or not name:
                    name, tag = c["image"], ""
                if name == image["name"]:
                    new_tag = image.get("newTag", tag)
                    c["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")
    for replicas in k.get("replicas", []):
        (target,) = [
            r
            for r in resources
            if r["kind"] in WORKLOADS - {"Job"} and r["metadata"]["name"] == replicas["name"]
        ]
        target["spec"]["replicas"] = replicas["count"]
    return resources


def kustomize_with_kubectl(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _by_id(resources: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for r in resources:
        rid = (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"])
        assert rid not in out, f"duplicate {rid}"
        out[rid] = r
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each kustomization, rendered by kubectl where it is installed."""
    render = kustomize_with_kubectl if shutil.which("kubectl") else kustomize_in_python
    return {name: render(DEPLOY / name) for name in KUSTOMIZATIONS}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_python_kustomize_agrees_with_kubectl(name: str) -> None:
    ours = _by_id(kustomize_in_python(DEPLOY / name))
    theirs = _by_id(kustomize_with_kubectl(DEPLOY / name))
    assert sorted(ours) == sorted(theirs)
    for rid, resource in theirs.items():
        assert ours[rid] == resource, rid


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_manifests_validate_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], name: str, version: str
) -> None:
    errors = []
    for resource in rendered[name]:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def _resource(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _containers(resources: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for r in resources:
        spec = _pod_spec(r)
        for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
            yield r["metadata"]["name"], c


def _container(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    kind = "Job" if name == "migrate" else "Deployment"
    spec = _pod_spec(_resource(resources, kind, name))
    assert spec is not None
    (container,) = spec["containers"]
    return dict(container)


def _k8s_argv(container: dict[str, Any]) -> list[str]:
    return [str(a) for a in container.get("command", ["publisher"]) + container.get("args", [])]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_role_and_probe_runs_the_cli(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    roles = set()
    for workload, container in _containers(resources):
        args = _parse_cli(_k8s_argv(container))
        assert args.command == workload, f"{workload} runs `{args.command}`"
        roles.add(args.command)
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
    secret_data = secrets[0]["stringData"] if secrets else {"FLOWER_PASSWORD": "s3cret-Value"}
    Settings(**{k.lower(): v for k, v in {**config, **secret_data}.items()})


def test_base_secret_is_a_template_and_production_ships_none(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    secret = _resource(rendered["base"], "Secret", "publisher-secrets")
    assert set(secret["stringData"]) == {"DATABASE_URL", "FLOWER_PASSWORD"}
    assert all("CHANGE-ME" in v for v in secret["stringData"].values())
    production = rendered["overlays/production"]
    assert not [r for r in production if r["kind"] == "Secret"]
    # ...so the README must say how to create the one every role reads.
    readme = DEPLOY_README.read_text()
    assert "create secret generic publisher-secrets" in readme
    assert "kubectl apply -k deploy/overlays/production" in readme


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_references_resolve(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    resources = rendered[name]
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    external_secrets = {"publisher-secrets"} if name != "base" else set()
    deployments = [r for r in resources if r["kind"] == "Deployment"]

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for d in deployments:
        assert d["spec"]["selector"]["matchLabels"].items() <= (
            d["spec"]["template"]["metadata"]["labels"].items()
        )
    for _, container in _containers(resources):
        ports = {p.get("name") for p in container.get("ports", [])} | {
            p["containerPort"] for p in container.get("ports", [])
        }
        for ref in container.get("envFrom", []):
            if "configMapRef" in ref:
                assert ("ConfigMap", ref["configMapRef"]["name"]) in names
            if "secretRef" in ref:
                secret = ref["secretRef"]["name"]
                assert ("Secret", secret) in names or secret in external_secrets
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if "httpGet" in container.get(probe, {}):
                assert container[probe]["httpGet"]["port"] in ports
    for r in resources:
        if r["kind"] == "Service":
            (target,) = selected(r["spec"]["selector"])
            (container,) = target["spec"]["template"]["spec"]["containers"]
            port_names = {p.get("name") for p in container["ports"]}
            for port in r["spec"]["ports"]:
                assert port["targetPort"] in port_names, r["metadata"]["name"]
        if r["kind"] == "HorizontalPodAutoscaler":
            ref = r["spec"]["scaleTargetRef"]
            assert (ref["kind"], ref["name"]) in names
            assert ref["name"] != "beat"
        if r["kind"] == "PodDisruptionBudget":
            assert len(selected(r["spec"]["selector"]["matchLabels"])) == 1
    # Services and HPAs the roles need.
    assert {("Service", s) for s in ("api", "flower")} <= names
    assert {("HorizontalPodAutoscaler", "api"), ("HorizontalPodAutoscaler", "worker")} <= names
    assert {("PodDisruptionBudget", "api"), ("PodDisruptionBudget", "worker")} <= names
    if name == "base":
        config = _resource(resources, "ConfigMap", "publisher-config")["data"]
        sandbox_port = _flag(_k8s_argv(_container(resources, "sandbox")), "--port")
        assert config["SANDBOX_URL"] == f"http://sandbox:{sandbox_port}"
        assert ("Service", "sandbox") in names


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_are_locked_down_and_sized(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    uid = _image_uid()
    for r in resources:
        spec = _pod_spec(r)
        if spec is None:
            continue
        where = r["metadata"]["name"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec.get("automountServiceAccountToken") is False, where
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get(TMP) in empty_dirs, f"{where}: /tmp must be writable"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_roles_have_the_shape_they_need(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    config = _resource(resources, "ConfigMap", "publisher-config")["data"]

    # beat: exactly one, stopped before its successor starts, with a writable STATE_DIR.
    beat = _resource(resources, "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    beat_mounts = {m["mountPath"] for m in _container(resources, "beat")["volumeMounts"]}
    assert config["STATE_DIR"] in beat_mounts

    # worker: drains within its grace period, probe and node name agree, metrics annotated.
    worker = _resource(resources, "Deployment", "worker")
    pod = worker["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > TASK_TIME_LIMIT_S
    container = _container(resources, "worker")
    argv = _k8s_argv(container)
    probe = container["livenessProbe"]["exec"]["command"]
    assert _parse_cli(probe).action == "worker"
    assert _flag(probe, "--name") == _flag(argv, "--name")
    assert "%h" in _flag(argv, "--name"), "one node name per pod"
    metrics_port = _flag(argv, "--metrics-port")
    assert _flag(argv, "--metrics-host") == "0.0.0.0"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == metrics_port
    assert int(metrics_port) in {p["containerPort"] for p in container["ports"]}
    worker_hpa = _resource(resources, "HorizontalPodAutoscaler", "worker")
    assert worker_hpa["apiVersion"] == "autoscaling/v2"

    # api: liveness is the process, readiness its dependencies; metrics on its own port.
    api = _resource(resources, "Deployment", "api")
    container = _container(resources, "api")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    api_metrics = _flag(_k8s_argv(container), "--metrics-port")
    assert api_metrics != _flag(_k8s_argv(container), "--port"), "metrics off the public port"
    assert annotations["prometheus.io/port"] == api_metrics
    assert int(api_metrics) in {p["containerPort"] for p in container["ports"]}
    assert annotations["prometheus.io/path"] == "/metrics"
    assert _resource(resources, "HorizontalPodAutoscaler", "api")["apiVersion"] == "autoscaling/v2"

    # migrate: a Job that runs once and stops.
    job = _resource(resources, "Job", "migrate")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_production_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    resources = rendered["overlays/production"]
    config = _resource(resources, "ConfigMap", "publisher-config")["data"]
    assert config["ENVIRONMENT"] == "production"
    assert not [r for r in resources if r["metadata"]["name"] == "sandbox"]
    for _, container in _containers(resources):
        assert container["image"].startswith("registry.example.com/publisher:")
    base = rendered["base"]
    for role in ("api", "worker"):
        assert (
            _resource(resources, "Deployment", role)["spec"]["replicas"]
            > _resource(base, "Deployment", role)["spec"]["replicas"]
        )
        assert (
            _resource(resources, "HorizontalPodAutoscaler", role)["spec"]["maxReplicas"]
            > _resource(base, "HorizontalPodAutoscaler", role)["spec"]["maxReplicas"]
        )


def test_compose_and_kubernetes_run_the_same_commands(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    services = compose()["services"]
    for role in PUBLISHER_SERVICES:
        assert _service_argv(services[role]) == _k8s_argv(_container(rendered["base"], role))


# --- the compose roles as plain processes -----------------------------------------------------


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


@dataclass
class Roles:
    """The compose roles running from the installed wheel."""

    env: dict[str, str]
    workdir: Path
    python: list[str]
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def argv(self, compose_argv: list[str]) -> list[str]:
        """`publisher ...` as this interpreter runs it: python -m cli ..."""
        assert compose_argv[0] == "publisher"
        return [*self.python, *compose_argv[1:]]

    def run(self, compose_argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(compose_argv),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, role: str, compose_argv: list[str]) -> None:
        log = (self.workdir / f"{role}.log").open("wb")
        self.procs[role] = subprocess.Popen(
            self.argv(compose_argv),
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, role: str) -> str:
        return (self.workdir / f"{role}.log").read_text(errors="replace")[-3000:]

    def wait_for(self, role: str, ready: Callable[[], bool], timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[role]
            assert proc.poll() is None, f"{role} exited {proc.returncode}:\n{self.log(role)}"
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass
            assert time.monotonic() < deadline, f"{role} not ready:\n{self.log(role)}"
            time.sleep(0.2)

    def stop(self, role: str, timeout: float = 30) -> int:
        """SIGTERM to the role's main process only, as `docker stop` does; then sweep."""
        proc = self.procs[role]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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


def test_roles_run_from_the_installed_wheel(roles: Roles, installed: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import cli.main, shared.migrate; print(cli.main.__file__)"],
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
