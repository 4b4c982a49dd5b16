"""Two ModelDeployments of the same model and version, rolling out at once, each judged on its own traffic.

Two teams run a ModelDeployment named ``iris`` in their own namespaces, both at ``iris`` 1.0.0, and both
roll out ``iris`` 2.0.0 at the same time under load through the gateway. Team A's 2.0.0 is good; team B's
2.0.0 (iris-v3-constant) answers one class always, which only its prediction check catches. Everything
that could tell them apart besides the scoping is the same: the model name, both versions, the
ModelDeployment's name, the metric names. Team B's load is a quarter of team A's, so if the two shared
series, team B's recorded request counts would be about five times what its servers served, and team B's
top-class share would be diluted by team A's good predictions below the limit.

The oracle is the servers' own counters: every second the test reads each candidate pod's ``/metrics``
directly (pod IPs are reachable from the host), and each ``requests`` value the operator recorded is
compared with the increase of those counters over the same window.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from model_operator.kube.manifests import TRACK_LABEL
from tests.support.gateway_load import GatewayLoad
from tests.support.platform import (
    ANALYSIS,
    Bundle,
    Platform,
    model_deployment,
    model_deployment_status,
    models_namespace,
    train_bundles,
)

pytestmark = pytest.mark.e2e

NAME = "iris"
STEPS = {"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 100}]}}
WINDOW_SECONDS = 20.0
assert ANALYSIS["window"] == f"{WINDOW_SECONDS:.0f}s"


@dataclass(frozen=True)
class Team:
    namespace: str
    candidate: str
    """The examples/ config trained as 2.0.0."""
    rate: float
    """Requests per second through the gateway."""

    @property
    def hostname(self) -> str:
        return f"{NAME}.{self.namespace}.e2e.test"


GOOD = Team("team-a", "iris-v2", 24.0)
BAD = Team("team-b", "iris-v3-constant", 6.0)


@dataclass
class CandidateCounters:
    """Every candidate pod's own counters, read from its ``/metrics`` once a second: requests and predicted
    rows by class, per pod (a pod that goes away keeps its last reading; a new one starts from zero)."""

    core: k8s.CoreV1Api
    namespace: str
    readings: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    classes: dict[str, dict[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> CandidateCounters:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"counters-{self.namespace}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def served_between(self, start: float, end: float) -> float:
        """Requests the candidate pods answered between two wall-clock times (linear between readings)."""
        return self._total_at(end) - self._total_at(start)

    def class_shares(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for per_class in self.classes.values():
            for name, count in per_class.items():
                totals[name] = totals.get(name, 0.0) + count
        rows = sum(totals.values())
        return {name: count / rows for name, count in totals.items()} if rows else {}

    def _total_at(self, when: float) -> float:
        before = [(t, sum(pods.values())) for t, pods in self.readings if t <= when]
        after = [(t, sum(pods.values())) for t, pods in self.readings if t > when]
        if not before:
            return 0.0
        if not after:
            return before[-1][1]
        (t0, v0), (t1, v1) = before[-1], after[0]
        return v0 + (v1 - v0) * (when - t0) / (t1 - t0)

    def _run(self) -> None:
        pods: dict[str, float] = {}
        with httpx.Client(timeout=2.0) as client:
            while not self._stop.wait(1.0):
                selector = f"{TRACK_LABEL}=canary"
                for pod in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items:
                    if pod.status.pod_ip and pod.status.phase == "Running":
                        self._read(client, pod.metadata.name, pod.status.pod_ip, pods)
                self.readings.append((time.time(), dict(pods)))

    def _read(self, client: httpx.Client, name: str, ip: str, pods: dict[str, float]) -> None:
        try:
            text = client.get(f"http://{ip}:8080/metrics").text
        except httpx.HTTPError:
            return  # not listening yet, or draining: its last reading stands
        requests = 0.0
        classes: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "modelserver_requests_total" and sample.labels.get("endpoint") == "predict":
                    requests += sample.value
                elif sample.name == "modelserver_predictions_total":
                    classes[sample.labels["class"]] = sample.value
        pods[name] = requests
        self.classes[name] = classes


@dataclass
class Rollout:
    """One team's ModelDeployment, its load, its candidate's counters and every analysis result it recorded."""

    platform: Platform
    team: Team
    bundles: dict[str, Bundle]
    store: str
    load: GatewayLoad
    counters: CandidateCounters
    results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def apply(self, version: str) -> None:
        manifest = model_deployment(
            NAME, self.team.namespace, self.bundles[version], self.store, self.platform.images["model-server"],
            prometheus=self.platform.prometheus.url, gateway=(self.platform.gateway.namespace,
            self.platform.gateway.name), hostname=self.team.hostname, strategy=STEPS, analysis=ANALYSIS,
        )  # fmt: skip
        self.platform.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def status(self) -> dict[str, Any]:
        status = model_deployment_status(self.platform.cluster, self.team.namespace, NAME)
        for result in status.get("analysis") or []:
            self.results[(result["time"], result["check"])] = result
        return status


@pytest.fixture
def rollouts(e2e_platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rollout]]:
    platform = e2e_platform
    core = k8s.CoreV1Api(platform.cluster.api_client)
    made: dict[str, Rollout] = {}
    for team in (GOOD, BAD):
        bundles = train_bundles(tmp_path_factory.mktemp(team.namespace), {"1.0.0": "iris-v1", "2.0.0": team.candidate})
        store = models_namespace(platform.cluster, team.namespace, list(bundles.values()), platform.images)
        load = GatewayLoad(platform.gateway.url, host=team.hostname, rate=team.rate, workers=2)
        made[team.namespace] = Rollout(platform, team, bundles, store, load, CandidateCounters(core, team.namespace))
    yield made
    for rollout in made.values():
        rollout.load.stop()
        rollout.counters.stop()
        platform.cluster.kubectl("delete", "namespace", rollout.team.namespace, "--wait=false", check=False)


def _wait(
    rollouts: dict[str, Rollout], what: str, timeout: float, done: Callable[[str, dict[str, Any]], bool]
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        statuses = {name: rollout.status() for name, rollout in rollouts.items()}
        if all(done(name, status) for name, status in statuses.items()):
            return statuses
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; statuses: {statuses}")


def test_two_namespaces_same_model_and_version_each_judged_on_its_own_traffic(rollouts: dict[str, Rollout]) -> None:
    good, bad = rollouts[GOOD.namespace], rollouts[BAD.namespace]
    for rollout in (good, bad):
        rollout.apply("1.0.0")
    _wait(rollouts, "both at 1.0.0", 240, lambda _, s: s.get("phase") == "Succeeded")
    for rollout in (good, bad):
        rollout.load.start()
        rollout.counters.start()
        rollout.load.wait_for_requests(20, timeout=60)
    for rollout in (good, bad):
        rollout.apply("2.0.0")
    statuses = _wait(rollouts, "team-a promoted and team-b rolled back", 360, _rollout_over)
    for rollout in (good, bad):
        rollout.load.stop()
        rollout.counters.stop()

    finished = {GOOD.namespace: "Succeeded", BAD.namespace: "RolledBack"}
    assert {name: s["phase"] for name, s in statuses.items()} == finished, statuses
    assert statuses[GOOD.namespace]["stableVersion"] == "2.0.0"
    assert statuses[BAD.namespace]["stableVersion"] == "1.0.0"
    for rollout in (good, bad):
        failed = rollout.load.segment("rollout", 0, rollout.load.mark()).failed
        assert not failed, f"{rollout.team.namespace}: {len(failed)} requests failed at the gateway: {failed[:5]}"
        _check_recorded_requests(rollout)
    bad_share = max(bad.counters.class_shares().values())
    good_share = max(good.counters.class_shares().values())
    assert bad_share > 0.99 and good_share < 0.5, (bad_share, good_share)
    bad_judged = [r for (_, check), r in bad.results.items() if check == "top-class-share" and r.get("value")]
    assert bad_judged and all(r["value"] > 0.9 for r in bad_judged), "team-b judged on its own predictions only"


def _rollout_over(_: str, status: dict[str, Any]) -> bool:
    """Rolled back, or promoted to 2.0.0 (a bad candidate promoted ends the wait too, and fails the test)."""
    phase = status.get("phase")
    return phase == "RolledBack" or (phase == "Succeeded" and status.get("stableVersion") == "2.0.0")


def _check_recorded_requests(rollout: Rollout) -> None:
    """Each ``requests`` value the operator recorded is what this team's candidate pods served in that
    window (Prometheus extrapolates to the window's edges and lags a scrape: generous bounds). Sharing
    series with the other team would make team-b's values about five times its own."""
    judged = []
    for (stamp, check), result in sorted(rollout.results.items()):
        if check != "requests" or result.get("value") is None:
            continue
        at = dt.datetime.fromisoformat(stamp).timestamp()
        served = rollout.counters.served_between(at - WINDOW_SECONDS, at)
        if served >= 10:  # enough to compare
            judged.append((round(result["value"]), round(served)))
    assert judged, f"{rollout.team.namespace}: no analysis of a window with traffic: {rollout.results}"
    wrong = [(recorded, served) for recorded, served in judged if not 0.5 * served <= recorded <= 1.7 * served + 5]
    assert not wrong, f"{rollout.team.namespace}: recorded vs served requests {judged}"
