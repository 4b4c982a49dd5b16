"""The traffic-router interface (after Argo Rollouts' and Flagger's): four small methods."""

from __future__ import annotations

from typing import Protocol

from model_operator.kube.manifests import Owner
from model_operator.spec import ModelDeploymentSpec


class TrafficRouter(Protocol):
    name: str

    def set_weight(self, owner: Owner, spec: ModelDeploymentSpec, weight: int) -> None:
        """Send ``weight`` percent of traffic to the canary. Idempotent."""
        ...

    def current_weight(self, owner: Owner) -> int | None:
        """The canary weight in effect now; None when the route does not exist yet. Idempotent."""
        ...

    def replicas(self, total: int, weight: int, canary_present: bool) -> tuple[int, int]:
        """(stable, canary) replica counts for ``total`` replicas at ``weight``. Pure."""
        ...

    def note(self) -> str | None:
        """What users should know about how weights are realised, for the status. Pure."""
        ...
