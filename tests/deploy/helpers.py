"""Readers of the deployment artifacts (Dockerfile, .dockerignore, docker-compose.yml, the
kustomize manifests under deploy/) and the CLI parser, shared by the deployment tests."""

from __future__ import annotations

import configparser
import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from cli.main import build_parser
from shared.kit.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DEPLOY = ROOT / "deploy"
DEPLOY_README = DEPLOY / "README.md"
COMPOSE_SCHEMA = Path(__file__).parent.parent / "schemas" / "compose-spec.json"
KUSTOMIZATIONS = ["base", "overlays/production"]
TMP = "/tmp"  # noqa: S108 - the containers' own /tmp, an emptyDir
# Offline: everything comes from this venv or the wheel at hand.
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
# The oldest and a recent Kubernetes minor still in common support.
KUBERNETES_VERSIONS = ["1.30.0", "1.34.0"]
# The compose services (and Kubernetes workloads) that run the publisher image, and the CLI
# role each runs: named after it, but for the webhook deliveries' and the ticks' own workers.
ROLE_OF = {
    "migrate": "migrate",
    "api": "api",
    "worker": "worker",
    "webhooks": "worker",
    "control": "worker",
    "beat": "beat",
    "flower": "flower",
    "sandbox": "sandbox",
}
ROLES = PUBLISHER_SERVICES = set(ROLE_OF)
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
# Variables that are not settings, and who reads them.
NON_SETTINGS_ENV = {
    "POSTGRES_USER": "the postgres image: the role it creates",
    "POSTGRES_PASSWORD": "the postgres image: that role's password",
    "POSTGRES_DB": "the postgres image: the database it creates",
    "RABBITMQ_DEFAULT_USER": "the rabbitmq image: the user it creates",
    "RABBITMQ_DEFAULT_PASS": "the rabbitmq image: that user's password",
    "RABBITMQ_DEFAULT_VHOST": "the rabbitmq image: the virtual host it creates",
    "HOSTNAME": "the container runtime; Celery's %h",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client's multiprocess mode (shared/metrics_dir.py)",
    "PYTHONUNBUFFERED": "CPython: logs reach the container runtime at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc writes on a read-only root filesystem",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, in the image's build steps",
    "PIP_NO_INPUT": "pip, in the image's build steps",
}
# Variables the compose file is interpolated with here: the three it requires.
COMPOSE_SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "pg-secret-1",
    "FLOWER_PASSWORD": "flower-secret-1",
    "CREDENTIAL_KEYS": "m6w2rJ0cQpVY1c4kMx5o0WcYhZJ8s3n1a2B9fE7dK4U=",
}


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


def pgbouncer_ini(text: str) -> dict[str, dict[str, str]]:
    """A pgbouncer.ini's sections and their options."""
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


def _healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "exec-form health checks, no shell"
    return [str(t) for t in test[1:]]


def _service_argv(service: dict[str, Any]) -> list[str]:
    """The container's argv: the image's ENTRYPOINT, then the service's command."""
    assert "entrypoint" not in service, "every role runs through the image's entrypoint"
    return ["publisher", *[str(c) for c in service["command"]]]


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
