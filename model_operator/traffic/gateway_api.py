"""Gateway API: one HTTPRoute rule with two weighted backendRefs (stable and the candidate's Service) and,
for shadow rollouts, a RequestMirror filter copying a share of requests to the candidate."""

from __future__ import annotations

from typing import Any

from model_operator.kube.client import Kube
from model_operator.kube.manifests import CANDIDATE_TRACKS, Owner
from model_operator.spec import ModelDeploymentSpec
from model_operator.traffic.base import keep_stable_size_candidate, remove_owned

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
PORT = 80


def httproute(
    owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: int = 0, track: str = "canary"
) -> dict[str, Any]:
    """The route sending ``weight`` percent to the ``track`` Service and copying ``mirror_percent`` percent
    of all requests to it; the gateway drops mirrored responses, so users only see the weighted backends."""
    if not 0 <= weight <= 100 or not 0 <= mirror_percent <= 100:
        raise ValueError(f"weight and mirror percentage must be within 0..100, got {weight} and {mirror_percent}")
    gateway = spec.traffic.gateway_api
    candidate = owner.object_name(track)
    rule: dict[str, Any] = {
        "backendRefs": [
            {"name": owner.object_name("stable"), "port": PORT, "weight": 100 - weight},
            {"name": candidate, "port": PORT, "weight": weight},
        ]
    }
    if mirror_percent:
        mirror: dict[str, Any] = {"backendRef": {"name": candidate, "port": PORT}}
        if mirror_percent < 100:  # absent means all requests, and is what every implementation supports
            mirror["percent"] = mirror_percent
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    route_spec: dict[str, Any] = {"parentRefs": [ref.wire() for ref in gateway.parent_refs], "rules": [rule]}
    if gateway.hostnames:
        route_spec["hostnames"] = gateway.hostnames
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": owner.metadata(owner.name), "spec": route_spec}


def canary_weight(route: dict[str, Any], candidates: set[str]) -> int | None:
    """The share, percent, of the route's weight on the ``candidates`` Services."""
    refs = [ref for rule in route.get("spec", {}).get("rules", []) for ref in rule.get("backendRefs", [])]
    total: int = sum(ref.get("weight", 1) for ref in refs)
    if not refs or total == 0:
        return None
    canary: int = sum(ref.get("weight", 1) for ref in refs if ref.get("name") in candidates)
    return round(100 * canary / total)


def mirror_share(request_mirror: dict[str, Any]) -> float:
    """The share of requests one ``requestMirror`` copies, percent: ``percent``, or ``fraction`` (Gateway
    API ≥ 1.2), else all of them."""
    if "percent" in request_mirror:
        return float(request_mirror["percent"])
    fraction = request_mirror.get("fraction")
    if fraction:
        return 100.0 * int(fraction["numerator"]) / int(fraction.get("denominator", 100))
    return 100.0


def mirrors(route: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """Every RequestMirror filter of the route's rules: the backendRef it copies to and its share, percent."""
    filters = [f for rule in route.get("spec", {}).get("rules", []) for f in rule.get("filters") or []]
    found = [f.get("requestMirror") or {} for f in filters if f.get("type") == "RequestMirror"]
    return [(m.get("backendRef") or {}, mirror_share(m)) for m in found]


def mirror_percent(route: dict[str, Any]) -> float:
    """The share of requests the route mirrors, percent (0: none)."""
    return max((share for _, share in mirrors(route)), default=0.0)


class GatewayAPIRouter:
    name = "gatewayAPI"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def set_weight(
        self, owner: Owner, spec: ModelDeploymentSpec, weight: int, mirror_percent: int = 0, track: str = "canary"
    ) -> None:
        self._kube.apply(httproute(owner, spec, weight, mirror_percent, track))

    def current_weight(self, owner: Owner) -> int | None:
        route = self._kube.get(API_VERSION, KIND, owner.namespace, owner.name)
        return None if route is None else canary_weight(route, {owner.object_name(t) for t in CANDIDATE_TRACKS})

    def verify_weight(self, owner: Owner, weight: int) -> bool | None:
        return self.current_weight(owner) == weight

    def remove(self, owner: Owner) -> None:
        remove_owned(self._kube, API_VERSION, KIND, owner)

    def replicas(self, total: int, weight: int, capacity: int, canary_present: bool) -> tuple[int, int]:
        return keep_stable_size_candidate(total, max(weight, capacity), canary_present)

    def note(self) -> str | None:
        return None
