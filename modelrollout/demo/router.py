"""The local gateway: reads the HTTPRoute the operator wrote into ``LocalKube`` and picks a backend.

In a cluster, a Gateway implementation (Envoy, …) watches the HTTPRoute and splits traffic by its
``backendRefs`` weights. Here the load generator asks ``LocalRouter.pick`` for every request. The
route is resolved the way a gateway does: backendRef name → Service → its selector → ready
processes (``LocalKube.endpoints``). Only this local runtime uses it; the operator code is unchanged.

The candidate is whichever backend is not stable: ``<md>-canary`` (canary and shadow rollouts) or
``<md>-preview`` (blue-green). A ``RequestMirror`` filter (shadow rollouts) is honoured as a gateway
does: that share of requests is also sent to the mirror backend, whose answer nobody sees.

The backend table is rebuilt when LocalKube reports a change (``refresh``), never per request.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from model_operator.kube.manifests import CANDIDATE_TRACKS, TRACK_LABEL
from model_operator.traffic.gateway_api import API_VERSION as GATEWAY_API
from model_operator.traffic.gateway_api import mirrors
from modelrollout.demo.local_kube import Endpoint, LocalKube

CANDIDATE_SUFFIXES = tuple(f"-{track}" for track in CANDIDATE_TRACKS)


@dataclass(frozen=True)
class Backend:
    """One weighted backendRef of the route and the processes behind it."""

    service: str
    weight: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Mirror:
    """A RequestMirror filter: ``percent`` of requests are copied to ``service``'s processes."""

    service: str
    percent: float
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Pick:
    """Where one request goes; ``url`` is None when the chosen backend has no ready process (a real
    gateway answers 503 then, and so does the load generator's bookkeeping). ``mirror`` is where a copy
    goes, if this request is mirrored and the mirror backend has a ready process."""

    url: str | None
    track: str
    version: str
    mirror: Endpoint | None = None


class LocalRouter:
    def __init__(self, kube: LocalKube, namespace: str, route: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.route = route
        self._lock = threading.Lock()
        self._backends: tuple[Backend, ...] = ()
        self._mirrors: tuple[Mirror, ...] = ()

    def refresh(self) -> None:
        """Re-read the HTTPRoute, its Services and their endpoints. Idempotent."""
        route = self._kube.get(GATEWAY_API, "HTTPRoute", self.namespace, self.route)
        rules = [] if route is None else route["spec"].get("rules", [])
        backends = [
            Backend(ref["name"], int(ref.get("weight", 1)), self._endpoints(ref))
            for rule in rules
            for ref in rule.get("backendRefs", [])
        ]
        copies = [] if route is None else mirrors(route)
        mirrored = [Mirror(ref["name"], share, self._endpoints(ref)) for ref, share in copies]
        with self._lock:
            self._backends, self._mirrors = tuple(backends), tuple(mirrored)

    def _endpoints(self, ref: dict[str, Any]) -> tuple[Endpoint, ...]:
        service = self._kube.get("v1", "Service", ref.get("namespace", self.namespace), ref["name"])
        selector = {} if service is None else service["spec"].get("selector", {})
        return tuple(self._kube.endpoints(selector)) if selector else ()

    def backends(self) -> tuple[Backend, ...]:
        with self._lock:
            return self._backends

    def mirrors(self) -> tuple[Mirror, ...]:
        with self._lock:
            return self._mirrors

    def canary_weight(self) -> int:
        """The route's candidate share of live traffic in percent (0 without a route)."""
        backends = self.backends()
        total = sum(b.weight for b in backends)
        candidate = sum(b.weight for b in backends if b.service.endswith(CANDIDATE_SUFFIXES))
        return round(100 * candidate / total) if total else 0

    def mirror_percent(self) -> float:
        """The share of requests the route copies to a mirror backend, percent (0: none)."""
        return max((m.percent for m in self.mirrors()), default=0.0)

    def pick(self, rng: random.Random) -> Pick | None:
        """A backend by weight, then one of its processes, and whether a copy goes to a mirror; None while
        there is no route to follow."""
        with self._lock:
            backends, mirrors = self._backends, self._mirrors
        candidates = [b for b in backends if b.weight > 0]
        if not candidates:
            return None
        backend = rng.choices(candidates, weights=[b.weight for b in candidates])[0]
        copy = next((m for m in mirrors if rng.random() * 100 < m.percent), None)
        mirror = rng.choice(copy.endpoints) if copy is not None and copy.endpoints else None
        track = backend.service.rsplit("-", 1)[-1]
        if not backend.endpoints:
            return Pick(None, track, "?", mirror)
        endpoint = rng.choice(backend.endpoints)
        return Pick(endpoint.url, endpoint.labels.get(TRACK_LABEL, track), endpoint.labels.get("version", "?"), mirror)
