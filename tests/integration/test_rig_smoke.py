"""Smoke tests proving the rig is the real thing: each one exercises a part of Kubernetes or Prometheus
that a mock would silently fake (apiextensions validation, the controller/scheduler/kubelet chain,
PodSecurity admission, RBAC, Gateway API CEL rules, scraping and PromQL, helm rendering).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.rig import Cluster, Prometheus
from tests.rig.paths import TESTDATA, binary, versions
from tests.rig.procs import free_port, wait_until

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _status_message(error: ApiException) -> str:
    """The human message of the API server's Status body (what kubectl would print)."""
    return str(json.loads(error.body)["message"])


def test_control_plane_reports_pinned_version(cluster: Cluster) -> None:
    assert cluster.server_version()["gitVersion"] == versions()["KUBERNETES_VERSION"]


def test_custom_resource_definition_and_object(cluster: Cluster) -> None:
    cluster.apply(TESTDATA / "widgets-crd.yaml")
    cluster.wait_for_crds()
    namespace = _name("crd")
    cluster.create_namespace(namespace)
    custom = k8s.CustomObjectsApi(cluster.api_client)
    group, version, plural = "rig.modelrollout.io", "v1", "widgets"

    def widget(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": f"{group}/{version}",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        }

    wait_until(  # discovery of a just-established CRD can lag by a moment
        lambda: custom.create_namespaced_custom_object(group, version, namespace, plural, widget("small", size=3)),
        timeout=30,
        what="the first Widget to be accepted",
    )
    stored = custom.get_namespaced_custom_object(group, version, namespace, plural, "small")
    assert stored["spec"] == {"size": 3, "colour": "blue"}  # structural-schema default applied
    assert "small" in cluster.kubectl("get", "widgets", "-n", namespace).stdout

    with pytest.raises(ApiException) as too_big:
        custom.create_namespaced_custom_object(group, version, namespace, plural, widget("big", size=11))
    assert too_big.value.status == 422
    with pytest.raises(ApiException) as cel:
        custom.create_namespaced_custom_object(group, version, namespace, plural, widget("red", size=7, colour="red"))
    assert cel.value.status == 422
    assert "red widgets are at most 5 big" in _status_message(cel.value)


def test_deployment_becomes_available_on_kwok_nodes(cluster: Cluster, namespace: str) -> None:
    apps = k8s.AppsV1Api(cluster.api_client)
    labels = {"app": "smoke"}
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="smoke"),
        spec=k8s.V1DeploymentSpec(
            replicas=3,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)

    def available() -> bool:
        status = apps.read_namespaced_deployment_status("smoke", namespace).status
        return status.available_replicas == 3

    wait_until(available, timeout=90, what="3 available replicas", alive=cluster.check_alive)
    pods = k8s.CoreV1Api(cluster.api_client).list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert len(pods) == 3
    assert all(pod.status.phase == "Running" and pod.spec.node_name.startswith("kwok-node-") for pod in pods)


def test_kwok_renews_node_leases_like_a_kubelet(cluster: Cluster) -> None:
    """Without Lease heartbeats the node controller marks every node NotReady after its grace period and
    their pods not Ready: deployments then lose availability at random moments of a test."""
    leases = k8s.CoordinationV1Api(cluster.api_client)
    nodes = [node.metadata.name for node in k8s.CoreV1Api(cluster.api_client).list_node().items]

    def renewed_since(start: float) -> bool:
        held = {lease.metadata.name: lease for lease in leases.list_namespaced_lease("kube-node-lease").items}
        return all(
            name in held and held[name].spec.renew_time is not None and held[name].spec.renew_time.timestamp() > start
            for name in nodes
        )

    start = time.time()
    wait_until(
        lambda: renewed_since(start), timeout=60, what="every kwok node's Lease renewed", alive=cluster.check_alive
    )


def _pod(name: str, *, compliant: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "registry.invalid/app:1"}
    spec: dict[str, Any] = {"containers": [container]}
    if compliant:
        spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsUser": 1000,
        }
    else:
        container["securityContext"] = {"privileged": True, "runAsUser": 0}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_pod_security_admission_enforces_restricted(cluster: Cluster) -> None:
    namespace = _name("psa")
    cluster.create_namespace(namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
    core = k8s.CoreV1Api(cluster.api_client)
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, _pod("privileged", compliant=False))
    assert rejected.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in _status_message(rejected.value)
    accepted = core.create_namespaced_pod(namespace, _pod("restricted", compliant=True))
    assert accepted.metadata.name == "restricted"


def test_service_account_is_confined_to_its_role(cluster: Cluster) -> None:
    namespace, elsewhere = _name("rbac"), _name("other")
    cluster.create_namespace(namespace)
    cluster.create_namespace(elsewhere)
    cluster.apply(
        f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {namespace}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {namespace}}}]
"""
    )
    kubeconfig = cluster.mint_service_account_kubeconfig(namespace, "reader")
    restricted = cluster.api_client_for(kubeconfig)
    try:
        core = k8s.CoreV1Api(restricted)
        names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
        assert "kube-root-ca.crt" in names  # published by the controller-manager, readable by the Role
        for forbidden in (
            lambda: core.list_namespaced_secret(namespace),
            lambda: core.list_namespaced_config_map(elsewhere),
            lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}}),
        ):
            with pytest.raises(ApiException) as denied:
                forbidden()
            assert denied.value.status == 403
    finally:
        restricted.close()
    whoami = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig)
    assert whoami.stdout == f"system:serviceaccount:{namespace}:reader"
    result = cluster.kubectl("get", "secrets", kubeconfig=kubeconfig, check=False)
    assert result.returncode != 0
    assert "Forbidden" in result.stderr


def _httproute(name: str, backend_refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "hostnames": ["iris.example.com"],
            "rules": [{"backendRefs": backend_refs}],
        },
    }


@pytest.mark.parametrize(
    ("backend_refs", "message"),
    [
        pytest.param([{"name": "stable", "port": 80, "weight": 1_000_001}], "weight", id="weight-out-of-range"),
        pytest.param([{"name": "stable", "weight": 50}], "Must have port for Service reference", id="no-port"),
        pytest.param([{"name": "", "port": 80}], "name", id="empty-name"),
    ],
)
def test_gateway_api_httproute_validation(cluster: Cluster, backend_refs: list[dict[str, Any]], message: str) -> None:
    namespace = "default"
    custom = k8s.CustomObjectsApi(cluster.api_client)
    group, version, plural = "gateway.networking.k8s.io", "v1", "httproutes"
    valid = _httproute(
        _name("valid"),
        [{"name": "stable", "port": 80, "weight": 90}, {"name": "canary", "port": 80, "weight": 10}],
    )
    created = custom.create_namespaced_custom_object(group, version, namespace, plural, valid)
    assert [ref["weight"] for ref in created["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(
            group, version, namespace, plural, _httproute(_name("invalid"), backend_refs)
        )
    assert rejected.value.status == 422
    assert message in _status_message(rejected.value)


def test_istio_virtual_service_validation(cluster: Cluster) -> None:
    custom = k8s.CustomObjectsApi(cluster.api_client)
    group, version, plural = "networking.istio.io", "v1", "virtualservices"

    def virtual_service(name: str, weight: Any) -> dict[str, Any]:
        route = [
            {"destination": {"host": "iris-stable", "port": {"number": 80}}, "weight": 100 - 10},
            {"destination": {"host": "iris-canary", "port": {"number": 80}}, "weight": weight},
        ]
        return {
            "apiVersion": f"{group}/{version}",
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["iris"], "http": [{"route": route}]},
        }

    created = custom.create_namespaced_custom_object(
        group, version, "default", plural, virtual_service(_name("vs"), 10)
    )
    assert created["spec"]["http"][0]["route"][1]["weight"] == 10
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(group, version, "default", plural, virtual_service(_name("vs"), "ten"))
    assert rejected.value.status == 422


def test_prometheus_operator_crds_accept_a_service_monitor(cluster: Cluster) -> None:
    cluster.apply(
        """
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: smoke, namespace: default}
spec:
  selector: {matchLabels: {app: smoke}}
  endpoints: [{port: http, interval: 1s}]
"""
    )
    assert "smoke" in cluster.kubectl("get", "servicemonitors", "-n", "default").stdout


@pytest.fixture
def metrics_process(rig_log_dir: Path) -> Iterator[str]:
    """A separate process serving /metrics with prometheus_client: address ``127.0.0.1:PORT``."""
    port = free_port()
    script = (
        "import time\n"
        "from prometheus_client import Gauge, start_http_server\n"
        "Gauge('rig_smoke_value', 'Smoke-test gauge', ['who']).labels('rig').set(42)\n"
        f"start_http_server({port}, addr='127.0.0.1')\n"
        "time.sleep(600)\n"
    )
    with (rig_log_dir / "metrics-process.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200,
            timeout=30,
            what="the metrics process",
        )
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_prometheus_scrapes_a_real_process(prometheus: Prometheus, metrics_process: str) -> None:
    job = _name("smoke")
    prometheus.add_target(job, metrics_process, labels={"track": "stable"})
    series = prometheus.wait_for_series(f'rig_smoke_value{{job="{job}"}}', timeout=30)
    assert len(series) == 1
    assert series[0]["metric"]["track"] == "stable"
    assert series[0]["metric"]["who"] == "rig"
    assert float(series[0]["value"][1]) == 42.0
    prometheus.set_rules(
        job,
        [{"name": job, "rules": [{"record": "job:rig_smoke_value:doubled", "expr": "rig_smoke_value * 2"}]}],
    )
    doubled = prometheus.wait_for_series(f'job:rig_smoke_value:doubled{{job="{job}"}}', timeout=30)
    assert float(doubled[0]["value"][1]) == 84.0

    prometheus.remove_target(job, metrics_process)
    wait_until(  # the target's series go stale once it is no longer scraped
        lambda: not prometheus.query(f'up{{job="{job}"}}'), timeout=30, what="the removed target to go stale"
    )


def test_helm_renders_a_chart_with_the_pinned_version(cluster: Cluster, tmp_path: Path) -> None:
    helm = binary("helm")
    env = {
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
        "PATH": "/usr/bin:/bin",
    }
    version = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert version.stdout.strip() == versions()["HELM_VERSION"]
    started = time.monotonic()
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "smoke",
            str(TESTDATA / "chart"),
            "--set",
            "replicas=3",
            "--namespace",
            "default",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert time.monotonic() - started < 30
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert [(doc["kind"], doc["metadata"]["name"]) for doc in documents] == [("Deployment", "smoke-rig-smoke")]
    assert documents[0]["spec"]["replicas"] == 3
    # What helm renders, the real API server accepts (schema, defaulting and admission; nothing persisted).
    cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=rendered.stdout)
