"""Blue-green and shadow rollouts end to end on the real rig: API server + controllers + kwok, the operator
on the chart's ServiceAccount (a release of its own, ``tests/support/release_rig.py``), real model-server
processes, real Prometheus.

``WeightedLoad`` plays the gateway: it splits live requests by the HTTPRoute's weights and copies the share
its RequestMirror filter names to the mirror backend, discarding those answers. Smoke traffic to a
blue-green preview goes straight to the preview server, as a QA job would hit the ``<md>-preview`` Service.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.rig import Cluster, Prometheus
from tests.support.release_rig import ReleaseRig, release_rig
from tests.support.rollouts import WeightedLoad, model_deployment, model_ref, wait_for
from tests.support.servers import ServerProcess, pod_args

pytestmark = pytest.mark.integration
NAMESPACE = "strategy-rollouts"
RELEASE = "strategies"
STEPS = [{"setWeight": 50}, {"setWeight": 100}]
ANALYSIS = {"interval": "2s", "window": "8s", "failureLimit": 2, "minRequests": 10, "inconclusiveLimit": 6,
            "slo": {"maxErrorRate": 0.02, "maxLatencyP95": "250ms"}}  # fmt: skip


@pytest.fixture(scope="module")
def rig(cluster: Cluster, prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseRig]:
    with release_rig(cluster, prometheus, tmp_path_factory.mktemp("strategies"), RELEASE, NAMESPACE) as made:
        yield made


@dataclass
class Rollout:
    rig: ReleaseRig
    name: str
    stable: ServerProcess
    candidate: ServerProcess
    load: WeightedLoad

    def wait_settled(self, timeout: float = 150) -> dict[str, Any]:
        status = self.rig.wait_phase(self.name, {"Succeeded", "RolledBack"}, timeout)
        wait_for(lambda: self.load.canary_weight() == 0, 15, "the gateway's weight back on stable")
        return status

    def deployment(self, track: str) -> dict[str, Any]:
        apps = k8s.AppsV1Api(self.rig.cluster.api_client)
        found: dict[str, Any] = apps.read_namespaced_deployment(f"{self.name}-{track}", NAMESPACE).to_dict()
        return found

    def seconds_at(self, weight: int) -> float:
        """How long the gateway's route held ``weight`` on the candidate, from its first to its last sight."""
        seen = [t for t, w in self.load.weights if w == weight]
        return seen[-1] - seen[0] if seen else 0.0

    def distinct_weights(self) -> list[int]:
        out: list[int] = []
        for _, weight in self.load.weights:
            if not out or out[-1] != weight:
                out.append(weight)
        return out


@pytest.fixture
def rollout(rig: ReleaseRig, tmp_path: Path) -> Iterator[Callable[..., Rollout]]:
    """``rollout(name, strategy, track, candidate_args, direct)``: v1 stable and settled, servers for both
    versions up and scraped, load on, then the spec moves to v2 under ``strategy``."""
    started: list[Rollout] = []

    def run(
        name: str,
        strategy: Mapping[str, Any],
        track: str,
        candidate_args: tuple[str, ...] = (),
        direct: Mapping[str, float] | None = None,
    ) -> Rollout:
        v1, v1_dir = rig.bundle("iris-v1", f"1.0.0-{name}")
        v2, v2_dir = rig.bundle("iris-v2", f"2.0.0-{name}")
        stable = ServerProcess(f"file://{v1_dir}", tmp_path / f"{name}-stable.log", pod_args(NAMESPACE, name, "stable"))
        candidate = ServerProcess(
            f"file://{v2_dir}", tmp_path / f"{name}-{track}.log", (*pod_args(NAMESPACE, name, track), *candidate_args)
        )
        for server in (stable, candidate):
            server.spawn()
        backends = {"stable": stable.url, track: candidate.url}
        load = WeightedLoad(rig.cluster.api_client, NAMESPACE, name, backends, rate=30, direct=direct)
        current = Rollout(rig, name, stable, candidate, load)
        started.append(current)
        stable.wait_ready()
        candidate.wait_ready()
        labels = {"namespace": NAMESPACE}
        rig.prometheus.add_target(f"{name}-stable", f"127.0.0.1:{stable.port}", labels)
        rig.prometheus.add_target(f"{name}-{track}", f"127.0.0.1:{candidate.port}", labels)
        address = rig.prometheus.url
        rig.cluster.apply(model_deployment(name, NAMESPACE, model_ref(v1, v1_dir), address, STEPS, ANALYSIS, strategy))
        rig.wait_phase(name, {"Succeeded"}, 90)
        load.start()
        time.sleep(2)
        rig.cluster.apply(model_deployment(name, NAMESPACE, model_ref(v2, v2_dir), address, STEPS, ANALYSIS, strategy))
        wait_for(lambda: rig.status(name).get("canaryVersion") == v2.version, 60, f"candidate {v2.version} started")
        return current

    yield run
    for current in started:
        current.load.stop()
        rig.delete(current.name)
        for job in (f"{current.name}-stable", f"{current.name}-preview", f"{current.name}-canary"):
            rig.prometheus.remove_target(job)
        current.stable.stop()
        current.candidate.stop()
    if started:
        print(f"--- operator log\n{rig.operator.log()[-5000:]}")


def blue_green(**settings: Any) -> dict[str, Any]:
    return {"type": "BlueGreen", "blueGreen": {"passingAnalyses": 2, "scaleDownDelay": "5s", **settings}}


def stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_blue_green_preview_is_switched_then_promoted(rig: ReleaseRig, rollout: Callable[..., Rollout]) -> None:
    run = rollout("bg", blue_green(), "preview", direct={"preview": 15})
    preview = wait_for(lambda: (d := run.deployment("preview"))["spec"]["replicas"] == 2 and d, 60, "full preview")
    root = k8s.CoreV1Api(rig.cluster.api_client).read_namespaced_service("bg", NAMESPACE).spec.selector
    pods = preview["spec"]["template"]["metadata"]["labels"]
    assert not all(pods.get(key) == value for key, value in root.items()), "the root Service never reaches a preview"
    status = run.wait_settled()
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["stableVersion"] == "2.0.0-bg" and "canaryVersion" not in status

    assert run.distinct_weights() == [0, 100, 0], "dark preview, one switch, traffic back on the new stable"
    assert run.seconds_at(100) >= 4.0, "the old version stayed up for scaleDownDelay after the switch"
    assert run.load.sent_direct[("preview", 200)] > 20, run.load.sent_direct
    assert run.load.sent[("preview", 200)] > 0, "after the switch the preview served users"
    assert not [key for key in run.load.sent if key[1] >= 500], run.load.sent
    assert run.deployment("preview")["spec"]["replicas"] == 0, "the preview is scaled away once stable runs v2"
    steps = [e.message for e in rig.events("bg") if e.reason == "StepStarted"]
    assert any("preview" in m for m in steps) and any("switch" in m for m in steps), steps
    passes = [r for r in status["analysis"] if r["check"] == "requests" and r["verdict"] == "Pass"]
    assert passes and 'track="preview"' in passes[0]["query"], "the preview was judged on its own series"


def test_a_failing_preview_is_rolled_back_without_a_live_request(
    rig: ReleaseRig, rollout: Callable[..., Rollout]
) -> None:
    run = rollout("bgbad", blue_green(), "preview", ("--fault-error-rate", "0.2"), direct={"preview": 15})
    status = run.wait_settled()
    assert status["phase"] == "RolledBack", status.get("message")
    assert status["stableVersion"] == "1.0.0-bgbad" and status["canaryWeight"] == 0
    assert {r["check"] for r in status["analysis"] if r["verdict"] == "Fail"} == {"error-rate"}, status["analysis"]
    assert max(w for _, w in run.load.weights) == 0, "never switched"
    assert not [key for key in run.load.sent if key[0] == "preview"], f"no user reached the preview: {run.load.sent}"
    assert run.load.sent_direct[("preview", 500)] > 0
    # the Events are posted after the status patch that says RolledBack: wait for them, do not race them
    wait_for(
        lambda: "rolling back preview 2.0.0-bgbad" in " ".join(e.message for e in rig.events("bgbad")),
        15,
        "the RollingBack Event",
    )


def test_blue_green_abort_in_the_scale_down_delay_switches_back_at_once(
    rig: ReleaseRig, rollout: Callable[..., Rollout], request: pytest.FixtureRequest
) -> None:
    run = rollout("bgabort", blue_green(autoPromote=False, scaleDownDelay="10m"), "preview", direct={"preview": 15})
    status = rig.wait_phase("bgabort", {"Paused", "RolledBack", "Succeeded"}, 90)
    assert status["phase"] == "Paused" and "modelrollout promote" in status["message"], status
    assert run.load.canary_weight() == 0, "autoPromote false: the preview waits, dark"
    rig.annotate("bgabort", "promote", stamp())
    wait_for(lambda: run.load.canary_weight() == 100, 60, "the switch to the preview")
    wait_for(lambda: run.load.sent[("preview", 200)] > 20, 30, "users served by the preview")
    stable_before = run.deployment("stable")
    rig.annotate("bgabort", "abort", stamp())
    aborted = time.monotonic()
    wait_for(lambda: run.load.canary_weight() == 0, 30, "the switch back", interval=0.05)
    switched_back = time.monotonic() - aborted
    status = rig.wait_phase("bgabort", {"RolledBack"}, 30)
    assert status["stableVersion"] == "1.0.0-bgabort"
    stable_after = run.deployment("stable")
    assert stable_after["spec"]["template"] == stable_before["spec"]["template"], "the old version never left"
    assert (stable_after["status"]["available_replicas"] or 0) == 2
    assert switched_back < 10, f"an abort in the hold is a route change, not a redeploy ({switched_back:.1f} s)"
    request.node.user_properties.append(
        ("measured", f"blue-green abort after the switch: gateway back on the old version in {switched_back:.2f} s")
    )


def test_a_bad_shadow_is_discarded_and_no_user_sees_it(rig: ReleaseRig, rollout: Callable[..., Rollout]) -> None:
    strategy = {"type": "Shadow", "shadow": {"mirrorPercent": 100, "passingAnalyses": 3, "then": "Canary"}}
    run = rollout("shadowbad", strategy, "canary", ("--fault-error-rate", "0.2"))
    status = run.wait_settled()
    assert status["phase"] == "RolledBack", status.get("message")
    assert {r["check"] for r in status["analysis"] if r["verdict"] == "Fail"} == {"error-rate"}, status["analysis"]
    assert max(w for _, w in run.load.weights) == 0, "a shadow never gets live weight"
    assert max(m for _, m in run.load.mirrors) == 100, "the route mirrored every request while shadowing"
    wait_for(lambda: run.load.mirrors[-1][1] == 0, 15, "the mirror filter removed")
    assert run.load.mirrored[("canary", 500)] > 0, run.load.mirrored
    assert not [key for key in run.load.sent if key[0] == "canary" or key[1] >= 500], run.load.sent
    wait_for(  # the Events are posted after the status patch that says RolledBack
        lambda: "rolling back shadow 2.0.0-shadowbad" in " ".join(e.message for e in rig.events("shadowbad")),
        15,
        "the RollingBack Event",
    )


def test_a_good_shadow_goes_live_with_a_blue_green_switch(rig: ReleaseRig, rollout: Callable[..., Rollout]) -> None:
    strategy = {
        "type": "Shadow",
        "shadow": {"mirrorPercent": 100, "passingAnalyses": 2, "then": "BlueGreen"},
        "blueGreen": {"scaleDownDelay": "3s"},
    }
    run = rollout("shadowgood", strategy, "canary")
    status = run.wait_settled()
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["stableVersion"] == "2.0.0-shadowgood"
    assert run.distinct_weights() == [0, 100, 0]
    assert run.load.mirrored[("canary", 200)] > 20 and max(m for _, m in run.load.mirrors) == 100
    mirrored_at_100 = [m for (t, w), (_, m) in zip(run.load.weights, run.load.mirrors, strict=True) if w == 100]
    assert set(mirrored_at_100) == {0}, "mirroring stops when the candidate goes live"


def test_strategy_validation_on_the_api_server(rig: ReleaseRig) -> None:
    v1, v1_dir = rig.bundle("iris-v1", "1.0.0-bg-cel")

    def dry_run(strategy: dict[str, Any], traffic: dict[str, Any] | None = None) -> tuple[int, str]:
        body = model_deployment("cel", NAMESPACE, model_ref(v1, v1_dir), rig.prometheus.url, STEPS, ANALYSIS, strategy)
        if traffic is not None:
            body["spec"]["traffic"] = traffic
        result = rig.cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False
        )
        return result.returncode, result.stderr

    assert dry_run(blue_green(autoPromote=False, previewReplicas=1)) == (0, "")
    assert dry_run({"type": "Shadow", "shadow": {"mirrorPercent": 10}}, {"provider": "istio"}) == (0, "")
    assert dry_run({"type": "Canary"}, {"provider": "replicas"}) == (0, "")
    for strategy, traffic, message in (
        (blue_green(), {"provider": "replicas"}, "need traffic.provider gatewayAPI or istio"),
        ({"type": "Shadow"}, {"provider": "replicas"}, "need traffic.provider gatewayAPI or istio"),
        ({"type": "Shadow", "shadow": {"mirrorPercent": 0}}, None, "mirrorPercent"),
        ({"type": "Shadow", "shadow": {"then": "Shadow"}}, None, "then"),
        (blue_green(scaleDownDelay="soon"), None, "scaleDownDelay"),
        ({"type": "Linear"}, None, "strategy.type"),
    ):
        code, stderr = dry_run(strategy, traffic)
        assert code != 0, strategy
        assert message in stderr, stderr
