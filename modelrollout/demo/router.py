"""The local gateway: reads the HTTPRoute the operator wrote into ``LocalKube`` and picks a backend.

In a cluster, a Gateway implementation (Envoy, …) watches the HTTPRoute and splits traffic by its
``backendRefs`` weights. Here the load generator asks ``LocalRouter.pick`` for every request. The
route is resolved the way a gateway does: backendRef name → Service → its selector → ready
processes (``LocalKube.endpoints``). Only this local runtime uses it; the operator code is unchanged.

The backend table is rebuilt when LocalKube reports a change (``refresh``), never per request.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from modelrollout.demo.local_kube import Endpoint, LocalKube

GATEWAY_API = "gateway.networking.k8s.io/v1"
TRACK_LABEL = "modelrollout.io/track"


@dataclass(frozen=True)
class Backend:
    """One weighted backendRef of the route and the processes behind it."""

    service: str
    weight: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Pick:
    """Where one request goes; ``url`` is None when the chosen backend has no ready process (a real
    gateway answers 503 then, and so does the load generator's bookkeeping)."""

    url: str | None
    track: str
    version: str


class LocalRouter:
    def __init__(self, kube: LocalKube, namespace: str, route: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.route = route
        self._lock = threading.Lock()
        self._backends: tuple[Backend, ...] = ()

    def refresh(self) -> None:
        """Re-read the HTTPRoute, its Services and their endpoints. Idempotent."""
        route = self._kube.get(GATEWAY_API, "HTTPRoute", self.namespace, self.route)
        backends: list[Backend] = []
        refs = [] if route is None else [r for rule in route["spec"].get("rules", []) for r in rule["backendRefs"]]
        for ref in refs:
            service = self._kube.get("v1", "Service", ref.get("namespace", self.namespace), ref["name"])
            selector = {} if service is None else service["spec"].get("selector", {})
            endpoints = tuple(self._kube.endpoints(selector)) if selector else ()
            backends.append(Backend(ref["name"], int(ref.get("weight", 1)), endpoints))
        with self._lock:
            self._backends = tuple(backends)

    def backends(self) -> tuple[Backend, ...]:
        with self._lock:
            return self._backends

    def canary_weight(self) -> int:
        """The route's canary share in percent (0 without a route)."""
        backends = self.backends()
        total = sum(b.weight for b in backends)
        canary = sum(b.weight for b in backends if b.service.endswith("-canary"))
        return round(100 * canary / total) if total else 0

    def pick(self, rng: random.Random) -> Pick | None:
        """A backend by weight, then one of its processes; None while there is no route to follow."""
        candidates = [b for b in self.backends() if b.weight > 0]
        if not candidates:
            return None
        backend = rng.choices(candidates, weights=[b.weight for b in candidates])[0]
        track = backend.service.rsplit("-", 1)[-1]
        if not backend.endpoints:
            return Pick(None, track, "?")
        endpoint = rng.choice(backend.endpoints)
        return Pick(endpoint.url, endpoint.labels.get(TRACK_LABEL, track), endpoint.labels.get("version", "?"))
