"""Every transition on real pods behind a real gateway, measured where users stand: at the gateway.

The chart is installed with ``helm install`` (the operator image built here, two replicas electing a
leader, in a namespace enforcing Pod Security ``restricted``); the ModelDeployment is applied with
``kubectl apply``; Prometheus finds the model servers through Kubernetes service discovery with the chart's
PodMonitor relabelling; Traefik routes by the operator's HTTPRoute. A steady load goes to the gateway's
address only while, in turn, 2.0.0 is promoted through the canary steps, a bad 3.0.0 (it always predicts
one class: only prediction analysis catches it) is rolled back, 4.0.0 goes live by a blue-green switch,
and 5.0.0 is promoted while the leading operator pod is deleted. ``build/e2e/summary.json`` records, per
transition, the requests and the failed ones; the bar is zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s

from model_operator.kube.manifests import DRAIN_SECONDS, TRACK_LABEL
from tests.rig import Cluster, Prometheus
from tests.support.gateway_load import GatewayLoad, Segment
from tests.support.platform import (
    ANALYSIS,
    RELEASE,
    SYSTEM,
    Bundle,
    Platform,
    model_deployment,
    model_deployment_status,
    models_namespace,
    train_bundles,
)
from tests.support.rollouts import wait_for
from tests.support.servers import MODELROLLOUT, REPO

pytestmark = pytest.mark.e2e

SUMMARY = REPO / "build" / "e2e" / "summary.json"
MODELS = "models"
NAME = "iris"
HOSTNAME = "iris.e2e.test"
VERSIONS = {"1.0.0": "iris-v1", "2.0.0": "iris-v2", "3.0.0": "iris-v3-constant", "4.0.0": "iris-v1", "5.0.0": "iris-v2"}
BAD = "3.0.0"
CANARY = {"type": "Canary", "canary": {"steps": [{"setWeight": 5}, {"setWeight": 50}, {"setWeight": 100}]}}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"autoPromote": False, "scaleDownDelay": "10s"}}


@dataclass
class Story:
    """The platform as set up for one run, and the ModelDeployment's life on it."""

    cluster: Cluster
    store: str
    bundles: dict[str, Bundle]
    server_image: str
    prometheus: str
    gateway: tuple[str, str]
    prometheus_api: Prometheus
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, version: str, strategy: dict[str, Any]) -> None:
        manifest = model_deployment(
            NAME, MODELS, self.bundles[version], self.store, self.server_image,
            prometheus=self.prometheus, gateway=self.gateway, hostname=HOSTNAME, strategy=strategy, analysis=ANALYSIS,
        )  # fmt: skip
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def status(self) -> dict[str, Any]:
        return model_deployment_status(self.cluster, MODELS, NAME)

    def wait_for(self, what: str, timeout: float, **expected: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if all(status.get(key) == value for key, value in expected.items()):
                return status
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({expected}); status: {status}")

    def deployment(self, name: str) -> k8s.V1Deployment | None:
        try:
            return k8s.AppsV1Api(self.cluster.api_client).read_namespaced_deployment(name, MODELS)
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise

    def route_weight(self) -> int:
        route = k8s.CustomObjectsApi(self.cluster.api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", MODELS, "httproutes", NAME
        )
        refs = route["spec"]["rules"][0]["backendRefs"]
        return sum(int(ref.get("weight", 1)) for ref in refs if not str(ref["name"]).endswith("-stable"))

    def leader(self) -> str:
        lease = k8s.CoordinationV1Api(self.cluster.api_client).read_namespaced_lease(f"{RELEASE}-operator", SYSTEM)
        holder = (lease.spec and lease.spec.holder_identity) or ""
        return holder.rsplit("_", 1)[0]  # the pod's name and a random suffix

    def record(self, segment: Segment, **extra: Any) -> dict[str, Any]:
        summary = {**segment.summary(), **extra}
        self.segments[segment.name] = summary
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY.write_text(json.dumps(self.segments, indent=2) + "\n")
        return summary


@pytest.fixture(scope="module")
def story(e2e_platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Story:
    platform = e2e_platform
    bundles = train_bundles(tmp_path_factory.mktemp("bundles"), VERSIONS)
    store = models_namespace(platform.cluster, MODELS, list(bundles.values()), platform.images)
    return Story(
        platform.cluster,
        store,
        bundles,
        platform.images["model-server"],
        platform.prometheus.url,
        (platform.gateway.namespace, platform.gateway.name),
        platform.prometheus,
    )


def _settle(load: GatewayLoad) -> None:
    """Keep the load on past the end of a transition: pods scaled away drain for ``DRAIN_SECONDS``."""
    time.sleep(DRAIN_SECONDS + 3)
    load.wait_for_requests(30)


def test_every_transition_through_the_gateway_loses_no_request(story: Story, e2e_gateway: Any) -> None:
    story.apply("1.0.0", CANARY)
    story.wait_for("1.0.0 stable", 240, phase="Succeeded", stableVersion="1.0.0")
    _check_discovery(story)
    load = GatewayLoad(e2e_gateway.url, host=HOSTNAME).start()
    try:
        load.wait_for_requests(60, timeout=60)
        first = load.segment("warm-up", 0, load.mark())
        assert {s.version for s in first.samples if s.ok} == {"1.0.0"}, first.summary()

        started = load.mark()
        story.apply("2.0.0", CANARY)
        story.wait_for("2.0.0 promoted", 300, phase="Succeeded", stableVersion="2.0.0")
        _settle(load)
        promotion = story.record(load.segment("promotion", started, load.mark()))
        assert promotion["versions"].get("2.0.0", 0) > 0

        started = load.mark()
        story.apply(BAD, CANARY)
        story.wait_for(f"{BAD} rolled back", 300, phase="RolledBack")
        off_at = load.mark()
        _settle(load)
        segment = load.segment("rollback", started, load.mark(), faulty_versions={BAD})
        first_bad, last_bad = segment.first(BAD), segment.last(BAD)
        assert first_bad is not None and last_bad is not None, "the bad version never answered through the gateway"
        assert story.route_weight() == 0
        rollback = story.record(
            segment,
            rollback_seconds=round(last_bad.at - first_bad.at, 2),
            status_rolled_back_seconds=round(off_at - first_bad.at, 2),
        )

        started = load.mark()
        story.apply("4.0.0", BLUE_GREEN)
        story.wait_for("the preview", 120, canaryVersion="4.0.0", strategy="BlueGreen")
        wait_for(lambda: story.deployment(f"{NAME}-preview"), 60, "the preview Deployment")
        story.cluster.kubectl("-n", MODELS, "rollout", "status", f"deployment/{NAME}-preview", "--timeout=180s")
        _promote(story)
        story.wait_for("4.0.0 switched and promoted", 300, phase="Succeeded", stableVersion="4.0.0")
        _settle(load)
        blue_green = story.record(load.segment("blue_green", started, load.mark()))

        started = load.mark()
        story.apply("5.0.0", CANARY)
        story.wait_for("5.0.0 on its first step", 180, canaryWeight=5)
        leader = story.leader()
        story.cluster.kubectl("-n", SYSTEM, "delete", "pod", leader, "--wait=false")
        story.wait_for("5.0.0 promoted by the next leader", 300, phase="Succeeded", stableVersion="5.0.0")
        _settle(load)
        failover = story.record(load.segment("failover", started, load.mark()), deleted_leader=leader)
        assert story.leader() != leader
    finally:
        load.stop()
    for name, summary in (("promotion", promotion), ("rollback", rollback), ("blue_green", blue_green),
                          ("failover", failover)):  # fmt: skip
        assert summary["failed_requests"] == 0, f"{name}: {summary}"


def _promote(story: Story) -> None:
    """``modelrollout promote`` as a user runs it (the kubeconfig of the rig's admin)."""
    env = {**os.environ, "KUBECONFIG": str(story.cluster.kubeconfig)}
    command = [*MODELROLLOUT, "promote", NAME, "-n", MODELS]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def _check_discovery(story: Story) -> None:
    """Prometheus scrapes exactly the running model-server pods, labelled as the PodMonitor says."""
    pods = k8s.CoreV1Api(story.cluster.api_client).list_namespaced_pod(MODELS, label_selector=TRACK_LABEL).items
    running = {p.metadata.name: p.status.pod_ip for p in pods if p.status.phase == "Running"}

    def discovered() -> dict[str, str] | None:
        targets = [t for t in story.prometheus_api.active_targets() if t["scrapePool"].startswith("podMonitor/")]
        found = {t["labels"].get("pod", ""): t["labels"].get("instance", "").split(":")[0] for t in targets}
        healthy = all(t["health"] == "up" for t in targets)
        return found if found == running and healthy else None

    wait_for(discovered, 60, "Prometheus to discover and scrape every model-server pod")
    targets = [t for t in story.prometheus_api.active_targets() if t["scrapePool"].startswith("podMonitor/")]
    for target in targets:
        labels = target["labels"]
        assert labels["namespace"] == MODELS and labels["container"] == "model-server", labels
        assert labels["endpoint"] == "http" and labels["job"] == NAME, "jobLabel: app.kubernetes.io/name"
    series = story.prometheus_api.wait_for_series(f'modelserver_requests_total{{namespace="{MODELS}",track="stable"}}')
    assert series, "the analysis' series carry the namespace label from discovery"
