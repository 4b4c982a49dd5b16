"""The tests' own reading of HTTPRoutes and VirtualServices (``tests/support/routes.py``), checked against
examples written from the Gateway API and Istio references — never against the operator's builders."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.routes import Split, UnreadableRoute, httproute_split, virtual_service_split


def httproute(rule: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": {"rules": [rule]}}


def mirror(request_mirror: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}, **request_mirror}}


def vs(route: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "spec": {"hosts": ["a"], "http": [route]}}


def dest(host: str, weight: int | None = None, subset: str | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host, **({"subset": subset} if subset else {})}
    return {"destination": destination, **({} if weight is None else {"weight": weight})}


@pytest.mark.parametrize(
    ("refs", "live"),
    [
        pytest.param([{"name": "a", "weight": 90}, {"name": "b", "weight": 10}], {"a": 90, "b": 10}, id="percent"),
        pytest.param([{"name": "a", "weight": 3}, {"name": "b", "weight": 1}], {"a": 75, "b": 25}, id="relative"),
        pytest.param([{"name": "a"}, {"name": "b"}], {"a": 50, "b": 50}, id="absent-weight-is-1"),
        pytest.param([{"name": "a", "weight": 0}, {"name": "b"}], {"a": 0, "b": 100}, id="zero-gets-none"),
        pytest.param([{"name": "a", "weight": 0}, {"name": "b", "weight": 0}], {}, id="all-zero-forwards-nothing"),
        pytest.param([{"name": "a", "weight": 5}], {"a": 100}, id="lone-backend"),
    ],
)
def test_httproute_weights(refs: list[dict[str, Any]], live: dict[str, float]) -> None:
    assert httproute_split(httproute({"backendRefs": refs})) == Split(live=live)


@pytest.mark.parametrize(
    ("request_mirror", "percent"),
    [
        pytest.param({}, 100, id="neither-percent-nor-fraction-is-all"),
        pytest.param({"percent": 25}, 25, id="percent"),
        pytest.param({"percent": 0}, 0, id="percent-0"),
        pytest.param({"percent": 100}, 100, id="percent-100"),
        pytest.param({"fraction": {"numerator": 1, "denominator": 8}}, 12.5, id="fraction"),
        pytest.param({"fraction": {"numerator": 30}}, 30, id="fraction-denominator-defaults-to-100"),
    ],
)
def test_httproute_request_mirror_share(request_mirror: dict[str, Any], percent: float) -> None:
    rule = {"backendRefs": [{"name": "a"}], "filters": [mirror(request_mirror)]}
    assert httproute_split(httproute(rule)).mirrored == {"shadow": percent}


def test_the_api_servers_default_match_takes_every_request() -> None:
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "a"}]}
    assert httproute_split(httproute(rule)) == Split(live={"a": 100})


@pytest.mark.parametrize(
    "route",
    [
        pytest.param({"spec": {"rules": []}}, id="no-rule"),
        pytest.param({"spec": {"rules": [{"backendRefs": []}, {"backendRefs": []}]}}, id="two-rules"),
        pytest.param(httproute({"matches": [{"path": {"type": "Exact", "value": "/x"}}]}), id="partial-match"),
        pytest.param(httproute({"filters": [{"type": "RequestRedirect", "requestRedirect": {}}]}), id="redirect"),
        pytest.param(httproute({"filters": [mirror({"percent": 5, "fraction": {"numerator": 1}})]}), id="both"),
        pytest.param(httproute({"filters": [mirror({"percent": "50"})]}), id="percent-as-string"),
        pytest.param(httproute({"backendRefs": [{"name": "a", "filters": [mirror({})]}]}), id="backend-filter"),
        pytest.param(httproute({"backendRefs": [{"name": "a", "kind": "TraefikService"}]}), id="not-a-service"),
    ],
)
def test_httproutes_it_cannot_summarise_are_refused(route: dict[str, Any]) -> None:
    with pytest.raises(UnreadableRoute):
        httproute_split(route)


@pytest.mark.parametrize(
    ("route", "split"),
    [
        pytest.param({"route": [dest("s", 75), dest("c", 25)]}, Split(live={"s": 75, "c": 25}), id="weights"),
        pytest.param({"route": [dest("s", 100), dest("c")]}, Split(live={"s": 100, "c": 0}), id="absent-weight-is-0"),
        pytest.param({"route": [dest("s")]}, Split(live={"s": 100}), id="lone-destination-takes-all"),
        pytest.param({"route": [dest("s", 0)]}, Split(live={"s": 100}), id="lone-destination-whatever-its-weight"),
        pytest.param(
            {"route": [dest("r", 50, "v1"), dest("r", 50, "v2")]}, Split(live={"r/v1": 50, "r/v2": 50}), id="subsets"
        ),
        pytest.param(
            {"route": [dest("s")], "mirror": {"host": "c"}}, Split({"s": 100}, {"c": 100}), id="mirror-absent-is-all"
        ),
        pytest.param(
            {"route": [dest("s")], "mirror": {"host": "c"}, "mirrorPercentage": {"value": 12.5}},
            Split({"s": 100}, {"c": 12.5}),
            id="mirror-percentage-is-a-percent",
        ),
        pytest.param(
            {"route": [dest("s")], "mirrors": [{"destination": {"host": "c"}, "percentage": {"value": 0.5}}]},
            Split({"s": 100}, {"c": 0.5}),
            id="mirrors-list",
        ),
        pytest.param(
            {"route": [dest("s")], "mirrors": [{"destination": {"host": "c"}}]},
            Split({"s": 100}, {"c": 100}),
            id="mirrors-list-absent-percentage-is-all",
        ),
    ],
)
def test_virtual_service_split(route: dict[str, Any], split: Split) -> None:
    assert virtual_service_split(vs(route)) == split


@pytest.mark.parametrize(
    "route",
    [
        pytest.param({"route": [dest("s", 0), dest("c", 0)]}, id="all-zero"),
        pytest.param({"route": [dest("s", 1)], "match": [{"uri": {"prefix": "/x"}}]}, id="match"),
        pytest.param({"route": [dest("s")], "mirror": {"host": "c"}, "mirrorPercent": 5}, id="deprecated"),
        pytest.param({"route": [dest("s")], "mirror": {"host": "c"}, "mirrorPercentage": {"value": 150}}, id="over"),
        pytest.param({"redirect": {"uri": "/"}}, id="redirect"),
    ],
)
def test_virtual_services_it_cannot_summarise_are_refused(route: dict[str, Any]) -> None:
    with pytest.raises(UnreadableRoute):
        virtual_service_split(vs(route))
