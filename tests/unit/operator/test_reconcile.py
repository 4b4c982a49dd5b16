"""The reconciler moving traffic between providers: the new route is written and confirmed before the old
provider's route goes, and pods only shrink after both; nothing extra happens while the provider stays."""

from __future__ import annotations

from typing import Any

from model_operator.analysis.base import MetricProvider
from model_operator.deadline import Deadline
from model_operator.kube.manifests import Owner
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import Reconciler
from model_operator.rollout.types import Desired
from model_operator.spec import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from model_operator.traffic import istio, router_for
from model_operator.traffic.gateway_api import canary_weight
from tests.unit.operator.machine_helpers import T0, FakeKube, make_spec, model

OWNER = Owner("models", "iris", "uid-1")
CANARY_30 = Desired(model("1.0.0"), model("2.0.0"), 30, canary_capacity=30)


def spec_on(provider: str, version: str = "2.0.0") -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({**make_spec(version).wire(), "traffic": {"provider": provider}})


def no_metrics(spec: ModelDeploymentSpec, deadline: Deadline) -> MetricProvider:
    raise AssertionError("no analysis is due in these ticks")


def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, no_metrics, OperatorMetrics())


def apply(kube: FakeKube, provider: str, carrying: str | None, desired: Desired = CANARY_30) -> str:
    """One ``Reconciler.apply`` on ``provider`` after a route of ``carrying``; the provider carrying now."""
    found = {track: kube.objects.get(("Deployment", f"iris-{track}")) for track in ("stable", "canary", "preview")}
    spec = spec_on(provider)
    return reconciler(kube).apply(OWNER, spec, desired, Phase.PROGRESSING, router_for(provider, kube), found, carrying)


def on_gateway_api() -> FakeKube:
    kube = FakeKube()
    assert apply(kube, "gatewayAPI", None) == "gatewayAPI"
    assert canary_weight(kube.objects[("HTTPRoute", "iris")], {"iris-canary"}) == 30
    kube.calls.clear()
    return kube


def test_a_new_provider_takes_over_and_only_then_the_old_route_goes() -> None:
    kube = on_gateway_api()
    assert apply(kube, "istio", "gatewayAPI") == "istio"
    assert ("HTTPRoute", "iris") not in kube.objects
    vs = kube.objects[("VirtualService", "iris")]
    assert istio.canary_weight(vs, {istio.service_host(OWNER, "canary")}) == 30, "the new route carries the weights"
    written = kube.calls.index(("apply", "VirtualService", "iris"))
    confirmed = kube.calls.index(("get", "VirtualService", "iris"))
    removed = kube.calls.index(("delete", "HTTPRoute", "iris"))
    assert written < confirmed < removed, kube.calls


def test_to_replicas_the_old_route_goes_before_any_pod() -> None:
    """The replicas router has no route object to read back: the root Service (now selecting every pod) is
    written first, then the HTTPRoute goes, and only then does stable shrink to its share of pods."""
    kube = on_gateway_api()
    assert kube.objects[("Deployment", "iris-stable")]["spec"]["replicas"] == 2
    assert apply(kube, "replicas", "gatewayAPI") == "replicas"
    assert ("HTTPRoute", "iris") not in kube.objects
    assert kube.objects[("Service", "iris")]["spec"]["selector"] == {"app.kubernetes.io/name": "iris"}
    assert kube.objects[("Deployment", "iris-stable")]["spec"]["replicas"] == 1
    service = kube.calls.index(("apply", "Service", "iris"))
    removed = kube.calls.index(("delete", "HTTPRoute", "iris"))
    shrunk = max(i for i, call in enumerate(kube.calls) if call == ("apply", "Deployment", "iris-stable"))
    assert service < removed < shrunk, kube.calls


class LosingKube(FakeKube):
    """A VirtualService write that does not take (another controller reverts it, a webhook rewrites it)."""

    def apply(self, obj: dict[str, Any]) -> None:
        if obj["kind"] != "VirtualService":
            super().apply(obj)


def test_an_unconfirmed_route_keeps_the_old_one_and_is_tried_again() -> None:
    kube = LosingKube()
    assert apply(kube, "gatewayAPI", None) == "gatewayAPI"
    assert apply(kube, "istio", "gatewayAPI") == "gatewayAPI", "still the old provider's traffic"
    assert ("HTTPRoute", "iris") in kube.objects
    assert not [call for call in kube.calls if call[0] == "delete"]


def test_an_unchanged_provider_costs_no_call() -> None:
    kube = on_gateway_api()
    assert apply(kube, "gatewayAPI", "gatewayAPI") == "gatewayAPI"
    assert {verb for verb, *_ in kube.calls} == {"apply"}, "no read-back, no delete at idle"


def test_every_other_provider_is_cleaned_not_only_the_recorded_one() -> None:
    """gatewayAPI → istio → replicas before the VirtualService was ever confirmed: both routes go."""
    kube = on_gateway_api()
    kube.apply(istio.virtual_service(OWNER, spec_on("istio"), 30))  # written by a tick that did not finish
    assert apply(kube, "replicas", "gatewayAPI") == "replicas"
    assert ("HTTPRoute", "iris") not in kube.objects and ("VirtualService", "iris") not in kube.objects


def body(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> dict[str, Any]:
    meta = {"namespace": OWNER.namespace, "name": OWNER.name, "uid": OWNER.uid, "generation": 2}
    return {"metadata": meta, "spec": spec.wire(), "status": status.model_dump(mode="json", by_alias=True)}


def test_a_tick_records_the_provider_and_says_so_once() -> None:
    kube = FakeKube()
    spec = spec_on("gatewayAPI", "1.0.0")
    status = ModelDeploymentStatus(phase=Phase.SUCCEEDED, stable=spec.model)
    first = reconciler(kube).tick(body(spec, status), T0)
    assert first.status.traffic_provider == "gatewayAPI", "a new resource adopts its provider"
    assert not [event for event in first.events if event.reason == "TrafficProviderChanged"]

    moved = spec_on("istio", "1.0.0")
    switched = reconciler(kube).tick(body(moved, first.status), T0)
    assert switched.status.traffic_provider == "istio"
    assert [e.message for e in switched.events if e.reason == "TrafficProviderChanged"] == [
        "istio's route carries the traffic; gatewayAPI's objects are removed"
    ]
    assert ("HTTPRoute", "iris") not in kube.objects and ("VirtualService", "iris") in kube.objects

    kube.calls.clear()
    idle = reconciler(kube).tick(body(moved, switched.status), T0)
    assert idle.status.traffic_provider == "istio" and not idle.events
    assert not [call for call in kube.calls if call[0] == "delete" or call[1] == "HTTPRoute"], kube.calls
