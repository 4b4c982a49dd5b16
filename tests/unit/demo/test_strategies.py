"""Blue-green and shadow rollouts on the local runtime: the operator's own ``Reconciler`` drives LocalKube,
and the local gateway and load generator do what a Gateway does with the route it writes — a preview
Service with weight 0 gets no live request, a RequestMirror filter copies its share and drops the answers."""

from __future__ import annotations

import http.server
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from model_operator.kube import manifests
from model_operator.spec import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from model_operator.traffic.gateway_api import httproute, mirror_share
from modelrollout.demo.load import LoadGenerator
from modelrollout.demo.local_kube import LocalKube
from modelrollout.demo.router import LocalRouter, Pick
from modelrollout.demo.settings import FAST
from modelrollout.demo.story import model_deployment
from tests.unit.demo.fakes import V1, V2, FakePod, Operator

OWNER = manifests.Owner("demo", "iris", "uid-1")
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"passingAnalyses": 2, "scaleDownDelay": "3s"}}
SHADOW = {"type": "Shadow", "shadow": {"mirrorPercent": 50, "passingAnalyses": 2, "then": "Canary"}}


def stable_operator() -> Operator:
    operator = Operator()
    operator.kube.apply(model_deployment(V1, FAST, None))
    while operator.tick().phase is not Phase.SUCCEEDED:
        pass
    return operator


def roll_out_v2(strategy: Mapping[str, Any], first_step: str) -> tuple[Operator, ModelDeploymentStatus]:
    """v1 stable, then v2 under ``strategy``, ticked until its first step (``first_step``) has started."""
    operator = stable_operator()
    operator.kube.apply(model_deployment(V2, FAST, None, strategy))
    status = operator.tick()
    while status.message != first_step:
        status = operator.tick()
    return operator, status


def picks(router: LocalRouter, n: int = 400) -> list[Pick]:
    rng = random.Random(3)
    return [p for p in (router.pick(rng) for _ in range(n)) if p is not None]


def selected(kube: LocalKube, service: str) -> set[str]:
    """Tracks of the processes a Service's selector reaches."""
    found = kube.get("v1", "Service", "demo", service)
    assert found is not None
    return {e.labels[manifests.TRACK_LABEL] for e in kube.endpoints(found["spec"]["selector"])}


def test_a_blue_green_preview_gets_no_live_request_then_all_of_them_at_once() -> None:
    operator, status = roll_out_v2(BLUE_GREEN, "step 1/2: preview")
    kube, router = operator.kube, operator.router
    assert router.canary_weight() == 0
    assert {(p.track, p.version) for p in picks(router)} == {("stable", "1.0.0")}, "no live request to the preview"
    assert selected(kube, "iris-preview") == {"preview"}, "QA and smoke tests reach it by its own Service"
    assert selected(kube, "iris") == {"stable"}, "the root Service reaches stable only"

    weights = []
    while status.phase is not Phase.SUCCEEDED:
        status = operator.tick()
        weights.append(router.canary_weight())
        if status.message == "step 2/2: switch":
            assert {(p.track, p.version) for p in picks(router)} == {("preview", "2.0.0")}, "one switch, 0 → 100 %"
            stable = operator.get("Deployment", "iris-stable")
            assert manifests.deployment_serving(stable) == V1.digest, "the old version still runs: instant switch back"
        assert len(weights) < 40, status.message
    assert sorted(set(weights)) == [0, 100]
    assert manifests.deployment_serving(operator.get("Deployment", "iris-stable")) == V2.digest
    preview = operator.get("Deployment", "iris-preview")
    assert preview is not None and preview["spec"]["replicas"] == 0
    assert {(p.track, p.version) for p in picks(router)} == {("stable", "2.0.0")}


def test_a_shadow_gets_a_copy_of_its_share_then_goes_live_by_the_canary_steps() -> None:
    operator, status = roll_out_v2(SHADOW, "step 1/8: shadow 50%")
    router = operator.router
    assert (router.canary_weight(), router.mirror_percent()) == (0, 50)
    shadowed = picks(router)
    assert {(p.track, p.version) for p in shadowed} == {("stable", "1.0.0")}, "clients are answered by stable"
    copies = [p.mirror for p in shadowed if p.mirror is not None]
    assert 150 < len(copies) < 250, "about half the requests are copied"
    assert {(c.labels[manifests.TRACK_LABEL], c.labels["version"]) for c in copies} == {("canary", "2.0.0")}

    weights = []
    while status.phase is not Phase.SUCCEEDED:
        status = operator.tick()
        if router.canary_weight() and (not weights or weights[-1] != router.canary_weight()):
            weights.append(router.canary_weight())
            assert router.mirror_percent() == 0, "live traffic replaces the copy"
        assert len(weights) < 60, status.message
    assert weights == [5, 25, 50, 100]
    assert manifests.deployment_serving(operator.get("Deployment", "iris-stable")) == V2.digest


@pytest.mark.parametrize(
    ("mirror", "share"),
    [({}, 100.0), ({"percent": 30}, 30.0), ({"fraction": {"numerator": 1, "denominator": 8}}, 12.5),
     ({"fraction": {"numerator": 5}}, 5.0)],
)  # fmt: skip
def test_mirror_share(mirror: dict[str, Any], share: float) -> None:
    backend = {"backendRef": {"name": "iris-canary", "port": 80}}
    assert mirror_share({**backend, **mirror}) == share


class Answers(http.server.BaseHTTPRequestHandler):
    """A model server stand-in: answers POSTs with the server's ``status`` and counts them."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: Any = self.server
        server.hits += 1
        self.send_response(server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    """Loopback servers per track: stable answers 200, the shadowed canary 500."""
    out: dict[str, Any] = {}
    for track, status in (("stable", 200), ("canary", 500)):
        server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
        server.status, server.hits, server.daemon_threads = status, 0, True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        out[track] = server
    yield out
    for server in out.values():
        server.shutdown()
        server.server_close()


def test_the_load_generator_sends_mirrored_copies_and_no_client_sees_their_answers(servers: dict[str, Any]) -> None:
    def factory(name: str, args: Sequence[str], env: Mapping[str, str], labels: Mapping[str, str]) -> FakePod:
        port = servers[labels[manifests.TRACK_LABEL]].server_address[1]
        return FakePod(f"http://127.0.0.1:{port}", dict(labels), ready=True)

    kube = LocalKube(factory)
    spec = ModelDeploymentSpec.model_validate(model_deployment(V1, FAST, None)["spec"])
    for track, model in (("stable", V1), ("canary", V2)):
        kube.apply(manifests.deployment(OWNER, spec, model, track, 1))
        kube.apply(manifests.service(OWNER, spec, track))
    kube.supervise()
    kube.apply(httproute(OWNER, spec, 0, mirror_percent=100))
    router = LocalRouter(kube, "demo", "iris")
    router.refresh()

    load = LoadGenerator(router, rate=100.0, max_seconds=60.0, senders=2).start()
    deadline = time.monotonic() + 60  # a count, not a time window: a loaded machine only makes it slower
    while len(load.outcomes()) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    load.stop()
    seen, copies = load.outcomes(), load.mirrored()
    assert len(seen) >= 100 and {(o.track, o.version, o.status) for o in seen} == {("stable", "1.0.0", 200)}
    assert len(copies) >= 0.9 * len(seen), "every request copied (stop() drops copies still queued)"
    assert {(o.track, o.version, o.status) for o in copies} == {("canary", "2.0.0", 500)}
    assert servers["canary"].hits == len(copies)
    kube.close()
