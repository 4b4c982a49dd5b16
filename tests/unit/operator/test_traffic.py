from __future__ import annotations

from typing import Any

import pytest

from model_operator.kube import manifests
from model_operator.spec import ModelDeploymentSpec
from model_operator.traffic import istio, router_for
from model_operator.traffic.base import keep_stable_size_candidate
from model_operator.traffic.gateway_api import GatewayAPIRouter, canary_weight, httproute, mirror_percent
from model_operator.traffic.replicas import split
from tests.unit.operator.machine_helpers import FakeKube, make_spec

OWNER = manifests.Owner("models", "iris", "uid-1")


@pytest.mark.parametrize("weight", [0, 5, 50, 100])
def test_httproute_weights_round_trip(weight: int) -> None:
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    assert router.current_weight(OWNER) is None
    router.set_weight(OWNER, make_spec(), weight)
    route = kube.objects[("HTTPRoute", "iris")]
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert canary_weight(route, {"iris-canary"}) == weight
    assert router.current_weight(OWNER) == weight


def test_httproute_carries_parent_refs_and_hostnames() -> None:
    spec = make_spec().model_copy(deep=True)
    spec = spec.model_validate(
        {**spec.wire(), "traffic": {"gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": ["iris.example"]}}}
    )
    route = httproute(OWNER, spec, 10)
    assert route["spec"]["parentRefs"] == [{"name": "gw"}] and route["spec"]["hostnames"] == ["iris.example"]


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        pytest.param(100, {"backendRef": {"name": "iris-canary", "port": 80}}, id="all-requests-without-percent"),
        pytest.param(30, {"backendRef": {"name": "iris-canary", "port": 80}, "percent": 30}, id="a-share"),
    ],
)
def test_httproute_mirrors_to_the_candidate_for_shadow(mirror: int, expected: dict[str, Any]) -> None:
    rule = httproute(OWNER, make_spec(), 0, mirror)["spec"]["rules"][0]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": expected}]
    assert [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]] == [("iris-stable", 100), ("iris-canary", 0)]
    assert mirror_percent({"spec": {"rules": [rule]}}) == mirror


def test_httproute_without_mirror_has_no_filters() -> None:
    route = httproute(OWNER, make_spec(), 25, 0)
    assert "filters" not in route["spec"]["rules"][0]
    assert mirror_percent(route) == 0
    assert mirror_percent({}) == 0


@pytest.mark.parametrize(("weight", "mirror"), [(-1, 0), (101, 0), (0, -1), (0, 101)])
def test_httproute_refuses_out_of_range_shares(weight: int, mirror: int) -> None:
    with pytest.raises(ValueError, match="must be within"):
        httproute(OWNER, make_spec(), weight, mirror)


def test_httproute_routes_a_blue_green_preview_by_its_own_service() -> None:
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    router.set_weight(OWNER, make_spec(), 0, track="preview")
    route = kube.objects[("HTTPRoute", "iris")]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in refs] == [("iris-stable", 100), ("iris-preview", 0)]
    assert router.current_weight(OWNER) == 0
    router.set_weight(OWNER, make_spec(), 100, track="preview")
    assert router.current_weight(OWNER) == 100, "the switch: the preview counts as the candidate"
    assert canary_weight(kube.objects[("HTTPRoute", "iris")], {"iris-canary"}) == 0
    assert mirror_percent(kube.objects[("HTTPRoute", "iris")]) == 0


def test_gateway_router_writes_the_mirror_and_reads_it_back() -> None:
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    router.set_weight(OWNER, make_spec(), 0, mirror_percent=40)
    assert mirror_percent(kube.objects[("HTTPRoute", "iris")]) == 40
    assert router.current_weight(OWNER) == 0, "mirrored requests are no live weight"
    router.set_weight(OWNER, make_spec(), 5)
    assert mirror_percent(kube.objects[("HTTPRoute", "iris")]) == 0, "the next write turns the mirror off"


def istio_spec(**section: Any) -> ModelDeploymentSpec:
    traffic = {"provider": "istio", "istio": section}
    return ModelDeploymentSpec.model_validate({**make_spec().wire(), "traffic": traffic})


STABLE_HOST, CANARY_HOST = "iris-stable.models.svc.cluster.local", "iris-canary.models.svc.cluster.local"


@pytest.mark.parametrize("weight", [0, 5, 50, 100])
def test_virtual_service_weights_round_trip(weight: int) -> None:
    kube = FakeKube()
    router = router_for("istio", kube)
    assert isinstance(router, istio.IstioRouter)
    assert router.current_weight(OWNER) is None
    router.set_weight(OWNER, istio_spec(), weight)
    vs = kube.objects[("VirtualService", "iris")]
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    route = vs["spec"]["http"][0]["route"]
    assert [(d["destination"]["host"], d["destination"]["port"], d["weight"]) for d in route] == [
        (STABLE_HOST, {"number": 80}, 100 - weight),
        (CANARY_HOST, {"number": 80}, weight),
    ]
    assert router.current_weight(OWNER) == weight
    assert set(kube.objects) == {("VirtualService", "iris")}, "no DestinationRule: the tracks are separate Services"


def test_virtual_service_hosts_default_to_the_root_service_and_no_gateways() -> None:
    spec = istio.virtual_service(OWNER, istio_spec(), 10)["spec"]
    assert spec["hosts"] == ["iris.models.svc.cluster.local"]
    assert "gateways" not in spec
    assert "mirror" not in spec["http"][0] and "mirrorPercentage" not in spec["http"][0]


def test_virtual_service_carries_hosts_and_gateways() -> None:
    spec = istio_spec(hosts=["iris.example.com"], gateways=["istio-system/public", "mesh"])
    assert spec.traffic.istio.wire() == {"hosts": ["iris.example.com"], "gateways": ["istio-system/public", "mesh"]}
    vs = istio.virtual_service(OWNER, spec, 10)["spec"]
    assert vs["hosts"] == ["iris.example.com"] and vs["gateways"] == ["istio-system/public", "mesh"]


def test_virtual_service_mirror_for_shadow() -> None:
    route = istio.virtual_service(OWNER, istio_spec(), 0, mirror_percent=25)["spec"]["http"][0]
    assert route["mirror"] == {"host": CANARY_HOST, "port": {"number": 80}}
    assert route["mirrorPercentage"] == {"value": 25.0}
    assert [d["weight"] for d in route["route"]] == [100, 0], "mirrored requests' responses are discarded"
    assert istio.canary_weight({"spec": {"http": [route]}}, {CANARY_HOST}) == 0


PREVIEW_HOST = "iris-preview.models.svc.cluster.local"


def test_virtual_service_routes_and_mirrors_to_the_track_it_is_given() -> None:
    route = istio.virtual_service(OWNER, istio_spec(), 100, track="preview")["spec"]["http"][0]
    assert [(d["destination"]["host"], d["weight"]) for d in route["route"]] == [(STABLE_HOST, 0), (PREVIEW_HOST, 100)]
    assert "mirror" not in route
    mirrored = istio.virtual_service(OWNER, istio_spec(), 0, mirror_percent=100, track="preview")["spec"]["http"][0]
    assert mirrored["mirror"]["host"] == PREVIEW_HOST and mirrored["mirrorPercentage"] == {"value": 100.0}


def test_istio_router_writes_mirror_and_preview_and_reads_the_weight_back() -> None:
    kube = FakeKube()
    router = router_for("istio", kube)
    router.set_weight(OWNER, istio_spec(), 0, mirror_percent=25)
    route = kube.objects[("VirtualService", "iris")]["spec"]["http"][0]
    assert route["mirror"]["host"] == CANARY_HOST and route["mirrorPercentage"] == {"value": 25.0}
    assert router.current_weight(OWNER) == 0
    router.set_weight(OWNER, istio_spec(), 100, track="preview")
    route = kube.objects[("VirtualService", "iris")]["spec"]["http"][0]
    assert "mirror" not in route and "mirrorPercentage" not in route, "mirror 0: no mirror at all"
    assert route["route"][1]["destination"]["host"] == PREVIEW_HOST
    assert router.current_weight(OWNER) == 100


@pytest.mark.parametrize(("weight", "mirror"), [(-1, None), (101, None), (0, 0.0), (0, 100.5), (0, -3.0)])
def test_virtual_service_refuses_out_of_range_weights(weight: int, mirror: float | None) -> None:
    with pytest.raises(ValueError, match="must be within"):
        istio.virtual_service(OWNER, istio_spec(), weight, mirror_percent=mirror)


def destination(host: str, weight: int | None = None) -> dict[str, Any]:
    return {"destination": {"host": host}, **({} if weight is None else {"weight": weight})}


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        pytest.param([], None, id="no-routes"),
        pytest.param([{"route": []}], None, id="no-destinations"),
        pytest.param([{"route": [destination(STABLE_HOST)]}], 0, id="lone-stable-takes-all"),
        pytest.param([{"route": [destination(CANARY_HOST)]}], 100, id="lone-canary-takes-all"),
        pytest.param([{"route": [destination(STABLE_HOST, 90), destination(CANARY_HOST)]}], 0, id="omitted-is-0"),
        pytest.param([{"route": [destination(STABLE_HOST, 0), destination(CANARY_HOST, 0)]}], None, id="all-zero"),
        pytest.param([{"route": [destination(STABLE_HOST, 3), destination("iris-canary", 1)]}], 25, id="short-name"),
        pytest.param([{"route": [destination(STABLE_HOST, 1), destination(CANARY_HOST, 2)]}], 67, id="unnormalised"),
        pytest.param(
            [
                {"name": "by-header", "route": [destination(CANARY_HOST)]},
                {"name": "modelrollout", "route": [destination(STABLE_HOST, 80), destination(CANARY_HOST, 20)]},
            ],
            20,
            id="our-named-route",
        ),
    ],
)
def test_virtual_service_canary_weight_parse(http: list[dict[str, Any]], expected: int | None) -> None:
    assert istio.canary_weight({"spec": {"http": http}}, {CANARY_HOST, "iris-canary"}) == expected


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        (4, 0, (4, 0)),
        (4, 5, (3, 1)),
        (4, 50, (2, 2)),
        (4, 99, (1, 3)),
        (4, 100, (0, 4)),
        (2, 5, (1, 1)),
        (1, 0, (1, 0)),
        pytest.param(1, 5, (1, 1), id="one-replica-canary-gets-a-pod-of-its-own"),
        pytest.param(1, 99, (1, 1), id="one-replica-stable-keeps-its-pod"),
        (1, 100, (0, 1)),
    ],
)
def test_replica_split(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert split(total, weight) == expected


@pytest.mark.parametrize("total", [1, 2, 3, 10, 1000])
def test_replica_split_gives_each_track_a_pod_while_both_get_traffic(total: int) -> None:
    for weight in range(1, 100):
        stable, canary = split(total, weight)
        assert stable >= 1 and canary >= 1, (total, weight)
        assert stable + canary == max(total, 2), "one extra pod at most, and only for a single replica"
    assert split(total, 0) == (total, 0) and split(total, 100) == (0, total)


@pytest.mark.parametrize("provider", ["gatewayAPI", "istio"])
def test_request_routers_keep_stable_full_size_and_size_the_candidate_for_its_capacity(provider: str) -> None:
    router = router_for(provider, FakeKube())
    assert router.replicas(4, 5, 5, True) == (4, 1)
    assert router.replicas(4, 5, 50, True) == (4, 2), "sized for the next share before it gets it"
    assert router.replicas(4, 100, 100, True) == (4, 4)
    assert router.replicas(4, 0, 0, True) == (4, 1), "a candidate without traffic still has a pod"
    assert router.replicas(4, 50, 0, True) == (4, 2), "never sized below its weight"
    assert router.replicas(4, 0, 100, False) == (4, 0)
    assert router.note() is None


@pytest.mark.parametrize(
    ("total", "capacity", "present", "expected"),
    [(4, 0, True, (4, 1)), (4, 5, True, (4, 1)), (4, 26, True, (4, 2)), (4, 100, True, (4, 4)), (3, 50, False, (3, 0))],
)
def test_keep_stable_size_candidate(total: int, capacity: int, present: bool, expected: tuple[int, int]) -> None:
    assert keep_stable_size_candidate(total, capacity, present) == expected


def test_replica_router_follows_the_weight_and_ignores_capacity() -> None:
    router = router_for("replicas", FakeKube())
    assert router.replicas(4, 5, 100, True) == split(4, 5) == (3, 1), "pods are the weights: sizing ahead moves traffic"
    assert router.replicas(4, 50, 50, True) == (2, 2)
    assert router.replicas(4, 50, 100, False) == (4, 0)
    assert router.note()


def test_replica_router_with_one_replica_runs_the_canary_on_a_pod_of_its_own() -> None:
    router = router_for("replicas", FakeKube())
    assert router.replicas(1, 10, 10, True) == (1, 1), "no pod, no request: the canary could never be judged"
    assert router.replicas(1, 100, 100, True) == (0, 1)
    assert router.replicas(1, 0, 0, False) == (1, 0)


@pytest.mark.parametrize(("provider", "kind"), [("gatewayAPI", "HTTPRoute"), ("istio", "VirtualService")])
def test_a_router_removes_its_own_route_only(provider: str, kind: str) -> None:
    kube = FakeKube()
    spec = make_spec() if provider == "gatewayAPI" else istio_spec()
    router = router_for(provider, kube)
    router.remove(OWNER)
    assert [verb for verb, *_ in kube.calls] == ["get"], "nothing there: nothing deleted"
    router.set_weight(OWNER, spec, 10)
    assert router.verify_weight(OWNER, 10) is True and router.verify_weight(OWNER, 20) is False
    router.remove(OWNER)
    assert (kind, "iris") not in kube.objects
    assert router.current_weight(OWNER) is None and router.verify_weight(OWNER, 10) is False
    router.remove(OWNER)  # idempotent

    other = manifests.Owner("models", "iris", "uid-of-another-iris")  # an earlier one, deleted and recreated
    router.set_weight(other, spec, 10)
    router.remove(OWNER)
    assert (kind, "iris") in kube.objects, "a route this ModelDeployment does not own stays"


def test_the_replica_router_has_no_route_to_verify_or_remove() -> None:
    kube = FakeKube()
    router = router_for("replicas", kube)
    assert router.verify_weight(OWNER, 10) is None
    router.remove(OWNER)
    assert kube.calls == [], "the root Service and the Deployments are every provider's"


def test_deployment_is_restricted_and_pinned() -> None:
    spec = make_spec("2.0.0")
    deployment = manifests.deployment(OWNER, spec, spec.model, "canary", 2)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--expected-digest" in container["args"] and spec.model.digest in container["args"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["template"]["metadata"]["annotations"][manifests.DIGEST_ANNOTATION] == spec.model.digest
    assert manifests.deployment_serving(deployment) is None  # no status yet: not serving
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert manifests.deployment_serving(deployment) == spec.model.digest


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}, "an old pod is left"),
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, "not all updated"),
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, "not all available"),
        ({"observedGeneration": 0, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, "spec not seen yet"),
    ],
)
def test_deployment_mid_rollout_is_not_serving(status: dict[str, int], why: str) -> None:
    spec = make_spec("2.0.0")
    deployment = manifests.deployment(OWNER, spec, spec.model, "stable", 2)
    deployment["metadata"]["generation"] = 1
    deployment["status"] = status
    assert manifests.deployment_serving(deployment) is None, why
