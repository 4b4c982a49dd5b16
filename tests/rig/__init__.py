"""The real test rig: a Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)
and a Prometheus, run as plain processes on loopback from binaries that ``tests/rig/build.sh`` builds.

Nothing here is mocked: tests talk to the same API server, admission chain, RBAC and PromQL engine that
production uses. Only the data plane is absent (kwok fakes the kubelets), which is why tests run real
model-server processes on loopback next to the cluster.
"""

from tests.rig.cluster import Cluster
from tests.rig.paths import RigMissingError
from tests.rig.prometheus import Prometheus

__all__ = ["Cluster", "Prometheus", "RigMissingError"]
