"""The real test rig: a Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)
and a Prometheus, run as plain processes on loopback from binaries that ``tests/rig/build.sh`` builds.

Nothing here is mocked: tests talk to the same API server, admission chain, RBAC and PromQL engine that
production uses. Only the data plane is absent (kwok fakes the kubelets), which is why tests run real
model-server processes on loopback next to the cluster.
"""

from typing import TYPE_CHECKING, Any

from tests.rig.paths import RigMissingError

if TYPE_CHECKING:
    from tests.rig.cluster import Cluster
    from tests.rig.prometheus import Prometheus

__all__ = ["Cluster", "Prometheus", "RigMissingError"]


def __getattr__(name: str) -> Any:
    """``Cluster`` and ``Prometheus`` load on first use: they pull in the kubernetes client (a second or more),
    and ``python -m tests.rig.demo_cluster`` must own Ctrl-C from its first moment."""
    if name == "Cluster":
        from tests.rig.cluster import Cluster

        return Cluster
    if name == "Prometheus":
        from tests.rig.prometheus import Prometheus

        return Prometheus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
