"""What a stored traffic route does with requests, read by the route API's own specification — not by the
operator's code, so a misunderstanding of the API shared by the operator's writer and its reader (percent
vs fraction, what an absent field means) cannot pass unnoticed. Nothing here imports ``model_operator``.

The rules, from the APIs' reference documentation and CRD schemas (the rig's copies:
``$RIG_DIR/crds/gateway-api/gateway.networking.k8s.io_httproutes.yaml``,
``$RIG_DIR/crds/istio/virtualservices.networking.istio.io.yaml``):

Gateway API ``HTTPRoute`` (``gateway.networking.k8s.io/v1``)
    * ``rules[].backendRefs[].weight``: the backend gets ``weight / sum(weights)`` of the rule's requests;
      absent means 1; 0 means none. When every weight is 0 nothing is forwarded (the gateway answers 500).
    * ``rules[].filters[]`` of ``type: RequestMirror``: ``requestMirror.backendRef`` receives a copy of
      ``percent`` percent (an integer 0-100) of the rule's requests, or ``fraction.numerator /
      fraction.denominator`` of them (denominator absent: 100); neither given: every request (100 %).
      Responses to copies are discarded.

Istio ``VirtualService`` (``networking.istio.io/v1``)
    * ``http[].route[]``: each ``destination`` (``host``, optional ``subset``) gets ``weight / sum(weights)``
      of the requests; a lone destination gets all of them whatever its weight; otherwise an absent weight
      is 0, and all-zero weights are invalid (istiod refuses them).
    * ``http[].mirror`` is copied ``mirrorPercentage.value`` percent (a double) of the requests; an absent
      ``mirrorPercentage`` means 100 %. ``http[].mirrors[]``: the same per ``destination``, with ``percentage``.

A route this reader cannot summarise as one split of all requests (several rules or HTTP routes, request
matches, redirects, per-backend filters, a deprecated field) raises ``UnreadableRoute`` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class UnreadableRoute(ValueError):
    """The route uses something this reader does not interpret (it would have to guess)."""


@dataclass(frozen=True)
class Split:
    """What one route does with every request it takes.

    ``live``: each backend's share of the requests, percent (summing to 100), backends of weight 0
    included with 0; empty when the route forwards nothing. ``mirrored``: each mirror backend's share of
    the requests it is sent a copy of, percent.
    """

    live: dict[str, float] = field(default_factory=dict)
    mirrored: dict[str, float] = field(default_factory=dict)


def _percent_shares(weights: Sequence[tuple[str, int]]) -> dict[str, float]:
    total = sum(weight for _, weight in weights)
    shares: dict[str, float] = {}
    for name, weight in weights:
        shares[name] = shares.get(name, 0.0) + (100.0 * weight / total if total else 0.0)
    return shares if total else {}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnreadableRoute(f"{what} must be an integer, got {value!r}")
    return value


# --- Gateway API HTTPRoute -------------------------------------------------------------------------------

MATCH_EVERYTHING = [{"path": {"type": "PathPrefix", "value": "/"}}]  # what the API server defaults ``matches`` to


def _service_ref(ref: Mapping[str, Any], where: str) -> str:
    """A backendRef's Service name (the group ``""`` and kind ``Service`` are the API's defaults)."""
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        raise UnreadableRoute(f"{where}: only Service backends are read, got {ref!r}")
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise UnreadableRoute(f"{where}: backendRef without a name: {ref!r}")
    return name


def request_mirror_percent(request_mirror: Mapping[str, Any]) -> float:
    """The share of requests one ``requestMirror`` copies, percent, by the Gateway API spec."""
    if "percent" in request_mirror and "fraction" in request_mirror:
        raise UnreadableRoute(f"requestMirror with both percent and fraction: {request_mirror!r}")
    if "percent" in request_mirror:
        percent = _int(request_mirror["percent"], "requestMirror.percent")
        if not 0 <= percent <= 100:
            raise UnreadableRoute(f"requestMirror.percent outside 0..100: {percent}")
        return float(percent)
    if "fraction" in request_mirror:
        fraction = request_mirror["fraction"]
        numerator = _int(fraction.get("numerator"), "requestMirror.fraction.numerator")
        denominator = _int(fraction.get("denominator", 100), "requestMirror.fraction.denominator")
        if denominator < 1 or not 0 <= numerator <= denominator:
            raise UnreadableRoute(f"requestMirror.fraction is not a fraction: {fraction!r}")
        return 100.0 * numerator / denominator
    return 100.0


def httproute_split(route: Mapping[str, Any]) -> Split:
    """The split of an HTTPRoute with one rule that takes every request (no matches, or the default ``/``)."""
    rules = (route.get("spec") or {}).get("rules") or []
    if len(rules) != 1:
        raise UnreadableRoute(f"expected one rule, got {len(rules)}")
    rule = rules[0]
    if rule.get("matches") not in (None, [], MATCH_EVERYTHING):
        raise UnreadableRoute(f"the rule matches only some requests: {rule['matches']!r}")
    weights: list[tuple[str, int]] = []
    for ref in rule.get("backendRefs") or []:
        if ref.get("filters"):
            raise UnreadableRoute(f"per-backend filters are not read: {ref!r}")
        weight = _int(ref.get("weight", 1), "backendRef.weight")
        if weight < 0:
            raise UnreadableRoute(f"negative backendRef.weight: {weight}")
        weights.append((_service_ref(ref, "backendRefs"), weight))
    mirrored: dict[str, float] = {}
    for rule_filter in rule.get("filters") or []:
        if rule_filter.get("type") != "RequestMirror":
            raise UnreadableRoute(f"only RequestMirror filters are read, got {rule_filter!r}")
        request_mirror = rule_filter.get("requestMirror") or {}
        backend = _service_ref(request_mirror.get("backendRef") or {}, "requestMirror")
        if backend in mirrored:
            raise UnreadableRoute(f"two RequestMirror filters copy to {backend}")
        mirrored[backend] = request_mirror_percent(request_mirror)
    return Split(live=_percent_shares(weights), mirrored=mirrored)


# --- Istio VirtualService -----------------------------------------------------------------------------


def istio_destination(destination: Mapping[str, Any]) -> str:
    """``host``, or ``host/subset`` for a subset of it."""
    host = destination.get("host")
    if not isinstance(host, str) or not host:
        raise UnreadableRoute(f"destination without a host: {destination!r}")
    subset = destination.get("subset")
    return f"{host}/{subset}" if subset else host


def _istio_percent(percentage: Mapping[str, Any] | None, what: str) -> float:
    """An Istio ``Percent`` (``{value: double}``): absent altogether means 100; present, its value (0 if unset)."""
    if percentage is None:
        return 100.0
    value = percentage.get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise UnreadableRoute(f"{what} is not a percentage: {percentage!r}")
    return float(value)


def virtual_service_split(vs: Mapping[str, Any]) -> Split:
    """The split of a VirtualService with one HTTP route that takes every request (no ``match``)."""
    routes = (vs.get("spec") or {}).get("http") or []
    if len(routes) != 1:
        raise UnreadableRoute(f"expected one HTTP route, got {len(routes)}")
    route = routes[0]
    for unread in ("match", "redirect", "directResponse", "delegate", "mirrorPercent"):
        if route.get(unread):
            raise UnreadableRoute(f"the HTTP route has {unread!r}, which this reader does not interpret")
    destinations = route.get("route") or []
    weights: list[tuple[str, int]] = []
    for entry in destinations:
        weight = 100 if len(destinations) == 1 else _int(entry.get("weight", 0), "route[].weight")
        if weight < 0:
            raise UnreadableRoute(f"negative route weight: {weight}")
        weights.append((istio_destination(entry.get("destination") or {}), weight))
    if destinations and not sum(weight for _, weight in weights):
        raise UnreadableRoute("every destination has weight 0 (istiod refuses such a route)")
    mirrored: dict[str, float] = {}
    if route.get("mirror"):
        mirrored[istio_destination(route["mirror"])] = _istio_percent(route.get("mirrorPercentage"), "mirrorPercentage")
    for policy in route.get("mirrors") or []:
        target = istio_destination(policy.get("destination") or {})
        if target in mirrored:
            raise UnreadableRoute(f"{target} is mirrored twice")
        mirrored[target] = _istio_percent(policy.get("percentage"), "mirrors[].percentage")
    return Split(live=_percent_shares(weights), mirrored=mirrored)
