"""The candidate's objects: which pods the root Service reaches, the capacity the next tick reads back, and what the
reconciler applies for each track."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.analysis.base import MetricProvider
from model_operator.deadline import Deadline
from model_operator.kube import manifests
from model_operator.kube.manifests import CAPACITY_ANNOTATION, NAME_LABEL, TRACK_LABEL
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import Reconciler
from model_operator.rollout.types import Desired
from model_operator.spec import ModelDeploymentSpec, Phase
from model_operator.traffic import router_for
from tests.unit.operator.machine_helpers import FakeKube, make_spec, model, strategy_spec

OWNER = manifests.Owner("models", "iris", "uid-1")
SPEC = make_spec("2.0.0")


def rolled_out(deployment: dict[str, Any]) -> dict[str, Any]:
    deployment["metadata"]["generation"] = 1
    replicas = deployment["spec"]["replicas"]
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }
    return deployment


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(service: dict[str, Any], deployment: dict[str, Any]) -> bool:
    labels = pod_labels(deployment)
    return all(labels.get(key) == value for key, value in service["spec"]["selector"].items())


@pytest.mark.parametrize("track", ["stable", "canary", "preview"])
def test_pods_and_selector_name_their_track(track: str) -> None:
    deployment = manifests.deployment(OWNER, SPEC, SPEC.model, track, 2)
    assert pod_labels(deployment)[TRACK_LABEL] == track
    # the selector is immutable on a Deployment: it names the track and nothing that changes during a rollout
    assert deployment["spec"]["selector"]["matchLabels"] == {NAME_LABEL: "iris", TRACK_LABEL: track}


@pytest.mark.parametrize(
    ("provider", "behind_root"),
    # replicas: every pod (a preview never exists there: the spec refuses BlueGreen and Shadow with it)
    [("gatewayAPI", ["stable"]), ("istio", ["stable"]), ("replicas", ["stable", "canary", "preview"])],
)
def test_root_service_reaches_stable_only_unless_pods_are_the_router(provider: str, behind_root: list[str]) -> None:
    spec = ModelDeploymentSpec.model_validate({**make_spec("2.0.0").wire(), "traffic": {"provider": provider}})
    root = manifests.service(OWNER, spec, None)
    assert root["metadata"]["name"] == "iris"
    tracks = ("stable", "canary", "preview")
    assert [t for t in tracks if selects(root, manifests.deployment(OWNER, spec, spec.model, t, 1))] == behind_root
    preview = manifests.service(OWNER, spec, "preview")
    assert preview["metadata"]["name"] == "iris-preview"
    assert preview["spec"]["selector"] == {NAME_LABEL: "iris", TRACK_LABEL: "preview"}, "reachable, though dark"


@pytest.mark.parametrize("capacity", [0, 5, 30, 100])
def test_capacity_round_trips_once_the_deployment_is_rolled_out(capacity: int) -> None:
    deployment = manifests.deployment(OWNER, SPEC, SPEC.model, "canary", 2, capacity)
    assert deployment["metadata"]["annotations"][CAPACITY_ANNOTATION] == str(capacity)
    assert manifests.deployment_capacity(deployment) == 0, "no status yet: its pods are not up"
    assert manifests.deployment_capacity(rolled_out(deployment)) == capacity


def test_capacity_is_zero_while_the_deployment_is_rolling_out_or_absent() -> None:
    deployment = rolled_out(manifests.deployment(OWNER, SPEC, SPEC.model, "canary", 3, 50))
    deployment["status"]["availableReplicas"] = 2
    assert manifests.deployment_capacity(deployment) == 0, "one pod short of the capacity it was sized for"
    deployment["status"]["availableReplicas"] = 3
    deployment["metadata"]["generation"] = 2  # a new size asked for, not yet seen by the controller
    assert manifests.deployment_capacity(deployment) == 0
    assert manifests.deployment_capacity(None) == 0


def test_an_unreadable_capacity_counts_as_none() -> None:
    deployment = rolled_out(manifests.deployment(OWNER, SPEC, SPEC.model, "canary", 2, 50))
    deployment["metadata"]["annotations"][CAPACITY_ANNOTATION] = "lots"
    assert manifests.deployment_capacity(deployment) == 0


# --- what the reconciler applies for a candidate ------------------------------------------------------------


def applied(
    spec: ModelDeploymentSpec,
    desired: Desired,
    phase: Phase = Phase.PROGRESSING,
    kube: FakeKube | None = None,
) -> FakeKube:
    kube = kube or FakeKube()
    found = {track: kube.objects.get(("Deployment", f"iris-{track}")) for track in ("stable", "canary", "preview")}
    Reconciler(kube, no_metrics, OperatorMetrics()).apply(
        OWNER, spec, desired, phase, router_for(spec.traffic.provider, kube), found
    )
    return kube


class OrderedKube(FakeKube):
    """Also records the order of applies: (kind, name, replicas or route weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[str, str]] = []

    def apply(self, obj: dict[str, Any]) -> None:
        super().apply(obj)
        self.order.append((obj["kind"], obj["metadata"]["name"]))


def test_the_route_moves_before_a_candidate_loses_pods_and_after_it_gains_them() -> None:
    spec = make_spec("2.0.0")
    kube = OrderedKube()
    applied(spec, Desired(model("1.0.0"), spec.model, 50, canary_capacity=50), kube=kube)
    assert kube.order.index(("Deployment", "iris-canary")) < kube.order.index(("HTTPRoute", "iris")), "grow first"
    kube.order.clear()
    applied(spec, Desired(model("2.0.0"), None, 0), kube=kube)  # promoted and confirmed: the canary goes
    assert kube.objects[("Deployment", "iris-canary")]["spec"]["replicas"] == 0
    assert kube.order.index(("HTTPRoute", "iris")) < kube.order.index(("Deployment", "iris-canary")), "route first"


def test_model_server_pods_drain_before_they_stop() -> None:
    pod = manifests.deployment(OWNER, SPEC, SPEC.model, "canary", 2)["spec"]["template"]["spec"]
    drain = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain >= 5, "endpoint removal needs time to reach every gateway before the server stops listening"
    assert pod["terminationGracePeriodSeconds"] > drain + 5, "room to finish in-flight requests after the drain"
    rolling = manifests.deployment(OWNER, SPEC, SPEC.model, "canary", 2)["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a template change never takes a serving pod away before its successor"


def no_metrics(spec: ModelDeploymentSpec, deadline: Deadline) -> MetricProvider:
    raise AssertionError("applying queries no metrics")


def test_a_preview_is_applied_full_size_on_its_own_track_and_off_the_root_service() -> None:
    spec = strategy_spec("2.0.0", {"type": "BlueGreen", "blueGreen": {"previewReplicas": 1}})
    desired = Desired(model("1.0.0"), spec.model, 0, track="preview")
    kube = applied(spec, desired)
    assert kube.objects[("Deployment", "iris-preview")]["spec"]["replicas"] == 1
    root = kube.objects[("Service", "iris")]
    assert not selects(root, kube.objects[("Deployment", "iris-preview")])
    assert selects(root, kube.objects[("Deployment", "iris-stable")])
    assert ("Deployment", "iris-canary") not in kube.objects and ("Service", "iris-preview") in kube.objects
    refs = kube.objects[("HTTPRoute", "iris")]["spec"]["rules"][0]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in refs] == [("iris-stable", 100), ("iris-preview", 0)]

    switched = applied(spec, Desired(model("1.0.0"), spec.model, 0, canary_capacity=100, track="preview"))
    assert switched.objects[("Deployment", "iris-preview")]["spec"]["replicas"] == spec.replicas
    preview = switched.objects[("Deployment", "iris-preview")]
    assert preview["metadata"]["annotations"][CAPACITY_ANNOTATION] == "100"


def test_a_shadow_answers_no_user_through_the_root_service() -> None:
    spec = strategy_spec("2.0.0", {"type": "Shadow"})
    kube = applied(spec, Desired(model("1.0.0"), spec.model, 0, mirror_percent=100, canary_capacity=100))
    assert not selects(kube.objects[("Service", "iris")], kube.objects[("Deployment", "iris-canary")]), (
        "the shadow's pods are behind <md>"
    )
