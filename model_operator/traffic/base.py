"""The traffic-router interface (after Argo Rollouts' and Flagger's): small methods, one file per provider."""

from __future__ import annotations

import math
from typing import Protocol

from model_operator.kube.client import Kube
from model_operator.kube.manifests import Owner
from model_operator.spec import ModelDeploymentSpec


class TrafficRouter(Protocol):
    name: str

    def set_weight(
        self, owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: int = 0, track: str = "canary"
    ) -> None:
        """Send ``weight`` percent of traffic to the candidate's ``track`` Service and copy ``mirror_percent``
        percent of requests to it (responses discarded). Idempotent."""
        ...

    def current_weight(self, owner: Owner) -> int | None:
        """The candidate's weight in effect now; None when the route does not exist yet. Idempotent."""
        ...

    def verify_weight(self, owner: Owner, weight: int) -> bool | None:
        """Whether the route this router wrote reads back with ``weight`` on the candidate; None when there is
        no route object to read back (the weights are realised some other way). Idempotent."""
        ...

    def remove(self, owner: Owner) -> None:
        """Delete this router's objects that ``owner`` owns: for a ModelDeployment that moved to another
        provider. Absent objects, a resource type the cluster lacks and objects owned by someone else are
        left as they are. Idempotent."""
        ...

    def replicas(self, total: int, weight: int, capacity: int, canary_present: bool) -> tuple[int, int]:
        """(stable, candidate) replica counts for ``total`` replicas at ``weight``, the candidate ready for
        ``capacity`` percent of requests (≥ weight: the next step's share). Pure."""
        ...

    def note(self) -> str | None:
        """What users should know about how weights are realised, for the status. Pure."""
        ...


def keep_stable_size_candidate(total: int, capacity: int, canary_present: bool) -> tuple[int, int]:
    """For routers that split requests, not pods: stable keeps full size (an instant rollback), the
    candidate is sized for its share, at least one pod."""
    if not canary_present:
        return total, 0
    return total, max(1, math.ceil(total * capacity / 100))


def remove_owned(kube: Kube, api_version: str, kind: str, owner: Owner) -> bool:
    """Delete the ``kind`` object named after ``owner`` if ``owner`` owns it (its uid among the object's
    ownerReferences); whether it did. The delete carries the object's uid as a precondition, so an object
    recreated under that name in between is not deleted. Idempotent."""
    found = kube.get(api_version, kind, owner.namespace, owner.name)
    if found is None or not owner.owns(found):
        return False
    kube.delete(api_version, kind, owner.namespace, owner.name, found["metadata"]["uid"])
    return True
