from __future__ import annotations

from typing import Any

import pytest

from model_operator.kube import manifests
from model_operator.spec import ModelDeploymentSpec
from model_operator.traffic import istio, router_for
from model_operator.traffic.gateway_api import GatewayAPIRouter, canary_weight, httproute
from model_operator.traffic.replicas import split
from tests.unit.operator.machine_helpers import make_spec

OWNER = manifests.Owner("models", "iris", "uid-1")


class FakeKube:
    """Records applies and answers gets from what was applied (enough for the routers)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def apply(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def patch_status(self, *args: Any) -> None: ...

    def patch_metadata(self, *args: Any) -> None: ...


@pytest.mark.parametrize("weight", [0, 5, 50, 100])
def test_httproute_weights_round_trip(weight: int) -> None:
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    assert router.current_weight(OWNER) is None
    router.set_weight(OWNER, make_spec(), weight)
    route = kube.objects[("HTTPRoute", "iris")]
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert canary_weight(route, "iris-canary") == weight
    assert router.current_weight(OWNER) == weight


def test_httproute_carries_parent_refs_and_hostnames() -> None:
    spec = make_spec().model_copy(deep=True)
    spec = spec.model_validate(
        {**spec.wire(), "traffic": {"gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": ["iris.example"]}}}
    )
    route = httproute(OWNER, spec, 10)
    assert route["spec"]["parentRefs"] == [{"name": "gw"}] and route["spec"]["hostnames"] == ["iris.example"]


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


def test_istio_router_keeps_stable_full_size() -> None:
    router = router_for("istio", FakeKube())
    assert router.replicas(4, 5, True) == (4, 1)
    assert router.replicas(4, 100, True) == (4, 4)
    assert router.replicas(4, 0, False) == (4, 0)
    assert router.note() is None


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [(4, 0, (4, 0)), (4, 5, (3, 1)), (4, 50, (2, 2)), (4, 99, (1, 3)), (4, 100, (0, 4)), (1, 50, (1, 0))],
)
def test_replica_split(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert split(total, weight) == expected


def test_gateway_router_keeps_stable_full_size() -> None:
    router = router_for("gatewayAPI", FakeKube())
    assert router.replicas(4, 5, True) == (4, 1)
    assert router.replicas(4, 100, True) == (4, 4)
    assert router.replicas(4, 0, False) == (4, 0)
    assert router.note() is None
    assert router_for("replicas", FakeKube()).note()


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
