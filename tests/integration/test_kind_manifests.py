"""The kind quickstart (docs/quickstart-kind.md, manifests/kind/) and the example ModelDeployments
(manifests/*.yaml: canary, blue-green, shadow) against the real API server.

The quickstart itself needs Docker and is not run here. What is checked instead: every Kubernetes object it
applies or shows, and every example, goes through ``kubectl apply --server-side --dry-run=server`` — schema,
the CRD's CEL rules and admission (Pod Security included) — and the pieces agree with each other (ports,
names, labels).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from model_operator.analysis.checks import Scope, render
from model_operator.spec import ModelDeploymentSpec
from model_server.bundle import ModelManifest
from tests.rig import Cluster, Prometheus

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "manifests" / "kind"
QUICKSTART = REPO / "docs" / "quickstart-kind.md"
NOT_OBJECTS = {"kind-config.yaml", "kube-prometheus-stack-values.yaml"}
OBJECT_FILES = sorted(path for path in KIND.glob("*.yaml") if path.name not in NOT_OBJECTS)
EXAMPLES = sorted((REPO / "manifests").glob("*.yaml"))
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
NODE_IMAGE = re.compile(r"kindest/node:v[0-9.]+@sha256:[0-9a-f]{64}")


def documents(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in documents(path.read_text()) if is_object(doc)]


def find(path: Path, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects(path) if o["kind"] == kind and o["metadata"]["name"] == name)


def quickstart_objects() -> list[dict[str, Any]]:
    """The Kubernetes objects in the quickstart's ```yaml blocks (other YAML there is not an object)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", QUICKSTART.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [doc for block in blocks for doc in documents(block) if is_object(doc)]


def dry_run(cluster: Cluster, text: str, *, check: bool = True) -> tuple[int, str, str]:
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text, check=check)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def kind_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The rig with our CRD, and — for real — every namespace the quickstart's objects live in.

    A dry-run Namespace is not created and namespaced objects need theirs, so each is created with the labels
    our manifests give it (Pod Security ``restricted`` on ``models``); all are deleted afterwards.
    """
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.wait_for_crds()
    everything = [obj for path in OBJECT_FILES + EXAMPLES for obj in objects(path)] + quickstart_objects()
    declared = {o["metadata"]["name"]: o["metadata"].get("labels", {}) for o in everything if o["kind"] == "Namespace"}
    used = {o["metadata"]["namespace"] for o in everything if "namespace" in o["metadata"]}
    names = sorted(used | declared.keys())
    for name in names:
        cluster.create_namespace(name, declared.get(name, {}))
    yield cluster
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.mark.parametrize("path", OBJECT_FILES, ids=lambda path: path.name)
def test_every_manifest_is_accepted_by_the_api_server(kind_cluster: Cluster, path: Path) -> None:
    _, stdout, stderr = dry_run(kind_cluster, path.read_text())
    applied = [line for line in stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(objects(path)), stdout
    assert "Warning" not in stderr, stderr  # no deprecation, unknown-field or PodSecurity warnings


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_is_accepted_by_the_api_server(kind_cluster: Cluster, path: Path) -> None:
    _, stdout, stderr = dry_run(kind_cluster, path.read_text())
    assert stdout.count("(server dry run)") == len(objects(path)) > 0, stdout
    assert "Warning" not in stderr, stderr


def test_the_examples_cover_every_strategy() -> None:
    strategies = {
        obj["spec"]["strategy"]["type"]: obj["spec"]["traffic"]["provider"]
        for path in EXAMPLES
        for obj in objects(path)
        if obj["kind"] == "ModelDeployment"
    }
    assert strategies.keys() == {"Canary", "BlueGreen", "Shadow"}
    assert "replicas" not in {strategies["BlueGreen"], strategies["Shadow"]}


def test_the_model_store_meets_pod_security_restricted(kind_cluster: Cluster) -> None:
    """Enforcement applies to Pods (a Deployment only warns), so its pod is dry-run as well — and, as a
    control, the same pod without its security settings, which the namespace must refuse."""
    deployment = find(KIND / "model-store.yaml", "Deployment", "model-store")
    _, _, stderr = dry_run(kind_cluster, yaml.safe_dump(deployment))
    assert "PodSecurity" not in stderr, stderr

    spec = deployment["spec"]["template"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "model-store", "namespace": "models"}}
    code, _, stderr = dry_run(kind_cluster, yaml.safe_dump({**pod, "spec": spec}), check=False)
    assert code == 0 and "PodSecurity" not in stderr, stderr

    bare = {**spec, "securityContext": {}, "containers": [{**c, "securityContext": {}} for c in spec["containers"]]}
    code, _, stderr = dry_run(kind_cluster, yaml.safe_dump({**pod, "spec": bare}), check=False)
    assert code != 0 and 'violates PodSecurity "restricted' in stderr, stderr


def test_the_quickstarts_yaml_objects_are_accepted(kind_cluster: Cluster) -> None:
    shown = quickstart_objects()
    assert shown, f"no Kubernetes object in a ```yaml block of {QUICKSTART.name}"
    _, stdout, stderr = dry_run(kind_cluster, "\n---\n".join(yaml.safe_dump(obj) for obj in shown))
    assert stdout.count("(server dry run)") == len(shown), stdout
    assert "Warning" not in stderr, stderr


def test_trained_bundles_fit_the_model_stores_configmaps(kind_cluster: Cluster, bundles: dict[str, Path]) -> None:
    """`kubectl create configmap <model>-<version> --from-file=<bundle>/` works for each bundle the quickstart
    trains (a ConfigMap holds 1 MiB), and the store mounts each under the name the model server asks for."""
    store = find(KIND / "model-store.yaml", "Deployment", "model-store")["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in store["volumes"] if "configMap" in v}
    mounts = {
        volumes[m["name"]]: m["mountPath"] for m in store["containers"][0]["volumeMounts"] if m["name"] in volumes
    }
    for example in ("iris-v1", "iris-v2", "iris-v3-constant"):
        manifest = ModelManifest.model_validate_json((bundles[example] / "model.json").read_bytes())
        name = f"{manifest.name}-{manifest.version}"
        assert mounts.get(name) == f"/usr/share/nginx/html/{name}", f"the model store does not serve {name}"
        kind_cluster.kubectl(
            "create", "configmap", name, f"--from-file={bundles[example]}/", "-n", "models", "--dry-run=server"
        )


def test_iris_uses_the_store_the_gateway_and_prometheus_of_the_quickstart() -> None:
    md = find(KIND / "iris.yaml", "ModelDeployment", "iris")
    spec = ModelDeploymentSpec.model_validate(md["spec"])
    uri = urlparse(spec.model.uri)
    service = find(KIND / "model-store.yaml", "Service", "model-store")
    assert uri.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert uri.path == f"/{spec.model.name}-{spec.model.version}/"
    gateway = find(KIND / "gateway.yaml", "Gateway", "public-gateway")
    refs = [(ref.name, ref.namespace) for ref in spec.traffic.gateway_api.parent_refs]
    assert refs == [(gateway["metadata"]["name"], gateway["metadata"]["namespace"])]
    assert spec.analysis.prometheus.address == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    # the quickstart builds and loads this image, and replaces the placeholder digest with sed
    doc = QUICKSTART.read_text()
    assert f"-t {spec.image} ." in doc
    assert spec.model.digest == PLACEHOLDER_DIGEST and "s/sha256:0\\{64\\}/" in doc


def test_iris_custom_checks_are_valid_promql(prometheus: Prometheus) -> None:
    spec = ModelDeploymentSpec.model_validate(find(KIND / "iris.yaml", "ModelDeployment", "iris")["spec"])
    assert spec.analysis.metrics
    for metric in spec.analysis.metrics:
        query = render(metric.query, spec, Scope("models", "iris"), spec.model, None)
        prometheus.query(query)  # raises on a parse error


def test_kind_config_has_the_documented_shape() -> None:
    text = (KIND / "kind-config.yaml").read_text()
    config = yaml.safe_load(text)
    assert (config["apiVersion"], config["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker", "worker"]
    mappings = config["nodes"][0]["extraPortMappings"]
    node_port = find(KIND / "gateway.yaml", "Service", "public-gateway-nodeport")["spec"]["ports"][0]["nodePort"]
    assert [(m["containerPort"], m["hostPort"]) for m in mappings] == [(node_port, 8080)]
    pinned = NODE_IMAGE.findall(text)
    assert pinned, "kind-config.yaml names no node image pinned by digest"
    assert f"--image {pinned[0]}" in QUICKSTART.read_text(), "the quickstart creates the cluster with another image"
    assert f"kind load docker-image modelrollout/server:0.1.0 modelrollout/operator:0.1.0 --name {config['name']}" in (
        QUICKSTART.read_text()
    )


def test_kube_prometheus_stack_values_select_everything_and_load_our_dashboards() -> None:
    values = yaml.safe_load((KIND / "kube-prometheus-stack-values.yaml").read_text())
    prometheus = values["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "probe", "scrapeConfig", "rule"):
        assert prometheus[f"{kind}SelectorNilUsesHelmValues"] is False, kind
    assert prometheus["scrapeInterval"] == "10s"
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    chart = yaml.safe_load((REPO / "charts" / "modelrollout" / "values.yaml").read_text())["dashboards"]
    assert sidecar["enabled"] is True and sidecar["searchNamespace"] == "ALL"
    assert (sidecar["label"], sidecar["labelValue"]) == (chart["label"], chart["labelValue"])
