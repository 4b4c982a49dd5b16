"""Replica ratio: for clusters with neither a Gateway nor a mesh. The root Service selects both tracks,
so the canary's share of traffic is roughly its share of ready pods — coarse, and said so in status.

Below 100% both tracks keep at least one pod: a canary without a pod would get no request and could never
be judged, so with ``replicas: 1`` the canary runs one pod next to stable's (half the requests, whatever
the step's weight) instead of none."""

from __future__ import annotations

from model_operator.kube.client import Kube
from model_operator.kube.manifests import Owner
from model_operator.spec import ModelDeploymentSpec


def split(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) pods whose ratio is closest to ``weight``; below 100% each keeps at least one pod
    (so one replica becomes two pods while a canary has weight)."""
    if weight <= 0:
        return total, 0
    if weight >= 100:
        return 0, total
    canary = max(1, min(total - 1, round(total * weight / 100)))
    return max(1, total - canary), canary


class ReplicaRouter:
    name = "replicas"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def set_weight(
        self, owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: int = 0, track: str = "canary"
    ) -> None:
        """Nothing to route: the Deployments' replica counts (see ``replicas``) are the weights. (No mirror:
        the spec refuses Shadow and BlueGreen with this provider.)"""

    def current_weight(self, owner: Owner) -> int | None:
        counts = []
        for track in ("stable", "canary"):
            found = self._kube.get("apps/v1", "Deployment", owner.namespace, owner.object_name(track))
            counts.append(0 if found is None else int(found.get("spec", {}).get("replicas", 0)))
        total = sum(counts)
        return None if total == 0 else round(100 * counts[1] / total)

    def verify_weight(self, owner: Owner, weight: int) -> bool | None:
        """No route object: the root Service (written before the route) selecting every pod is the route."""
        return None

    def remove(self, owner: Owner) -> None:
        """Nothing of its own: the root Service and the Deployments belong to every provider."""

    def replicas(self, total: int, weight: int, capacity: int, canary_present: bool) -> tuple[int, int]:
        """Pods are the weights here, so they follow ``weight``; sizing ahead would move traffic early."""
        return split(total, weight if canary_present else 0)

    def note(self) -> str | None:
        return "replica-ratio routing: the canary weight is approximated by its share of pods"
