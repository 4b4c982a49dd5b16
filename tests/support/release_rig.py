"""An operator of its own for one integration module: the chart installed as a release with its own
``fullnameOverride`` (ServiceAccount, ClusterRole and the Role's one Lease named ``<release>-operator``),
the operator process running on that ServiceAccount's token, and a namespace for its ModelDeployments.

Modules that use it neither need nor disturb the ``modelrollout`` release other modules install into the
same namespace, and each operator holds a Lease of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s

from model_server.bundle import ModelManifest
from model_server.training import load_config, train
from tests.conftest import EXAMPLES
from tests.rig import Cluster, Prometheus
from tests.support.helm import CHART, Helm
from tests.support.rollouts import LEASE_NAMESPACE, OperatorProcess, wait_for
from tests.support.servers import REPO

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modeldeployments"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@dataclass
class ReleaseRig:
    cluster: Cluster
    prometheus: Prometheus
    operator: OperatorProcess
    namespace: str
    bundles: Path
    trained: dict[tuple[str, str], ModelManifest] = field(default_factory=dict)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.cluster.api_client)

    def md(self, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        )

    def status(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.md(name).get("status") or {})

    def wait_phase(self, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        return wait_for(reached, timeout, f"{name} phase in {phases}")

    def annotate(self, name: str, command: str, stamp: str) -> None:
        """Send a command annotation (``modelrollout.io/<command>: <stamp>``), as ``modelrollout <command>`` does."""
        patch = {"metadata": {"annotations": {f"{GROUP}/{command}": stamp}}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise

    def events(self, name: str) -> list[k8s.CoreV1Event]:
        items = k8s.CoreV1Api(self.cluster.api_client).list_namespaced_event(self.namespace).items
        return [e for e in items if e.involved_object.name == name]

    def bundle(self, stem: str, version: str) -> tuple[ModelManifest, Path]:
        """``examples/<stem>.yaml`` trained with this version label (once)."""
        out = self.bundles / f"{stem}-{version}"
        if (stem, version) not in self.trained:
            config = load_config(EXAMPLES / f"{stem}.yaml").model_copy(update={"version": version})
            self.trained[(stem, version)] = train(config, out)
        return self.trained[(stem, version)], out


@contextmanager
def release_rig(
    cluster: Cluster, prometheus: Prometheus, tmp: Path, release: str, namespace: str
) -> Iterator[ReleaseRig]:
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io", "--timeout=60s")
    cluster.create_namespace(LEASE_NAMESPACE, RESTRICTED)
    cluster.create_namespace(namespace, RESTRICTED)
    helm = Helm(tmp / "helm", cluster.kubeconfig)
    values = {"fullnameOverride": release, "operator": {"replicas": 0}}
    # upgrade --install: a release left behind by an interrupted run is taken over, not an error
    helm.run("upgrade", "--install", release, str(CHART), "-n", LEASE_NAMESPACE, *helm.values_args(values), "--wait")
    kubeconfig = cluster.mint_service_account_kubeconfig(LEASE_NAMESPACE, f"{release}-operator")
    operator = OperatorProcess(kubeconfig, tmp / "operator.log", env={"MODELROLLOUT_LEASE_NAME": f"{release}-operator"})
    try:
        operator.start()
        yield ReleaseRig(cluster, prometheus, operator, namespace, tmp / "bundles")
    finally:
        operator.stop()
        helm.run("uninstall", release, "-n", LEASE_NAMESPACE, "--wait", check=False)
