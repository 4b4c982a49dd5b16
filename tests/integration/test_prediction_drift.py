"""A canary that is fast and never errs, but predicts one class for everything, rolled back by the
prediction-distribution comparison (``compareToStable.predictionDrift``) on the real rig.

The same loop as ``test_operator_canary.py``: API server + controllers + kwok, the operator as the chart's
ServiceAccount, real model-server processes, real Prometheus; ``WeightedLoad`` forwards requests by the
HTTPRoute weights, posting rows of the iris data set (one fixed row would get one class from both models).
The chart is installed as a release of its own (``tests/support/release_rig.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.datasets import load_iris

from model_server.bundle import ModelManifest
from tests.rig import Cluster, Prometheus
from tests.support.release_rig import ReleaseRig as Rig
from tests.support.release_rig import release_rig
from tests.support.rollouts import WeightedLoad, model_deployment, model_ref, wait_for
from tests.support.servers import ServerProcess, pod_args

pytestmark = pytest.mark.integration
NAMESPACE = "drift-rollouts"
RELEASE = "drift"  # fullnameOverride: ServiceAccount, ClusterRole and the Role's one Lease are "drift-operator"


def iris_rows() -> list[dict[str, float]]:
    names = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    return [dict(zip(names, map(float, row), strict=True)) for row in load_iris().data]


@pytest.fixture(scope="module")
def rig(cluster: Cluster, prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with release_rig(cluster, prometheus, tmp_path_factory.mktemp("drift"), RELEASE, NAMESPACE) as made:
        yield made


STEPS = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"setWeight": 100}]
ANALYSIS = {"interval": "2s", "window": "8s", "failureLimit": 2, "minRequests": 10, "inconclusiveLimit": 6,
            "slo": {"maxErrorRate": 0.02, "maxLatencyP95": "250ms"},
            "compareToStable": {"predictionDrift": 0.2, "minSamples": 20}}  # fmt: skip


def md_body(name: str, manifest: ModelManifest, bundle: Path, prometheus: str) -> dict[str, Any]:
    return model_deployment(name, NAMESPACE, model_ref(manifest, bundle), prometheus, STEPS, ANALYSIS)


@pytest.fixture
def servers(rig: Rig, tmp_path: Path) -> Iterator[Callable[[str, str], tuple[ServerProcess, ServerProcess]]]:
    started: list[tuple[str, ServerProcess, ServerProcess]] = []

    def run(name: str, canary_stem: str) -> tuple[ServerProcess, ServerProcess]:
        v1, v1_dir = rig.bundle("iris-v1", f"1.0.0-{name}")
        _, v2_dir = rig.bundle(canary_stem, f"3.0.0-{name}")
        stable = ServerProcess(f"file://{v1_dir}", tmp_path / f"{name}-stable.log", pod_args(NAMESPACE, name, "stable"))
        canary = ServerProcess(f"file://{v2_dir}", tmp_path / f"{name}-canary.log", pod_args(NAMESPACE, name, "canary"))
        started.append((name, stable, canary))
        for server in (stable, canary):
            server.spawn()
        stable.wait_ready()
        canary.wait_ready()
        labels = {"namespace": NAMESPACE}
        rig.prometheus.add_target(f"{name}-stable", f"127.0.0.1:{stable.port}", labels)
        rig.prometheus.add_target(f"{name}-canary", f"127.0.0.1:{canary.port}", labels)
        rig.cluster.apply(md_body(name, v1, v1_dir, rig.prometheus.url))
        rig.wait_phase(name, {"Succeeded"}, 90)
        return stable, canary

    yield run
    for name, stable, canary in started:
        rig.delete(name)
        for job in (f"{name}-stable", f"{name}-canary"):
            rig.prometheus.remove_target(job)
        stable.stop()
        canary.stop()
    if started:
        print(f"--- operator log\n{rig.operator.log()[-5000:]}")


def test_a_constant_class_canary_is_rolled_back_without_a_single_error(
    rig: Rig, servers: Callable[[str, str], tuple[ServerProcess, ServerProcess]], request: pytest.FixtureRequest
) -> None:
    name = "constant"
    stable, canary = servers(name, "iris-v3-constant")
    backends = {"stable": stable.url, "canary": canary.url}
    load = WeightedLoad(rig.cluster.api_client, NAMESPACE, name, backends, rate=40, rows=iris_rows()).start()
    try:
        time.sleep(2)  # stable's class mix is in Prometheus before the canary arrives
        v3, v3_dir = rig.bundle("iris-v3-constant", f"3.0.0-{name}")
        rig.cluster.apply(md_body(name, v3, v3_dir, rig.prometheus.url))
        wait_for(lambda: rig.status(name).get("canaryVersion") == v3.version, 60, f"canary {v3.version} started")
        status = rig.wait_phase(name, {"RolledBack", "Succeeded"}, 120)
        wait_for(lambda: load.canary_weight() == 0, 10, "gateway weight back to 0")
    finally:
        load.stop()
    assert status["phase"] == "RolledBack", status.get("message")
    assert status["stableVersion"] == f"1.0.0-{name}"
    assert status["canaryWeight"] == 0
    assert load.sent[("canary", 200)] > 20, load.sent
    assert not [key for key in load.sent if key[1] >= 500], f"no request failed: {load.sent}"
    assert max(weight for _, weight in load.weights) < 100, "never promoted"

    failed = [r for r in status["analysis"] if r["verdict"] == "Fail"]
    assert {r["check"] for r in failed} == {"prediction-drift"}, status["analysis"]
    drift = failed[-1]
    assert drift["value"] > 0.2
    assert drift["limit"] == "PSI <= 0.2"
    scope = f'namespace="{NAMESPACE}",modeldeployment="constant"'
    assert (
        f'sum by (class) (increase(modelserver_predictions_total{{{scope},model="iris",version="3.0.0-constant"'
        in (drift["query"])
    )
    assert "setosa 100%" in drift["message"]
    timeline = list(load.weights)
    start = next(t for t, w in timeline if w > 0)
    end = next(t for t, w in timeline if t > start and w == 0)
    request.node.user_properties.append(
        (
            "measured",
            f"constant-class canary off traffic {end - start:.1f} s after its first weight; {drift['message']}",
        )
    )
    passed = {r["check"] for r in status["analysis"] if r["verdict"] == "Pass"}
    assert {"error-rate", "latency-p95"} <= passed, "fast and error-free: only the prediction mix gives it away"


def test_compare_to_stable_validation_on_the_api_server(rig: Rig) -> None:
    """CEL and schema bounds with the human messages; integers where numbers are expected are fine."""
    v1, v1_dir = rig.bundle("iris-v1", "1.0.0-cel")
    body = md_body("cel", v1, v1_dir, rig.prometheus.url)

    def dry_run(compare: dict[str, Any]) -> tuple[int, str]:
        body["spec"]["analysis"]["compareToStable"] = compare
        result = rig.cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False
        )
        return result.returncode, result.stderr

    assert dry_run({"errorRateMargin": 0, "latencyRatio": 2, "predictionDrift": 1, "confidence": 0.99}) == (0, "")
    for compare, message in (
        ({}, "compareToStable needs at least one of errorRateMargin, latencyRatio, predictionDrift"),
        ({"errorRateMargin": 0.01, "confidence": 0.5}, "confidence is a probability between 0.5 and 1"),
        ({"errorRateMargin": 0.01, "confidence": 1}, "confidence is a probability between 0.5 and 1"),
        ({"errorRateMargin": -0.1}, "errorRateMargin is an absolute error-rate difference"),
        ({"latencyRatio": 0.8}, "latencyRatio must be at least 1"),
        ({"predictionDrift": 0}, "predictionDrift is a PSI limit and must be greater than 0"),
    ):
        code, stderr = dry_run(compare)
        assert code != 0, compare
        assert message in stderr, stderr
