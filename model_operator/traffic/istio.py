"""Istio: one VirtualService whose single HTTP route splits by weight between the stable and canary Services.

No DestinationRule: the tracks are separate Services (``<md>-stable`` / ``<md>-canary``), so the route
names them as destinations directly; subsets (and the DestinationRule that defines them) would only be
needed to split one Service by pod labels. Destinations are fully qualified, as Istio recommends: a short
name is resolved against the VirtualService's namespace, which stops being obvious once a gateway from
another namespace is involved.
"""

from __future__ import annotations

from typing import Any

from model_operator.kube.client import Kube
from model_operator.kube.manifests import CANDIDATE_TRACKS, Owner
from model_operator.spec import ModelDeploymentSpec
from model_operator.traffic.base import keep_stable_size_candidate, remove_owned

API_VERSION = "networking.istio.io/v1"
KIND = "VirtualService"
ROUTE_NAME = "modelrollout"
PORT = 80


def service_host(owner: Owner, track: str | None = None) -> str:
    """The in-cluster DNS name of one of the ModelDeployment's Services (the root Service for no track)."""
    return f"{owner.object_name(track)}.{owner.namespace}.svc.cluster.local"


def _destination(owner: Owner, track: str) -> dict[str, Any]:
    return {"host": service_host(owner, track), "port": {"number": PORT}}


def virtual_service(
    owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: float | None = None, track: str = "canary"
) -> dict[str, Any]:
    """The VirtualService sending ``weight`` percent to the candidate's ``track`` Service, the rest to stable.

    ``mirror_percent`` (for shadow rollouts) also copies that share of requests to the candidate; Istio
    discards the mirrored responses, so users only ever see what the weighted destinations answer.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be within 0..100, got {weight}")
    istio = spec.traffic.istio
    route: dict[str, Any] = {
        "name": ROUTE_NAME,
        "route": [
            {"destination": _destination(owner, "stable"), "weight": 100 - weight},
            {"destination": _destination(owner, track), "weight": weight},
        ],
    }
    if mirror_percent is not None:
        if not 0 < mirror_percent <= 100:
            raise ValueError(f"mirror percentage must be within (0, 100], got {mirror_percent}")
        route["mirror"] = _destination(owner, track)
        route["mirrorPercentage"] = {"value": float(mirror_percent)}
    vs_spec: dict[str, Any] = {"hosts": istio.hosts or [service_host(owner)], "http": [route]}
    if istio.gateways:
        vs_spec["gateways"] = istio.gateways
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": owner.metadata(owner.name), "spec": vs_spec}


def canary_weight(vs: dict[str, Any], canary_hosts: set[str]) -> int | None:
    """The canary's share, percent, of the route this router writes (named ``ROUTE_NAME``, else the first).

    Istio's rules for omitted weights: a lone destination takes everything, otherwise it takes nothing.
    """
    routes = vs.get("spec", {}).get("http") or []
    ours = next((r for r in routes if r.get("name") == ROUTE_NAME), routes[0] if routes else {})
    destinations = ours.get("route") or []
    default = 100 if len(destinations) == 1 else 0
    weights = [(d.get("destination", {}).get("host"), d.get("weight", default)) for d in destinations]
    total: int = sum(w for _, w in weights)
    if total <= 0:
        return None
    canary: int = sum(w for host, w in weights if host in canary_hosts)
    return round(100 * canary / total)


class IstioRouter:
    name = "istio"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def set_weight(
        self, owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: int = 0, track: str = "canary"
    ) -> None:
        self._kube.apply(virtual_service(owner, spec, weight, mirror_percent or None, track))

    def current_weight(self, owner: Owner) -> int | None:
        found = self._kube.get(API_VERSION, KIND, owner.namespace, owner.name)
        # the short name too: a VirtualService edited by hand may name the Service relative to its namespace
        canary = {name for t in CANDIDATE_TRACKS for name in (service_host(owner, t), owner.object_name(t))}
        return None if found is None else canary_weight(found, canary)

    def verify_weight(self, owner: Owner, weight: int) -> bool | None:
        return self.current_weight(owner) == weight

    def remove(self, owner: Owner) -> None:
        remove_owned(self._kube, API_VERSION, KIND, owner)

    def replicas(self, total: int, weight: int, capacity: int, canary_present: bool) -> tuple[int, int]:
        return keep_stable_size_candidate(total, max(weight, capacity), canary_present)

    def note(self) -> str | None:
        return None
