"""Session fixtures for the e2e tier: a control plane whose API pods can reach, and one real node on it.

``node_network`` claims a slot (network namespace, veth, host routes), ``e2e_cluster`` starts the control
plane bound to the host end of that veth with no kwok nodes, ``e2e_dns`` serves ``cluster.local`` on that
address (CoreDNS), ``real_node`` joins a kubelet (its clusterDNS: that server), containerd and kube-proxy to it
and returns once the Node is Ready. The node needs root (namespaces, mounts, cgroups,
iptables): without it the session fails with that reason, it never skips. Logs go to one directory that is
kept, and named in the report, when a test fails.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.rig import Cluster, Prometheus
from tests.rig.cluster_dns import ClusterDNS
from tests.rig.gateway import Gateway
from tests.rig.images import BUILD_HINT, built_images
from tests.rig.node import RealNode
from tests.rig.node_network import NodeNetwork
from tests.support.helm import Helm
from tests.support.platform import RELEASE, RESTRICTED, SYSTEM, Platform, install_platform
from tests.support.rig_session import add_logs_section, namespace_for_test, start_piece, summarize_logs

RIG_FIXTURES = {
    "e2e_cluster",
    "real_node",
    "node_network",
    "e2e_dns",
    "rig_log_dir",
    "restricted_namespace",
    "e2e_gateway",
    "e2e_prometheus",
    "e2e_platform",
}


@pytest.fixture(scope="session")
def node_network() -> Iterator[NodeNetwork]:
    """A claimed node slot: its network namespace, veth pair and host routes (removed afterwards)."""
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (network namespaces, mounts, cgroups, iptables)", pytrace=False)
    network = NodeNetwork().claim()
    yield network
    network.release()


@pytest.fixture(scope="session")
def e2e_cluster(
    tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path, node_network: NodeNetwork
) -> Iterator[Cluster]:
    """A control plane with no fake nodes, serving on the host end of the node's veth so pods reach it."""
    addresses = node_network.addresses
    cluster = Cluster(
        work_dir=tmp_path_factory.mktemp("e2e-cluster"),
        log_dir=rig_log_dir,
        nodes=0,
        advertise=addresses.host_ip,
        service_cidr=addresses.service_cidr,
    )
    rig = start_piece(cluster)
    print(f"\nrig: control plane ready in {rig.startup_seconds:.1f}s at {rig.server}")
    yield rig
    rig.stop()


@pytest.fixture(scope="session")
def e2e_dns(
    e2e_cluster: Cluster, node_network: NodeNetwork, tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path
) -> Iterator[ClusterDNS]:
    """CoreDNS on the host end of the node's veth, port 53: ``cluster.local`` for the node's pods."""
    addresses = node_network.addresses
    dns = ClusterDNS(
        e2e_cluster,
        tmp_path_factory.mktemp("coredns"),
        rig_log_dir,
        address=addresses.host_ip,
        service_cidr=addresses.service_cidr,
    )
    start_piece(dns)
    print(f"\nrig: cluster DNS ready in {dns.startup_seconds:.1f}s at {dns.address}:53")
    yield dns
    dns.stop()


@pytest.fixture(scope="session")
def real_node(e2e_cluster: Cluster, node_network: NodeNetwork, e2e_dns: ClusterDNS) -> Iterator[RealNode]:
    """A Ready real node (containerd, kubelet, kube-proxy) with the rig's OCI archives imported; its pods
    resolve Service names through ``e2e_dns``."""
    node = start_piece(RealNode(cluster=e2e_cluster, network=node_network, cluster_dns=e2e_dns.address))
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in node.startup_phases.items())
    print(f"\nrig: node {node.name} Ready in {node.startup_seconds:.1f}s ({phases}); images {node.imported}")
    yield node
    node.stop()


@pytest.fixture
def restricted_namespace(e2e_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security ``restricted``, deleted afterwards."""
    with namespace_for_test(e2e_cluster, request, "e2e", RESTRICTED) as name:
        yield name


@pytest.fixture(scope="session")
def e2e_images(real_node: RealNode) -> dict[str, str]:
    """The project's images as pods name them: ``repository@sha256:…`` (pinned by digest), loaded into the
    node from the archives ``build_images.sh`` wrote (the node imports every archive at start)."""
    built = built_images()
    absent = sorted({"model-server", "operator", "helm-test"} - built.keys())
    if absent:
        pytest.fail(f"no {absent} in images.env: {BUILD_HINT}", pytrace=False)
    missing = [image.reference for image in built.values() if image.reference not in real_node.imported]
    if missing:
        pytest.fail(f"images not in the node's runtime: {missing}; imported: {real_node.imported}", pytrace=False)
    return {name: image.pinned for name, image in built.items()}


@pytest.fixture(scope="session")
def e2e_gateway(e2e_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Gateway]:
    """Traefik on the host, routing by HTTPRoutes straight to pod IPs; load goes to its loopback address."""
    gateway = start_piece(Gateway(e2e_cluster, tmp_path_factory.mktemp("gateway"), rig_log_dir))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def e2e_prometheus(
    node_network: NodeNetwork, tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path
) -> Iterator[Prometheus]:
    """Prometheus with Kubernetes service discovery, listening where the operator's pods reach it."""
    prometheus = Prometheus(
        work_dir=tmp_path_factory.mktemp("prometheus"),
        log_dir=rig_log_dir,
        binary="prometheus-k8s",
        host=node_network.addresses.host_ip,
    )
    yield start_piece(prometheus)
    prometheus.stop()


@pytest.fixture(scope="session")
def e2e_platform(
    e2e_cluster: Cluster,
    e2e_images: dict[str, str],
    e2e_gateway: Gateway,
    e2e_prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    """The platform every e2e story shares; each story brings its own models namespace."""
    helm = Helm(tmp_path_factory.mktemp("helm"), e2e_cluster.kubeconfig)
    install_platform(e2e_cluster, e2e_prometheus, helm, e2e_images)
    yield Platform(e2e_cluster, helm, e2e_images, e2e_prometheus, e2e_gateway)
    helm.run("uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    add_logs_section(item, report, RIG_FIXTURES)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    summarize_logs(terminalreporter, config)
