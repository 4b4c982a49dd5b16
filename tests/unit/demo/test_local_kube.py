"""LocalKube as the operator sees it (the ``Kube`` Protocol), with fake processes on a fake clock."""

from __future__ import annotations

import random
from typing import Any

import pytest

from model_operator.kube import manifests
from model_operator.kube.client import Kube
from model_operator.reconcile import API_VERSION
from model_operator.spec import KIND, ModelDeploymentSpec, ModelRef, Phase
from modelrollout.demo.local_kube import LocalKube, NotFoundError, merge_patch
from modelrollout.demo.router import LocalRouter
from modelrollout.demo.settings import FAST
from modelrollout.demo.story import faults_for, model_deployment
from tests.unit.demo.fakes import V1, V2, Clock, FakeFactory, Operator

OWNER = manifests.Owner("demo", "iris", "uid-1")


def spec() -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(model_deployment(V1, FAST, None)["spec"])


def deployment(model: ModelRef, replicas: int = 1) -> dict[str, Any]:
    return manifests.deployment(OWNER, spec(), model, "stable", replicas)


@pytest.fixture
def world() -> tuple[LocalKube, FakeFactory, Clock]:
    factory, clock = FakeFactory(), Clock()
    return LocalKube(factory, termination_delay=1.0, clock=clock), factory, clock


def test_it_is_a_kube() -> None:
    kube: Kube = LocalKube(FakeFactory())
    assert kube.get("v1", "Service", "demo", "nothing") is None


def test_apply_is_idempotent_and_generation_follows_the_spec(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, _, _ = world
    body = model_deployment(V1, FAST, None)
    kube.apply(body)
    first = kube.get(API_VERSION, KIND, "demo", "iris")
    assert first is not None and first["metadata"]["generation"] == 1
    kube.patch_status(API_VERSION, KIND, "demo", "iris", {"phase": "Succeeded", "message": "ok"})
    kube.patch_metadata(API_VERSION, KIND, "demo", "iris", {"annotations": {"modelrollout.io/pause": "t1"}})
    kube.apply(body)
    again = kube.get(API_VERSION, KIND, "demo", "iris")
    assert again is not None and again["metadata"]["generation"] == 1
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["status"] == {"phase": "Succeeded", "message": "ok"}, "a re-apply keeps the status"
    assert again["metadata"]["annotations"] == {"modelrollout.io/pause": "t1"}, "and others' annotations"
    kube.apply(model_deployment(V2, FAST, None))
    changed = kube.get(API_VERSION, KIND, "demo", "iris")
    assert changed is not None and changed["metadata"]["generation"] == 2
    kube.patch_status(API_VERSION, KIND, "demo", "iris", {"message": None})
    assert kube.get(API_VERSION, KIND, "demo", "iris")["status"] == {"phase": "Succeeded"}  # type: ignore[index]
    with pytest.raises(NotFoundError):
        kube.patch_status(API_VERSION, KIND, "demo", "other", {})


def test_delete_removes_only_the_object_with_that_uid(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, _, _ = world
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": OWNER.metadata("iris")}
    kube.apply(route)
    stored = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris")
    assert stored is not None
    kube.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris", "another-uid")
    assert kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris") is not None, "precondition failed"
    kube.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris", stored["metadata"]["uid"])
    assert kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris") is None
    kube.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "demo", "iris", stored["metadata"]["uid"])  # idempotent


def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }


def test_a_deployment_is_served_once_its_process_is_ready(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, factory, _ = world
    kube.apply(deployment(V1))
    kube.apply(deployment(V1))  # idempotent: still one process
    assert len(factory.pods) == 1
    assert [e.url for e in kube.scrape_targets()] == [factory.pods[0].url], "scraped from the start"
    assert kube.endpoints({}) == [], "but no traffic before it is ready"
    assert factory.pods[0].labels["version"] == "1.0.0"
    found = kube.get("apps/v1", "Deployment", "demo", "iris-stable")
    assert manifests.deployment_serving(found) is None
    factory.pods[0].ready = True
    kube.supervise()
    found = kube.get("apps/v1", "Deployment", "demo", "iris-stable")
    assert manifests.deployment_serving(found) == V1.digest
    assert found is not None and found["status"]["availableReplicas"] == 1
    kube.apply(deployment(V1, replicas=3))  # more replicas: the same single process reports them
    found = kube.get("apps/v1", "Deployment", "demo", "iris-stable")
    assert len(factory.pods) == 1 and manifests.deployment_serving(found) == V1.digest
    assert found is not None and found["status"]["readyReplicas"] == 3
    assert [e.url for e in kube.endpoints({manifests.TRACK_LABEL: "stable"})] == [factory.pods[0].url]
    assert kube.endpoints({manifests.TRACK_LABEL: "canary"}) == []


def test_a_new_template_is_a_rolling_update(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, factory, clock = world
    kube.apply(deployment(V1))
    factory.pods[0].ready = True
    kube.supervise()
    kube.apply(deployment(V2))
    old, new = factory.pods
    assert manifests.deployment_serving(kube.get("apps/v1", "Deployment", "demo", "iris-stable")) is None
    kube.supervise()
    assert old.signals == [], "the old process serves until the new one is ready"
    new.ready = True
    kube.supervise()
    assert manifests.deployment_serving(kube.get("apps/v1", "Deployment", "demo", "iris-stable")) == V2.digest
    assert {e.url for e in kube.endpoints({})} == {old.url, new.url}, "terminating, but still routable"
    clock.now += 1.5
    kube.supervise()
    assert old.signals == ["TERM"] and [e.url for e in kube.endpoints({})] == [new.url]
    assert {e.url for e in kube.scrape_targets()} == {old.url, new.url}, "scraped until it exits"
    old.code = 0
    kube.supervise()
    assert [e.url for e in kube.scrape_targets()] == [new.url]
    assert kube.failures() == []


def test_scaling_to_zero_and_crashes(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, factory, _ = world
    kube.apply(deployment(V1))
    factory.pods[0].ready = True
    kube.supervise()
    kube.apply(deployment(V1, replicas=0))
    found = kube.get("apps/v1", "Deployment", "demo", "iris-stable")
    assert found is not None and found["status"]["replicas"] == 0
    assert manifests.deployment_serving(found) == V1.digest, "0 of 0 replicas is rolled out, as in Kubernetes"
    kube.apply(deployment(V2))
    factory.pods[1].code = 2
    kube.supervise()
    assert kube.failures() == ["iris-stable (2.0.0) exited with code 2: boom"]


def test_capacity_annotation_and_scale_changes_read_back_as_the_operator_expects(
    world: tuple[LocalKube, FakeFactory, Clock],
) -> None:
    """Capacity before traffic: the operator sizes the candidate, annotates the share it is sized for, and
    raises its traffic only once ``deployment_capacity`` reads that share back from a rolled-out Deployment."""
    kube, factory, _ = world

    def canary() -> dict[str, Any]:
        found = kube.get("apps/v1", "Deployment", "demo", "iris-canary")
        assert found is not None
        return found

    kube.apply(manifests.deployment(OWNER, spec(), V2, "canary", 1, capacity=5))
    assert canary()["metadata"]["annotations"] == {manifests.CAPACITY_ANNOTATION: "5"}
    assert manifests.deployment_capacity(canary()) == 0, "not available yet"
    factory.pods[0].ready = True
    kube.supervise()
    assert manifests.deployment_capacity(canary()) == 5

    kube.apply(manifests.deployment(OWNER, spec(), V2, "canary", 3, capacity=100))
    scaled = canary()
    assert scaled["metadata"]["generation"] == 2, "a replicas change is a spec change"
    assert scaled["status"] == {
        "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
    }  # fmt: skip
    assert manifests.deployment_capacity(scaled) == 100 and len(factory.pods) == 1

    kube.apply(manifests.deployment(OWNER, spec(), V2, "canary", 3, capacity=50))
    assert canary()["metadata"]["generation"] == 2, "an annotation is not the spec"
    assert manifests.deployment_capacity(canary()) == 50

    kube.apply(manifests.deployment(OWNER, spec(), V1, "canary", 0, capacity=0))  # scaled away after a rollout
    assert canary()["status"]["replicas"] == 0 and manifests.deployment_capacity(canary()) == 0


def test_close_stops_every_process(world: tuple[LocalKube, FakeFactory, Clock]) -> None:
    kube, factory, _ = world
    kube.apply(deployment(V1))
    kube.apply(manifests.deployment(OWNER, spec(), V2, "canary", 1))
    kube.close()
    assert [p.signals for p in factory.pods] == [["TERM"], ["TERM"]]
    assert all(p.code == 0 for p in factory.pods)


def test_the_operator_reconciler_runs_on_local_kube_and_the_local_router_follows_it() -> None:
    operator = Operator()
    kube, router = operator.kube, operator.router
    kube.apply(model_deployment(V1, FAST, None))
    while operator.tick().phase is not Phase.SUCCEEDED:
        pass
    assert router.canary_weight() == 0
    rng = random.Random(1)
    assert {p.version for p in (router.pick(rng) for _ in range(20)) if p} == {"1.0.0"}

    kube.apply(model_deployment(V2, FAST, None))
    weights = []
    for _ in range(60):
        phase = operator.tick().phase
        weights.append(router.canary_weight())
        if phase is Phase.SUCCEEDED:
            break
    assert phase is Phase.SUCCEEDED
    assert [w for i, w in enumerate(weights) if w and (i == 0 or weights[i - 1] != w)] == [5, 25, 50, 100]
    stable = kube.get("apps/v1", "Deployment", "demo", "iris-stable")
    assert manifests.deployment_serving(stable) == V2.digest
    picks = [router.pick(rng) for _ in range(20)]
    assert {(p.track, p.version) for p in picks if p} == {("stable", "2.0.0")}


def test_router_splits_by_weight_and_reports_missing_endpoints() -> None:
    factory = FakeFactory(ready_at_once=True)
    kube = LocalKube(factory)
    router = LocalRouter(kube, "demo", "iris")
    assert router.pick(random.Random(0)) is None, "no route yet"
    from model_operator.traffic.gateway_api import httproute

    for track in ("stable", "canary"):
        kube.apply(manifests.service(OWNER, spec(), track))
    kube.apply(deployment(V1))
    kube.supervise()
    kube.apply(httproute(OWNER, spec(), 25))
    router.refresh()
    rng = random.Random(7)
    picks = [router.pick(rng) for _ in range(2000)]
    canary = [p for p in picks if p and p.track == "canary"]
    assert 400 < len(canary) < 600
    assert all(p.url is None for p in canary), "no canary process: a 503 at the gateway"
    assert router.canary_weight() == 25


def test_faults_only_for_the_bad_version() -> None:
    assert faults_for({"version": "3.0.0"})[0] == "--fault-error-rate"
    assert faults_for({"version": "2.0.0"}) == ()
