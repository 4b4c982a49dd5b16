"""Traffic providers behind one Protocol; ``router_for`` picks one by the spec's ``traffic.provider``."""

from __future__ import annotations

from collections.abc import Callable

from model_operator.kube.client import Kube
from model_operator.traffic.base import TrafficRouter
from model_operator.traffic.gateway_api import GatewayAPIRouter
from model_operator.traffic.istio import IstioRouter
from model_operator.traffic.replicas import ReplicaRouter

ROUTERS: dict[str, Callable[[Kube], TrafficRouter]] = {
    GatewayAPIRouter.name: GatewayAPIRouter,
    IstioRouter.name: IstioRouter,
    ReplicaRouter.name: ReplicaRouter,
}


def router_for(provider: str, kube: Kube) -> TrafficRouter:
    return ROUTERS[provider](kube)


__all__ = ["ROUTERS", "TrafficRouter", "router_for"]
