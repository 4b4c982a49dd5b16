"""What a user sets up on a cluster before a rollout, done the user's way on the real node.

The in-cluster model store (bundles from ConfigMaps over plain ``http://``, as in
``docs/quickstart-kind.md``), the chart installed with ``helm install`` from the image built here, and
``ModelDeployment`` manifests for ``kubectl apply``. The store runs the model-server image with Python's
own static file server, so no third image is needed; it meets Pod Security ``restricted`` like the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from model_server.bundle import ModelManifest
from model_server.training import load_config, train
from tests.rig import Cluster, Prometheus
from tests.rig.gateway import Gateway
from tests.rig.podmonitor import scrape_configs
from tests.support.helm import CHART, Helm
from tests.support.servers import REPO

# Analysis for the rig's short stories: every 5 s over 20 s of traffic. Besides the SLO, a check a bad model
# cannot pass even when it answers fast and without errors: with one flower of each species per request
# (``gateway_load.IRIS_ROWS``) a good model spreads its predictions over three classes; iris-v3-constant says
# one class always.
PREDICTIONS = (
    'modelserver_predictions_total{namespace="{{namespace}}",modeldeployment="{{name}}",model="{{model}}",'
    'track="{{track}}",version="{{canary_version}}"}[{{window}}]'
)
ANALYSIS = {
    "interval": "5s",
    "window": "20s",
    "failureLimit": 2,
    "minRequests": 10,
    "onNoData": "pause",
    "slo": {"maxErrorRate": 0.01, "maxLatencyP95": "1s"},
    "metrics": [
        {
            # a good model spreads the load's three species over three classes; the bad one says one always
            "name": "top-class-share",
            "query": f"max(sum by (class) (rate({PREDICTIONS}))) / sum(rate({PREDICTIONS}))",
            "max": 0.6,
        }
    ],
}


CRD = REPO / "crds" / "modeldeployments.yaml"
STORE = "model-store"
SYSTEM = "modelrollout-system"
RELEASE = "modelrollout"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# The chart as these stories install it: monitors on, scraped every 2 s, ticks at most 2 s apart when active.
CHART_VALUES: dict[str, Any] = {"podMonitor": {"enabled": True, "interval": "2s"}, "operator": {"maxTickSeconds": 2}}
STORE_PORT = 8080
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Platform:
    """The cluster as a platform team leaves it: the chart's operator installed with ``helm install`` in
    ``SYSTEM``, Prometheus discovering model servers by the chart's PodMonitor, the gateway up."""

    cluster: Cluster
    helm: Helm
    images: dict[str, str]
    prometheus: Prometheus
    gateway: Gateway


@dataclass(frozen=True)
class Bundle:
    """A trained bundle the store serves at ``<store>/<name>-<version>/``."""

    manifest: ModelManifest
    path: Path

    @property
    def key(self) -> str:
        return f"{self.manifest.name}-{self.manifest.version}"


def train_bundles(root: Path, versions: Mapping[str, str]) -> dict[str, Bundle]:
    """Train ``examples/<stem>.yaml`` as each version (``{version: stem}``) into ``root/<version>``."""
    out = {}
    for version, stem in versions.items():
        config = load_config(REPO / "examples" / f"{stem}.yaml").model_copy(update={"version": version})
        out[version] = Bundle(train(config, root / version), root / version)
    return out


def _volume_name(key: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", key.lower())


def model_store(cluster: Cluster, namespace: str, bundles: Sequence[Bundle], image: str) -> str:
    """Start the store with one ConfigMap per bundle; returns its base URL (the Service's ClusterIP: the
    rig runs no cluster DNS, so model servers are given the address, not the name)."""
    for bundle in bundles:
        cluster.kubectl("-n", namespace, "create", "configmap", bundle.key, f"--from-file={bundle.path}")
    mounts = [{"name": _volume_name(b.key), "mountPath": f"/srv/{b.key}", "readOnly": True} for b in bundles]
    volumes = [{"name": _volume_name(b.key), "configMap": {"name": b.key}} for b in bundles]
    labels = {"app.kubernetes.io/name": STORE}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": STORE, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "files",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "http.server", str(STORE_PORT), "--directory", "/srv"],
                            "ports": [{"name": "http", "containerPort": STORE_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
                            "securityContext": RESTRICTED_CONTAINER,
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": STORE, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    cluster.apply(deployment)
    cluster.apply(service)
    cluster.kubectl("-n", namespace, "rollout", "status", f"deployment/{STORE}", "--timeout=180s")
    found = k8s.CoreV1Api(cluster.api_client).read_namespaced_service(STORE, namespace)
    return f"http://{found.spec.cluster_ip}"


def install_operator(
    cluster: Cluster, helm: Helm, namespace: str, release: str, image: str, values: Mapping[str, Any]
) -> None:
    """``helm install`` the chart with the operator image built here (``repo@sha256:…`` or ``repo:tag``)."""
    repository, _, digest = image.partition("@")
    image_values: dict[str, Any] = {"repository": repository, "pullPolicy": "IfNotPresent"}
    if digest:
        image_values["digest"] = digest
    else:
        repository, _, tag = image.rpartition(":")
        image_values.update(repository=repository, tag=tag)
    operator = {"image": image_values, **dict(values.get("operator", {}))}
    chart_values = {**values, "fullnameOverride": release, "operator": operator}
    helm.run(
        "install", release, str(CHART), "-n", namespace, *helm.values_args(chart_values), "--wait", "--timeout=5m",
        timeout=360,
    )  # fmt: skip


def model_deployment(
    name: str,
    namespace: str,
    bundle: Bundle,
    store: str,
    image: str,
    *,
    prometheus: str,
    gateway: tuple[str, str],
    hostname: str,
    strategy: Mapping[str, Any],
    analysis: Mapping[str, Any],
) -> dict[str, Any]:
    """A ModelDeployment of ``bundle`` from the store, routed by the HTTPRoute on ``gateway``
    (namespace, name) for ``hostname``."""
    manifest = bundle.manifest
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "name": manifest.name,
                "version": manifest.version,
                "uri": f"{store}/{bundle.key}/",
                "digest": manifest.digest,
            },
            "image": image,
            "replicas": 2,
            "strategy": dict(strategy),
            "traffic": {
                "provider": "gatewayAPI",
                "gatewayAPI": {
                    "parentRefs": [{"namespace": gateway[0], "name": gateway[1]}],
                    "hostnames": [hostname],
                },
            },
            "analysis": {**analysis, "prometheus": {"address": prometheus}},
        },
    }


def model_deployment_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The ModelDeployment's ``.status`` as stored on the API server (empty before the first tick)."""
    body = k8s.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
        "modelrollout.io", "v1alpha1", namespace, "modeldeployments", name
    )
    status: dict[str, Any] = body.get("status") or {}
    return status


def discover_model_servers(cluster: Cluster, prometheus: Prometheus, namespace: str) -> None:
    """Point Prometheus at the PodMonitors the chart installed in ``namespace``: Kubernetes service discovery
    with their relabelling, as the Prometheus Operator would configure it, under an account that may only
    read pods (what Prometheus' own RBAC grants for pod discovery)."""
    found = json.loads(cluster.kubectl("-n", namespace, "get", "podmonitors", "-o", "json").stdout)["items"]
    if not found:
        raise AssertionError(f"the chart installed no PodMonitor in {namespace}")
    account = "prometheus"
    for document in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "rig-prometheus-discovery"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "rig-prometheus-discovery"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "rig-prometheus-discovery",
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ):
        cluster.apply(document)
    kubeconfig = cluster.mint_service_account_kubeconfig(namespace, account)
    prometheus.discover([config for monitor in found for config in scrape_configs(monitor, kubeconfig=kubeconfig)])


def install_platform(cluster: Cluster, prometheus: Prometheus, helm: Helm, images: Mapping[str, str]) -> None:
    """What a platform team does once per cluster: the CRD, the operator's namespace (enforcing
    ``restricted``), the chart with the operator image (and the image built for its ``helm test`` pod), and
    Prometheus discovering the model servers."""
    cluster.apply(CRD)
    cluster.wait_for_crds()
    cluster.create_namespace(SYSTEM, RESTRICTED)
    values = {**CHART_VALUES, "tests": {"image": images["helm-test"]}}
    install_operator(cluster, helm, SYSTEM, RELEASE, images["operator"], values)
    discover_model_servers(cluster, prometheus, SYSTEM)


def models_namespace(cluster: Cluster, namespace: str, bundles: Sequence[Bundle], images: Mapping[str, str]) -> str:
    """What a model team does once per namespace: the namespace (enforcing ``restricted``) and a model store
    with ``bundles``. Returns the store's base URL."""
    cluster.create_namespace(namespace, RESTRICTED)
    return model_store(cluster, namespace, bundles, images["model-server"])


def set_up(
    cluster: Cluster,
    prometheus: Prometheus,
    helm: Helm,
    namespace: str,
    bundles: Sequence[Bundle],
    images: Mapping[str, str],
) -> str:
    """Everything before the first ``kubectl apply`` of a ModelDeployment in ``namespace``: the platform and
    one models namespace. Returns the store's base URL."""
    install_platform(cluster, prometheus, helm, images)
    return models_namespace(cluster, namespace, bundles, images)
