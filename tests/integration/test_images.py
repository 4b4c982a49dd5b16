"""The container images as ``tests/rig/build_images.sh`` built them from Dockerfile.server and Dockerfile.operator,
run without a kubelet but under what the operator's Deployments and the chart ask of a pod: UID/GID 65532, no
capabilities, a read-only root filesystem, an empty writable /tmp (``tests.rig.images.MountedImage``).

The build is not part of the tests (it takes minutes): a missing image fails with the command that builds it.
"""

from __future__ import annotations

import functools
import http.server
import json
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from model_server.bundle import ModelManifest
from model_server.training import load_config, train
from tests.rig import Cluster, RigMissingError
from tests.rig.cluster import ISSUER
from tests.rig.images import BuiltImage, MountedImage, built_images, process_ids, process_root_entries
from tests.support.helm import CHART, Helm
from tests.support.rollouts import CHART_LEASE_TIMINGS, model_deployment, wait_for
from tests.support.servers import REPO, free_port

pytestmark = pytest.mark.integration

NONROOT = (65532, 65532)
ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
READY_TIMEOUT = 90.0  # imports without bytecode on a loaded 2-core machine


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    try:
        return built_images()
    except RigMissingError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManifest, Path]:
    """iris 1.0.0 as ``modelrollout train`` writes it: what the server image is given to serve."""
    root = tmp_path_factory.mktemp("image-bundles")
    manifest = train(load_config(REPO / "examples" / "iris-v1.yaml"), root / "iris-1.0.0")
    return manifest, root / "iris-1.0.0"


@pytest.fixture(scope="module")
def bundle_url(bundle: tuple[ModelManifest, Path]) -> Iterator[str]:
    """The bundle over HTTP, as a pod fetches it (the server downloads it into its /tmp)."""
    handler = functools.partial(QuietHandler, directory=str(bundle[1].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{bundle[1].name}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def oci_index(archive: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index.json, the image config) of an OCI archive."""
    with tarfile.open(archive) as tar:

        def blob(path: str) -> dict[str, Any]:
            member = tar.extractfile(path)
            assert member is not None, f"{path} missing in {archive}"
            loaded: dict[str, Any] = json.load(member)
            return loaded

        index = blob("index.json")
        digest: str = index["manifests"][0]["digest"]
        manifest = blob(f"blobs/{digest.replace(':', '/')}")
        config = blob(f"blobs/{manifest['config']['digest'].replace(':', '/')}")
    return index, config


@pytest.mark.parametrize("name", ["model-server", "operator"])
def test_archive_imports_under_its_reference_and_digest(images: dict[str, BuiltImage], name: str) -> None:
    """The OCI archive names the image twice for ``ctr images import``: REF and REPOSITORY@DIGEST (containerd
    reads ``io.containerd.image.name``), both the manifest images.env records; the config is the non-root one."""
    image = images[name]
    index, config = oci_index(image.archive)
    names = {entry["annotations"]["io.containerd.image.name"]: entry["digest"] for entry in index["manifests"]}
    assert names == {image.reference: image.digest, image.pinned: image.digest}
    assert config["os"] == "linux"
    assert config["config"]["User"] == "65532:65532"
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    assert env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")
    entrypoint = {"model-server": ["modelrollout", "serve"], "operator": ["modelrollout-operator"]}[name]
    assert config["config"]["Entrypoint"] == entrypoint


def test_model_server_image_serves_a_bundle_read_only_as_nonroot(
    images: dict[str, BuiltImage], bundle: tuple[ModelManifest, Path], bundle_url: str, tmp_path: Path
) -> None:
    """The image's entrypoint with the operator's arguments and two workers: it downloads the bundle into /tmp,
    verifies the pinned digest, answers /health/ready, /predict and /metrics (multi-process metrics under
    /tmp), as 65532 on a read-only root, and drains on SIGTERM with exit code 0."""
    manifest, _ = bundle
    port = free_port()
    log = tmp_path / "model-server.log"
    args = [bundle_url, "--host", "127.0.0.1", "--port", str(port), "--track", "stable"]
    args += ["--expected-digest", manifest.digest, "--workers", "2"]
    with MountedImage(images["model-server"].reference, tmp_path) as image:
        help_run = image.run(["--help"])
        assert help_run.returncode == 0, help_run.stderr
        assert "BUNDLE_URI" in help_run.stdout.upper()
        process = image.spawn(args, log)
        try:
            url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            wait_for(lambda: _ready(process, url, log), READY_TIMEOUT, "the model server in its image to be ready")
            print(f"model-server image ready in {time.monotonic() - started:.1f}s")
            assert process_ids(process.pid) == NONROOT
            tmp = process_root_entries(process.pid, "/tmp")
            assert any(entry.startswith("bundle-") for entry in tmp), tmp
            assert any(entry.startswith("modelserver-metrics-") for entry in tmp), tmp
            with pytest.raises(OSError, match="Read-only file system"):
                Path(f"/proc/{process.pid}/root/opt/venv/written-by-test").write_text("x")
            answer = httpx.post(f"{url}/predict", json=ROW, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["class"] == "setosa"
            assert answer.json()["version"] == manifest.version
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            assert 'modelserver_requests_total{code="200",endpoint="predict"' in metrics
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(40)
    assert code == 0, _tail(log)
    assert "Traceback" not in log.read_text(errors="replace"), _tail(log)


def _check_running(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        raise AssertionError(f"the image's process exited with {process.returncode}:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def _ready(process: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    _check_running(process, log)
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


RELEASE = "img"  # fullnameOverride: ServiceAccount, ClusterRole, leader-election Role and Lease "img-operator"
SYSTEM = "img-system"


@pytest.fixture(scope="module")
def service_account(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The chart's ServiceAccount as a pod sees it: a directory with ``token``, ``ca.crt`` and ``namespace``."""
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.wait_for_crds()
    cluster.create_namespace(SYSTEM)
    tmp = tmp_path_factory.mktemp("image-operator")
    helm = Helm(tmp / "helm", cluster.kubeconfig)
    values = {"fullnameOverride": RELEASE, "operator": {"replicas": 0}}
    helm.run("install", RELEASE, str(CHART), "-n", SYSTEM, *helm.values_args(values), "--wait")
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=3600))
    core = k8s.CoreV1Api(cluster.api_client)
    status = core.create_namespaced_service_account_token(f"{RELEASE}-operator", SYSTEM, request).status
    assert status is not None and status.token, "TokenRequest returned no token"
    directory = tmp / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(status.token)
    (directory / "ca.crt").write_bytes(cluster.pki.ca.cert.read_bytes())
    (directory / "namespace").write_text(SYSTEM)
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)
    yield directory
    helm.run("uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)


def test_operator_image_reconciles_in_cluster(
    images: dict[str, BuiltImage],
    cluster: Cluster,
    service_account: Path,
    namespace: str,
    bundle: tuple[ModelManifest, Path],
    tmp_path: Path,
) -> None:
    """The operator image's entrypoint with in-cluster configuration (KUBERNETES_SERVICE_* and the mounted
    ServiceAccount token, as in a pod): it takes the Lease and turns a ModelDeployment into its stable
    Deployment, which runs the model-server image pinned by digest."""
    manifest, bundle_dir = bundle
    host, _, port = cluster.server.removeprefix("https://").partition(":")
    metrics_port, liveness_port = free_port(), free_port()
    env = {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "POD_NAME": f"img-operator-{uuid.uuid4().hex[:5]}",
        "POD_NAMESPACE": SYSTEM,
        "MODELROLLOUT_LEASE_NAME": f"{RELEASE}-operator",
        "MODELROLLOUT_METRICS_PORT": str(metrics_port),
        "MODELROLLOUT_LIVENESS_PORT": str(liveness_port),
        **CHART_LEASE_TIMINGS,
    }
    log = tmp_path / "operator.log"
    # /var/run links to /run in the image: the token goes where the kubernetes client looks for it.
    secrets = {"/run/secrets/kubernetes.io/serviceaccount": service_account}
    with MountedImage(images["operator"].reference, tmp_path) as image:
        process = image.spawn([], log, env=env, secrets=secrets)
        try:
            wait_for(lambda: _leads(process, metrics_port, log), 90, "the operator in its image to lead")
            assert process_ids(process.pid) == NONROOT
            assert httpx.get(f"http://127.0.0.1:{liveness_port}/healthz", timeout=5).status_code == 200
            model = {"name": manifest.name, "version": manifest.version, "uri": f"file://{bundle_dir}",
                     "digest": manifest.digest}  # fmt: skip
            body = model_deployment("iris", namespace, model, "http://127.0.0.1:9", [{"setWeight": 100}], {})
            body["spec"]["image"] = images["model-server"].pinned
            custom = k8s.CustomObjectsApi(cluster.api_client)
            custom.create_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments", body)
            apps = k8s.AppsV1Api(cluster.api_client)
            deployment = wait_for(
                lambda: _deployment(apps, namespace, "iris-stable"), 60, "the operator to create iris-stable"
            )
            assert deployment.spec.template.spec.containers[0].image == images["model-server"].pinned
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(40)
    assert code == 0, _tail(log)


def _leads(process: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    _check_running(process, log)
    try:
        return "modelrollout_leader 1.0" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return False


def _deployment(apps: k8s.AppsV1Api, namespace: str, name: str) -> Any:
    try:
        return apps.read_namespaced_deployment(name, namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
