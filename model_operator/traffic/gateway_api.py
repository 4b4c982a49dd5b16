"""Gateway API: one HTTPRoute with two weighted backendRefs (stable and canary Services)."""

from __future__ import annotations

import math
from typing import Any

from model_operator.kube.client import Kube
from model_operator.kube.manifests import Owner
from model_operator.spec import ModelDeploymentSpec

API_VERSION = "gateway.networking.k8s.io/v1"


def httproute(owner: Owner, spec: ModelDeploymentSpec, weight: int) -> dict[str, Any]:
    gateway = spec.traffic.gateway_api
    route_spec: dict[str, Any] = {
        "parentRefs": [ref.wire() for ref in gateway.parent_refs],
        "rules": [
            {
                "backendRefs": [
                    {"name": owner.object_name("stable"), "port": 80, "weight": 100 - weight},
                    {"name": owner.object_name("canary"), "port": 80, "weight": weight},
                ]
            }
        ],
    }
    if gateway.hostnames:
        route_spec["hostnames"] = gateway.hostnames
    return {"apiVersion": API_VERSION, "kind": "HTTPRoute", "metadata": owner.metadata(owner.name), "spec": route_spec}


def canary_weight(route: dict[str, Any], canary_service: str) -> int | None:
    refs = [ref for rule in route.get("spec", {}).get("rules", []) for ref in rule.get("backendRefs", [])]
    total: int = sum(ref.get("weight", 1) for ref in refs)
    if not refs or total == 0:
        return None
    canary: int = sum(ref.get("weight", 1) for ref in refs if ref.get("name") == canary_service)
    return round(100 * canary / total)


class GatewayAPIRouter:
    name = "gatewayAPI"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def set_weight(self, owner: Owner, spec: ModelDeploymentSpec, weight: int) -> None:
        self._kube.apply(httproute(owner, spec, weight))

    def current_weight(self, owner: Owner) -> int | None:
        route = self._kube.get(API_VERSION, "HTTPRoute", owner.namespace, owner.name)
        return None if route is None else canary_weight(route, owner.object_name("canary"))

    def replicas(self, total: int, weight: int, canary_present: bool) -> tuple[int, int]:
        """Stable keeps full size (instant rollback); the canary is sized for its share, at least 1 pod."""
        if not canary_present:
            return total, 0
        return total, max(1, math.ceil(total * weight / 100))

    def note(self) -> str | None:
        return None
