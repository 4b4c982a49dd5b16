"""The candidate's objects: which pods take live traffic, the capacity the next tick reads back, and what the
reconciler applies for each track."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.analysis.base import MetricProvider
from model_operator.kube import manifests
from model_operator.kube.manifests import CAPACITY_ANNOTATION, LIVE_LABEL, NAME_LABEL, TRACK_LABEL
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


@pytest.mark.parametrize(("track", "live"), [("stable", True), ("canary", True), ("preview", False)])
def test_only_live_tracks_carry_the_live_label(track: str, live: bool) -> None:
    deployment = manifests.deployment(OWNER, SPEC, SPEC.model, track, 2)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (pod_labels.get(LIVE_LABEL) == "true") is live
    assert pod_labels[TRACK_LABEL] == track
    # the selector is immutable on a Deployment: it must not depend on whether the track is live
    assert deployment["spec"]["selector"]["matchLabels"] == {NAME_LABEL: "iris", TRACK_LABEL: track}


def test_root_service_selects_live_pods_only_and_track_services_their_track() -> None:
    root = manifests.service(OWNER, SPEC, None)
    assert root["metadata"]["name"] == "iris"
    assert root["spec"]["selector"] == {NAME_LABEL: "iris", LIVE_LABEL: "true"}
    preview = manifests.service(OWNER, SPEC, "preview")
    assert preview["metadata"]["name"] == "iris-preview"
    assert preview["spec"]["selector"] == {NAME_LABEL: "iris", TRACK_LABEL: "preview"}, "reachable, though dark"

    def selects(service: dict[str, Any], track: str) -> bool:
        pod_labels = manifests.deployment(OWNER, SPEC, SPEC.model, track, 1)["spec"]["template"]["metadata"]["labels"]
        return all(pod_labels.get(key) == value for key, value in service["spec"]["selector"].items())

    assert [track for track in ("stable", "canary", "preview") if selects(root, track)] == ["stable", "canary"]
    assert [track for track in ("stable", "canary", "preview") if selects(preview, track)] == ["preview"]


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


def applied(spec: ModelDeploymentSpec, desired: Desired, phase: Phase = Phase.PROGRESSING) -> FakeKube:
    kube = FakeKube()
    Reconciler(kube, no_metrics, OperatorMetrics()).apply(
        OWNER, spec, desired, phase, router_for(spec.traffic.provider, kube)
    )
    return kube


def no_metrics(spec: ModelDeploymentSpec) -> MetricProvider:
    raise AssertionError("applying queries no metrics")


def live_pods(kube: FakeKube, name: str) -> bool:
    labels = kube.objects[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
    return bool(labels.get(LIVE_LABEL) == "true")


def test_a_preview_is_applied_full_size_on_its_own_track_and_off_the_root_service() -> None:
    spec = strategy_spec("2.0.0", {"type": "BlueGreen", "blueGreen": {"previewReplicas": 1}})
    desired = Desired(model("1.0.0"), spec.model, 0, track="preview")
    kube = applied(spec, desired)
    assert kube.objects[("Deployment", "iris-preview")]["spec"]["replicas"] == 1
    assert not live_pods(kube, "iris-preview") and live_pods(kube, "iris-stable")
    assert ("Deployment", "iris-canary") not in kube.objects and ("Service", "iris-preview") in kube.objects
    refs = kube.objects[("HTTPRoute", "iris")]["spec"]["rules"][0]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in refs] == [("iris-stable", 100), ("iris-preview", 0)]

    switched = applied(spec, Desired(model("1.0.0"), spec.model, 0, canary_capacity=100, track="preview"))
    assert switched.objects[("Deployment", "iris-preview")]["spec"]["replicas"] == spec.replicas
    preview = switched.objects[("Deployment", "iris-preview")]
    assert preview["metadata"]["annotations"][CAPACITY_ANNOTATION] == "100"


@pytest.mark.xfail(
    strict=True,
    reason="a shadow runs on the canary track, whose pods carry LIVE_LABEL: the root Service answers users with it",
)
def test_a_shadow_answers_no_user_through_the_root_service() -> None:
    spec = strategy_spec("2.0.0", {"type": "Shadow"})
    kube = applied(spec, Desired(model("1.0.0"), spec.model, 0, mirror_percent=100, canary_capacity=100))
    root = kube.objects[("Service", "iris")]["spec"]["selector"]
    pods = kube.objects[("Deployment", "iris-canary")]["spec"]["template"]["metadata"]["labels"]
    assert not all(pods.get(key) == value for key, value in root.items()), "the shadow's pods are behind <md>"
