"""A real Kubernetes node for the rig: containerd + runc + CNI, a kubelet and kube-proxy.

Pods scheduled onto it really run: containers from OCI archives imported into containerd (never pulled),
a bridge network in the node's own network namespace (``tests.rig.node_network``), Services implemented by
kube-proxy's iptables rules, logs and exec served by the kubelet over TLS. It joins a ``Cluster`` started
with ``advertise=network.addresses.host_ip`` (so pods reach the API server) and ``service_cidr=`` the slot's.

The node registers as ``name`` with the label ``modelrollout.io/real-node=true``; target it with a
``nodeSelector`` on that label. ``cluster_dns`` is the kubelet's ``clusterDNS`` (``tests.rig.cluster_dns``:
CoreDNS on the host end of the veth), the nameserver of every ``dnsPolicy: ClusterFirst`` pod, which then
resolves ``<service>.<namespace>.svc.cluster.local``; without it pods fall back to the host's resolv.conf and
find the API server through the ``kubernetes`` Service's environment variables only.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kubernetes import client as k8s

from tests.rig import paths
from tests.rig.cluster import Cluster
from tests.rig.kubeconfig import write_kubeconfig
from tests.rig.node_cleanup import CGROUP_MOUNT, sweep_node
from tests.rig.node_config import (
    NODE_LABEL,
    PROXY_HEALTHZ_PORT,
    NodePaths,
    cni_conflist,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)
from tests.rig.node_host import record_host_state, restore_host_state
from tests.rig.node_network import NodeAddresses, NodeNetwork
from tests.rig.procs import Component, run_phases, wait_until

NAMESPACE = "k8s.io"  # containerd's namespace for the CRI plugin's images and containers
STARTUP_TIMEOUT = 120.0
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


def _refs_in_archive(archive: Path) -> list[str]:
    """The image names an OCI archive's index.json carries (buildah and skopeo write full names)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json: not an OCI archive")
        index = json.load(io.TextIOWrapper(member))
    refs = []
    for manifest in index.get("manifests", []):
        annotations = manifest.get("annotations") or {}
        ref = annotations.get(IMAGE_NAME) or annotations.get(REF_NAME)
        if ref:
            refs.append(ref)
    return refs


def _make_cgroup_root(cgroup_root: str) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts (it checks, and refuses).
    A new v1 cpuset starts with no CPUs and no memory nodes: it gets its parent's."""
    for hierarchy in CGROUP_MOUNT.iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue
        directory = hierarchy / cgroup_root.strip("/")
        directory.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (directory / name).exists() and not (directory / name).read_text().strip():
                (directory / name).write_text((hierarchy / name).read_text())


def _repository(ref: str) -> str:
    """``localhost/rig/busybox:1.35`` → ``localhost/rig/busybox`` (a port's colon is not a tag's)."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


@dataclass(repr=False)
class RealNode:
    """One real node. ``start()`` returns when the Node is Ready and kube-proxy serves; ``stop()`` removes
    every process, mount, cgroup, directory and cache entry it made (the network belongs to ``network``)."""

    cluster: Cluster
    network: NodeNetwork
    name: str = "real-node"
    # OCI archives imported at start; None: every ``*.tar`` in ``$RIG_DIR/images`` (the pause image must be
    # among them). More can be loaded later with ``load_image``.
    archives: list[Path] | None = None
    # The kubelet's clusterDNS (pods' nameserver; clusterDomain is cluster.local). None: no cluster DNS.
    cluster_dns: str | None = None
    components: list[Component] = field(init=False, default_factory=list)
    startup_phases: dict[str, float] = field(init=False, default_factory=dict)
    startup_seconds: float = field(init=False, default=0.0)
    imported: list[str] = field(init=False, default_factory=list)

    def __repr__(self) -> str:
        return f"RealNode(name={self.name!r}, ip={self.node_ip}, pods={self.pod_cidr}, netns={self.addresses.netns})"

    # --- what tests use ------------------------------------------------------------------------------

    @property
    def addresses(self) -> NodeAddresses:
        return self.network.addresses

    @property
    def node_ip(self) -> str:
        return self.addresses.node_ip

    @property
    def host_ip(self) -> str:
        """The host's end of the node's veth (where the API server listens)."""
        return self.addresses.host_ip

    @property
    def pod_cidr(self) -> str:
        return self.addresses.pod_cidr

    @property
    def service_cidr(self) -> str:
        return self.addresses.service_cidr

    @property
    def selector(self) -> dict[str, str]:
        """A pod's ``nodeSelector`` that lands it here."""
        return {NODE_LABEL: "true"}

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.addresses)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """containerd's own client on this node's socket, in the CRI plugin's namespace."""
        command = [str(paths.node_binary("ctr")), f"--address={self.paths.containerd_socket}", "-n", NAMESPACE, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def images(self) -> list[str]:
        return self.ctr("images", "list", "-q").stdout.split()

    def load_image(self, archive: Path) -> list[str]:
        """Import an OCI archive (e.g. from ``buildah push IMAGE oci-archive:FILE:IMAGE``) under the names
        it carries; pods then use those names with ``imagePullPolicy: IfNotPresent`` or ``Never``."""
        return self._load_images([archive])

    def _load_images(self, archives: list[Path]) -> list[str]:
        refs = {archive: _refs_in_archive(archive) for archive in archives}
        unnamed = [archive.name for archive, names in refs.items() if not names]
        if unnamed:
            raise ValueError(f"{unnamed} name no image (org.opencontainers.image.ref.name): push them with a name")
        commands = [
            ("images", "import", "--local", f"--base-name={repository}", str(archive))
            for archive in archives
            for repository in sorted({_repository(ref) for ref in refs[archive]})
        ]
        # Two at a time: unpacking is decompression (CPU) and writing (disk), which overlap well.
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda command: self.ctr(*command), commands))
        wanted = [ref for names in refs.values() for ref in names]
        present = set(self.images())
        missing = [ref for ref in wanted if ref not in present]
        if missing:
            raise RuntimeError(
                f"importing {[a.name for a in archives]} did not create {missing}; containerd has {sorted(present)}"
            )
        self.imported += [ref for ref in wanted if ref not in self.imported]
        return wanted

    def check_alive(self) -> None:
        for component in self.components:
            component.check_alive()

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> RealNode:
        started = time.monotonic()
        binaries = {
            name: paths.node_binary(name)
            for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "kubelet", "kube-proxy")
        }
        archives = paths.node_image_archives() if self.archives is None else list(self.archives)
        sandbox_image = paths.versions()["PAUSE_IMAGE"]
        phases: tuple[tuple[str, Callable[[], None]], ...] = (
            ("config", lambda: self._write_config(sandbox_image, binaries["runc"])),
            ("containerd", lambda: self._start_containerd(binaries["containerd"])),
            ("images", lambda: self._import(archives, sandbox_image)),
            ("kubelet", lambda: self._start_kubelet(binaries["kubelet"])),
            ("kube-proxy", lambda: self._start_kube_proxy(binaries["kube-proxy"])),
            ("ready", self._wait_ready),
        )
        run_phases(phases, self.startup_phases, self.stop)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Kubelet and kube-proxy first (nothing restarts containers), then containerd, then the sweep:
        containers and shims killed, mounts and cgroups removed, the node's directories deleted."""
        for component in self.components:
            if component.name != "containerd" and component.process is not None and component.process.poll() is None:
                component.process.terminate()
        for component in self.components:
            if component.name != "containerd":
                component.stop()
        for component in self.components:
            if component.name == "containerd":
                component.stop()
        try:
            sweep_node(self.addresses)
        finally:
            if not NodeNetwork.others_active(self.addresses.slot):
                restore_host_state()

    def _spawn(self, name: str, command: list[str]) -> Component:
        node_path = f"{paths.rig_dir() / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        component = Component(name, [*self.network.exec_prefix(), *command], self.cluster.log_dir, {"PATH": node_path})
        self.components.append(component.start())
        return component

    # --- phases --------------------------------------------------------------------------------------

    def _write_config(self, sandbox_image: str, runc: Path) -> None:
        p = self.paths
        for directory in (p.config_dir, p.cni_conf_dir, p.ipam_dir, p.kubelet_root, p.pod_logs, p.containerd_root):
            directory.mkdir(parents=True, exist_ok=True)
        p.addresses.state_dir.mkdir(parents=True, exist_ok=True)
        _make_cgroup_root(self.addresses.cgroup_root)
        (p.config_dir / "containerd.toml").write_text(containerd_config(p, sandbox_image=sandbox_image, runc=runc))
        (p.cni_conf_dir / "10-bridge.conflist").write_text(cni_conflist(self.addresses, p))
        pki = self.cluster.pki
        kubelet_identity = pki.issue(
            f"kubelet-{self.name}", f"system:node:{self.name}", organization="system:nodes", client=True
        )
        self.kubelet_serving = pki.issue(
            f"kubelet-{self.name}-serving", self.name, dns=(self.name,), ips=(self.node_ip,), server=True
        )
        self.kubelet_kubeconfig = write_kubeconfig(
            p.config_dir / "kubelet.kubeconfig",
            server=self.cluster.server,
            ca=pki.ca.cert,
            user=f"system:node:{self.name}",
            client=kubelet_identity,
        )
        (p.config_dir / "kubelet.yaml").write_text(
            kubelet_config(
                self.addresses, p, client_ca=pki.ca.cert, serving=self.kubelet_serving, cluster_dns=self.cluster_dns
            )
        )
        proxy_identity = pki.issue(f"kube-proxy-{self.name}", "system:kube-proxy", client=True)
        proxy_kubeconfig = write_kubeconfig(
            p.config_dir / "kube-proxy.kubeconfig",
            server=self.cluster.server,
            ca=pki.ca.cert,
            user="system:kube-proxy",
            client=proxy_identity,
        )
        (p.config_dir / "kube-proxy.yaml").write_text(
            kube_proxy_config(self.addresses, node_name=self.name, kubeconfig=proxy_kubeconfig)
        )

    def _start_containerd(self, containerd: Path) -> None:
        component = self._spawn(
            "containerd", [str(containerd), f"--config={self.paths.config_dir / 'containerd.toml'}"]
        )
        wait_until(
            lambda: self.ctr("version", check=False, timeout=10).returncode == 0,
            timeout=STARTUP_TIMEOUT,
            what="containerd answering on its socket",
            alive=component.check_alive,
        )

    def _import(self, archives: list[Path], sandbox_image: str) -> None:
        self._load_images(archives)
        if sandbox_image not in self.imported:
            raise RuntimeError(f"the sandbox image {sandbox_image} is in none of {[a.name for a in archives]}")

    def _start_kubelet(self, kubelet: Path) -> None:
        p = self.paths
        record_host_state()  # the kubelet adjusts a few host-wide sysctls (see node_host)
        component = self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={p.config_dir / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubelet_kubeconfig}",
                f"--root-dir={p.kubelet_root}",
                f"--cert-dir={p.kubelet_root / 'pki'}",
                f"--node-ip={self.node_ip}",
                f"--hostname-override={self.name}",
                f"--node-labels={NODE_LABEL}=true",
                "--v=2",
            ],
        )
        wait_until(
            lambda: self._node() is not None,
            timeout=STARTUP_TIMEOUT,
            what=f"Node {self.name} registered",
            alive=component.check_alive,
        )

    def _start_kube_proxy(self, kube_proxy: Path) -> None:
        self._spawn("kube-proxy", [str(kube_proxy), f"--config={self.paths.config_dir / 'kube-proxy.yaml'}", "--v=2"])

    def _node(self) -> k8s.V1Node | None:
        nodes = k8s.CoreV1Api(self.cluster.api_client).list_node(field_selector=f"metadata.name={self.name}").items
        return nodes[0] if nodes else None

    def _ready(self) -> bool:
        node = self._node()
        conditions = {c.type: c.status for c in (node and node.status and node.status.conditions) or []}
        return conditions.get("Ready") == "True"

    def _proxy_healthy(self) -> bool:
        """kube-proxy's /healthz (on the node's address): 200 once its first sync of the rules is done."""
        return httpx.get(f"http://{self.node_ip}:{PROXY_HEALTHZ_PORT}/healthz", timeout=2).status_code == 200

    def _wait_ready(self) -> None:
        wait_until(self._ready, timeout=STARTUP_TIMEOUT, what=f"Node {self.name} Ready", alive=self.check_alive)
        # Record the pod range on the Node as the node IPAM controller would (it is not running here).
        core = k8s.CoreV1Api(self.cluster.api_client)
        node = self._node()
        if node is not None and not (node.spec and node.spec.pod_cidr):
            core.patch_node(self.name, {"spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}})
        wait_until(self._proxy_healthy, timeout=STARTUP_TIMEOUT, what="kube-proxy /healthz", alive=self.check_alive)
