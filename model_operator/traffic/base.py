"""The traffic-router interface (after Argo Rollouts' and Flagger's): four small methods."""

from __future__ import annotations

import math
from typing import Protocol

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
