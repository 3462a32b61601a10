"""The kustomize manifests under deploy/: every kustomization rendered (`kubectl kustomize`,
or a small merge of our own where kubectl is missing, checked against kubectl where both
exist), validated against the Kubernetes API schemas in strict mode (kubernetes-validate),
references, pod security, the roles' shapes and the production overlay."""

from __future__ import annotations

import shutil
from typing import Any

import kubernetes_validate
import pytest

from shared.publishing.tasks import TASK_TIME_LIMIT_S
from tests.deploy.helpers import (
    DEPLOY,
    DEPLOY_README,
    KUBERNETES_VERSIONS,
    KUSTOMIZATIONS,
    TMP,
    _by_id,
    _container,
    _containers,
    _flag,
    _image_uid,
    _k8s_argv,
    _parse_cli,
    _pod_spec,
    _resource,
    kustomize_in_python,
    kustomize_with_kubectl,
    pgbouncer_ini,
)


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

    # beat: no singleton (one of them sends the ticks), never none during a rollout, with a
    # writable STATE_DIR.
    beat = _resource(resources, "Deployment", "beat")
    assert beat["spec"]["replicas"] >= 2
    assert beat["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
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

    # webhooks: workers of their own on the webhooks queue, probed by their node name.
    container = _container(resources, "webhooks")
    argv = _k8s_argv(container)
    assert _parse_cli(argv).command == "worker" and _flag(argv, "--queues") == "webhooks"
    probe = container["livenessProbe"]["exec"]["command"]
    assert _flag(probe, "--name") == _flag(argv, "--name") and "%h" in _flag(argv, "--name")

    # control: the ticks' own workers on the control queue, two, probed by their node name;
    # the upload workers take publishing alone.
    control = _resource(resources, "Deployment", "control")
    assert control["spec"]["replicas"] >= 2
    container = _container(resources, "control")
    argv = _k8s_argv(container)
    assert _parse_cli(argv).command == "worker" and _flag(argv, "--queues") == "control"
    probe = container["livenessProbe"]["exec"]["command"]
    assert _flag(probe, "--name") == _flag(argv, "--name") and "%h" in _flag(argv, "--name")
    assert _flag(_k8s_argv(_container(resources, "worker")), "--queues") == "publishing"

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


POOLER = DEPLOY / "pooler"


def _pooler() -> list[dict[str, Any]]:
    render = kustomize_with_kubectl if shutil.which("kubectl") else kustomize_in_python
    return render(POOLER)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_pooler_python_kustomize_agrees_with_kubectl() -> None:
    assert _by_id(kustomize_in_python(POOLER)) == _by_id(kustomize_with_kubectl(POOLER))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_pooler_manifests_validate_and_pool_by_transaction(version: str) -> None:
    """deploy/pooler: PgBouncer in transaction mode behind a Service on its port, non-root
    with a read-only root, its userlist from a Secret the operator creates (none shipped)."""
    resources = _pooler()
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)
    assert {r["kind"] for r in resources} == {"ConfigMap", "Deployment", "Service"}
    config = _resource(resources, "ConfigMap", "pgbouncer-config")["data"]
    ini = pgbouncer_ini(config["pgbouncer.ini"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    deployment = _resource(resources, "Deployment", "pgbouncer")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert str(port["containerPort"]) == ini["pgbouncer"]["listen_port"]
    service = _resource(resources, "Service", "pgbouncer")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert ini["pgbouncer"]["auth_file"].startswith(mounts["userlist"] + "/")
    secret = volumes["userlist"]["secret"]["secretName"]
    readme = DEPLOY_README.read_text()
    assert f"create secret generic {secret}" in readme
    assert "kubectl apply -k deploy/pooler" in readme
    assert "DATABASE_POOLER" in readme
