"""The rig's Gateway API implementation (Traefik) routes by the HTTPRoutes the operator writes.

Backends are real HTTP servers at real, non-loopback addresses (EndpointSlices refuse loopback): each runs
in a network namespace this test creates, behind a veth pair with a /30 from 10.251.0.0/16 that no
interface or route on the machine uses. The Services are selector-less, their EndpointSlices written here,
so the test owns exactly which addresses Traefik sees. Traffic goes only to loopback (the gateway) and to
addresses inside those namespaces.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from model_operator.kube.manifests import Owner
from model_operator.spec import ModelDeploymentSpec
from model_operator.traffic.gateway_api import httproute
from tests.rig import Cluster
from tests.rig.gateway import Gateway
from tests.rig.procs import wait_until
from tests.unit.operator.machine_helpers import make_spec

pytestmark = pytest.mark.integration

IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"
SUBNET_PREFIX = "10.251."  # one /30 per backend: 10.251.<octet>.0/30, host .1, namespace .2
BACKEND_PORT = 8080
SERVICE_PORT = 80  # what the operator's HTTPRoute references
REQUESTS = 400
SHIFT_DEADLINE = 5.0  # seconds for a weight change to take all traffic

# A server answering every GET and POST with its own name, run inside a backend's network namespace.
SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

address, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass

ThreadingHTTPServer((address, port), Handler).serve_forever()
"""


def _ip(*args: str, netns: str | None = None) -> str:
    command = [IP, "netns", "exec", netns, IP, *args] if netns else [IP, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _free_octets(count: int) -> list[int]:
    """Third octets of 10.251.<octet>.0/30 subnets that no address or route on the machine touches."""
    used = _ip("-4", "-o", "addr", "show") + _ip("-4", "route", "show", "table", "all")
    free = [n for n in range(1, 255) if f"{SUBNET_PREFIX}{n}." not in used]
    if len(free) < count:
        raise RuntimeError(f"fewer than {count} free /30 subnets in {SUBNET_PREFIX}0.0/16")
    return random.sample(free, count)


@dataclass
class Backend:
    """An HTTP server in its own network namespace, reachable from the host at ``address``."""

    name: str
    netns: str
    host_link: str
    octet: int
    log_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}{self.octet}.2"

    def create(self) -> Backend:
        peer = f"{self.host_link}p"
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.netns)
        _ip("addr", "add", f"{SUBNET_PREFIX}{self.octet}.1/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("link", "set", "lo", "up", netns=self.netns)
        _ip("addr", "add", f"{self.address}/30", "dev", peer, netns=self.netns)
        _ip("link", "set", peer, "up", netns=self.netns)
        return self

    def serve(self) -> Backend:
        with (self.log_dir / f"backend-{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    IP,
                    "netns",
                    "exec",
                    self.netns,
                    sys.executable,
                    "-c",
                    SERVER,
                    self.address,
                    str(BACKEND_PORT),
                    self.name,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        url = f"http://{self.address}:{BACKEND_PORT}/"
        wait_until(
            lambda: httpx.get(url, timeout=1, trust_env=False).text == self.name,
            timeout=15,
            what=f"backend {self.name} at {url}",
        )
        return self

    def halt(self) -> None:
        """Stop the server; the namespace stays, so its address refuses connections (RST), as a dead pod's."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def destroy(self) -> None:
        self.halt()
        subprocess.run([IP, "netns", "del", self.netns], capture_output=True, timeout=30, check=False)
        subprocess.run([IP, "link", "del", self.host_link], capture_output=True, timeout=30, check=False)


def _make_backends(log_dir: Path, names: str) -> dict[str, Backend]:
    if os.geteuid() != 0:
        pytest.fail("the gateway tests create network namespaces: run them as root (or with CAP_NET_ADMIN)")
    tag = f"{os.getpid() % 10**7}{random.randrange(10)}"
    made: dict[str, Backend] = {}
    try:
        for octet, name in zip(_free_octets(len(names)), names, strict=True):
            made[name] = Backend(name, f"mr-gw-{tag}-{name}", f"mrg{tag}{name}", octet, log_dir)
            made[name].create().serve()
    except BaseException:
        for backend in made.values():
            backend.destroy()
        raise
    return made


@pytest.fixture(scope="module")
def gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Gateway]:
    gw = Gateway(cluster=cluster, work_dir=tmp_path_factory.mktemp("gateway"), log_dir=rig_log_dir).start()
    print(f"\ngateway: Traefik up and its Gateway Programmed in {gw.startup_seconds:.1f}s at {gw.url}")
    yield gw
    gw.stop()


# --- the cluster side -----------------------------------------------------------------------------


def _service(cluster: Cluster, namespace: str, name: str, endpoints: list[tuple[Backend, dict[str, bool]]]) -> None:
    """A selector-less Service on port 80 and the EndpointSlice listing ``endpoints`` (with conditions)."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": BACKEND_PORT}]},
        },
        namespace=namespace,
    )
    cluster.apply(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-rig",
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "rig-tests.modelrollout.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [backend.address], "conditions": conditions} for backend, conditions in endpoints
            ],
            # Traefik matches EndpointSlice ports to the Service port by name.
            "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
        },
        namespace=namespace,
    )


READY = {"ready": True, "serving": True, "terminating": False}
DRAINING = {"ready": False, "serving": True, "terminating": True}


@dataclass
class Scenario:
    """One test's world: its namespace, backends, and the gateways its HTTPRoute ``iris`` attaches to.

    The route matches only the host ``<namespace>.rig.test``, so a test never reaches another test's route
    (whose namespace may still be terminating). Teardown removes the route and waits until every gateway
    answers 404 for the host before the backends' namespaces go: once an address's namespace is gone it is
    routed like any other address on the machine, and no request may follow it there.
    """

    cluster: Cluster
    namespace: str
    backends: dict[str, Backend]
    gateways: list[Gateway]
    owner: Owner = field(init=False)

    def __post_init__(self) -> None:
        self.owner = Owner(self.namespace, "iris", "not-a-real-uid")

    @property
    def host(self) -> str:
        return f"{self.namespace}.rig.test"

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=5, trust_env=False, headers={"Host": self.host})

    @staticmethod
    def url(gateway: Gateway) -> str:
        return f"{gateway.url}/v2/models/iris/infer"

    def spec(self) -> ModelDeploymentSpec:
        parents = [{"name": g.parent_ref()["name"], "namespace": g.parent_ref()["namespace"]} for g in self.gateways]
        traffic = {"gatewayAPI": {"parentRefs": parents, "hostnames": [self.host]}}
        return ModelDeploymentSpec.model_validate({**make_spec().wire(), "traffic": traffic})

    def route(self, weight: int, mirror_percent: int = 0) -> float:
        """Apply the HTTPRoute the operator writes, without its owner reference (no ModelDeployment exists
        here, and the garbage collector deletes objects whose owner is missing); wait for Traefik's status.
        Returns when (``time.monotonic()``) the API server had stored the route."""
        route = httproute(self.owner, self.spec(), weight, mirror_percent)
        route["metadata"].pop("ownerReferences")
        self.cluster.apply(route, namespace=self.namespace)
        applied = time.monotonic()
        for gateway in self.gateways:
            gateway.wait_route_accepted(self.namespace, "iris")
        return applied

    def unroute(self) -> None:
        self.cluster.kubectl("delete", "httproute", "iris", "-n", self.namespace, "--ignore-not-found")
        with self.client() as http:
            for gateway in self.gateways:
                if gateway.running:  # a stopped gateway routes nothing
                    _wait_routed(http, self.url(gateway), ok=lambda status: status == 404)


@pytest.fixture
def scenario(cluster: Cluster, gateway: Gateway, namespace: str, rig_log_dir: Path) -> Iterator[Scenario]:
    """Backends ``a``, ``b`` and ``c`` (serving their names on port 8080) in ``namespace``'s world."""
    world = Scenario(cluster, namespace, _make_backends(rig_log_dir, "abc"), [gateway])
    try:
        yield world
    finally:
        try:
            world.unroute()
        finally:
            for backend in world.backends.values():
                backend.destroy()


def _split(http: httpx.Client, url: str, requests: int) -> tuple[Counter[str], Counter[int]]:
    """Send ``requests`` sequential POSTs; the answering backends and the status codes, counted."""
    names: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for _ in range(requests):
        response = http.post(url, json={"instances": [[1.0, 2.0]]})
        statuses[response.status_code] += 1
        if response.status_code == 200:
            names[response.text] += 1
    return names, statuses


def _wait_routed(http: httpx.Client, url: str, ok: Callable[[int], bool] = lambda status: status == 200) -> None:
    """Traefik applies a route shortly after reporting it Accepted: wait for the answer it routes to."""
    wait_until(lambda: ok(http.post(url).status_code), timeout=15, what=f"a routed answer from {url}", interval=0.05)


# --- tests ------------------------------------------------------------------------------------------


def test_weighted_backend_refs_split_and_shift_traffic(scenario: Scenario, gateway: Gateway) -> None:
    a, b, c = (scenario.backends[name] for name in "abc")
    _service(scenario.cluster, scenario.namespace, "iris-stable", [(a, READY)])
    # c is terminating (ready false, serving true): a draining pod, which must receive nothing.
    _service(scenario.cluster, scenario.namespace, "iris-canary", [(b, READY), (c, DRAINING)])
    scenario.route(20)
    url = scenario.url(gateway)
    with scenario.client() as http:
        _wait_routed(http, url)
        names, statuses = _split(http, url, REQUESTS)
        assert statuses == {200: REQUESTS}, statuses
        assert names["c"] == 0, names
        assert abs(names["b"] / REQUESTS - 0.20) <= 0.05, names  # 80/20 within five points

        # Promote: stable 0, candidate 100. Every request keeps succeeding while the weights change.
        changed = scenario.route(100)
        accepted = time.monotonic() - changed
        during: Counter[int] = Counter()
        streak = 0
        while streak < 20:
            assert time.monotonic() - changed < SHIFT_DEADLINE, f"traffic did not move within {SHIFT_DEADLINE}s"
            response = http.post(url)
            during[response.status_code] += 1
            streak = streak + 1 if response.status_code == 200 and response.text == "b" else 0
        moved = time.monotonic() - changed
        names, statuses = _split(http, url, REQUESTS // 2)
        assert statuses == {200: REQUESTS // 2} and names == {"b": REQUESTS // 2}, (names, statuses)

        # A rolling update behind the candidate Service: b drains (ready false, still serving), c is ready.
        _service(scenario.cluster, scenario.namespace, "iris-canary", [(b, DRAINING), (c, READY)])
        swapped = time.monotonic()
        streak = 0
        while streak < 20:
            assert time.monotonic() - swapped < SHIFT_DEADLINE, f"endpoints did not move within {SHIFT_DEADLINE}s"
            response = http.post(url)
            during[response.status_code] += 1
            streak = streak + 1 if response.status_code == 200 and response.text == "c" else 0
        drained = time.monotonic() - swapped
    assert during.keys() == {200}, during
    print(
        f"\ngateway: weights 0/100 Accepted {accepted:.2f}s and in effect {moved:.2f}s after the apply;"
        f" an EndpointSlice change in effect {drained:.2f}s after the apply"
    )


def test_request_mirror_is_not_supported(scenario: Scenario, gateway: Gateway) -> None:
    """Traefik 3.7 has no RequestMirror: a rule carrying it answers 500 while its status still says Accepted
    and ResolvedRefs. Shadow rollouts need another gateway (or Traefik's own Mirroring service); this test
    fails, on purpose, the day a Traefik bump starts honouring the filter."""
    _service(scenario.cluster, scenario.namespace, "iris-stable", [(scenario.backends["a"], READY)])
    _service(scenario.cluster, scenario.namespace, "iris-canary", [(scenario.backends["b"], READY)])
    scenario.route(0, mirror_percent=100)
    url = scenario.url(gateway)
    with scenario.client() as http:
        _wait_routed(http, url, ok=lambda status: status != 404)  # 404: no router for the host yet
        _, statuses = _split(http, url, 20)
    assert statuses == {500: 20}, statuses


def test_retry_middleware_hides_refused_connections(
    scenario: Scenario, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path
) -> None:
    """An endpoint still listed ready whose process is gone (a crashed pod before its readiness probe
    notices) refuses connections: Traefik answers 502 for its share, unless its retry middleware is on,
    which tries the next endpoint when the backend never received the request."""
    a, b = scenario.backends["a"], scenario.backends["b"]
    b.halt()  # its namespace stays: the address answers with a TCP reset
    _service(scenario.cluster, scenario.namespace, "iris-stable", [(a, READY), (b, READY)])
    _service(scenario.cluster, scenario.namespace, "iris-canary", [(a, READY)])
    retrying = Gateway(
        cluster=scenario.cluster,
        work_dir=tmp_path_factory.mktemp("gateway-retry"),
        log_dir=rig_log_dir,
        name="retry",
        retry_attempts=3,
    ).start()
    scenario.gateways.append(retrying)
    results: dict[str, tuple[Counter[str], Counter[int]]] = {}
    try:
        scenario.route(0)
        with scenario.client() as http:
            for gw in scenario.gateways:
                _wait_routed(http, scenario.url(gw))
                results[gw.name] = _split(http, scenario.url(gw), 100)
        scenario.unroute()
    finally:
        retrying.stop()
    plain_names, plain_statuses = results[gateway.name]
    retry_names, retry_statuses = results[retrying.name]
    assert plain_statuses[502] >= 30 and plain_names == {"a": plain_statuses[200]}, (plain_names, plain_statuses)
    assert retry_statuses == {200: 100} and retry_names == {"a": 100}, (retry_names, retry_statuses)
