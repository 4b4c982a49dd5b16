"""The real node's configuration files: containerd's, the CNI network's, the kubelet's and kube-proxy's.

Pure functions from the node's addresses and paths to file contents, so what the node runs with can be
read in one place. Every path lives under the slot's own directories: nothing here points at the host's
default locations (``/var/lib/containerd``, ``/etc/cni/net.d``, ``/var/lib/kubelet``, ...).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.rig.node_network import NodeAddresses
from tests.rig.pki import KeyPair

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
NODE_LABEL = "modelrollout.io/real-node"
MAX_PODS = 32
PROXY_HEALTHZ_PORT = 10256


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps what: derived from its slot's state (sockets) and data (disk) directories."""

    addresses: NodeAddresses

    @property
    def containerd_socket(self) -> Path:
        return self.addresses.state_dir / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.addresses.state_dir / "containerd"

    @property
    def containerd_root(self) -> Path:
        return self.addresses.data_dir / "containerd"

    @property
    def runc_root(self) -> Path:
        return self.addresses.state_dir / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.addresses.data_dir / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.addresses.data_dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.addresses.data_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.addresses.data_dir / "pod-logs"

    @property
    def config_dir(self) -> Path:
        return self.addresses.data_dir / "config"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _toml(tables: dict[str, dict[str, object]], top: dict[str, object]) -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]", *(f"  {key} = {_toml_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def containerd_config(paths: NodePaths, *, sandbox_image: str, runc: Path) -> str:
    """containerd 2.x (config version 4): CRI with runc on cgroupfs, overlayfs, our CNI, no host paths."""
    state = paths.containerd_state
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    runc_runtime = f"{cri_runtime}.containerd.runtimes.runc"
    tables: dict[str, dict[str, object]] = {
        "debug": {"level": "info"},
        "plugins.'io.containerd.server.v1.grpc'": {"address": str(paths.containerd_socket)},
        "plugins.'io.containerd.server.v1.ttrpc'": {"address": f"{paths.containerd_socket}.ttrpc"},
        "plugins.'io.containerd.cri.v1.images'": {"snapshotter": "overlayfs"},
        "plugins.'io.containerd.cri.v1.images'.pinned_images": {"sandbox": sandbox_image},
        cri_runtime: {
            # Without CAP_SYS_RESOURCE (withheld in some VMs and containers) runc cannot lower a
            # container's oom_score_adj below its own, and every sandbox fails to start.
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,  # pod netns under our state dir, not /run/netns
            "cdi_spec_dirs": [],
            "enable_criu": False,
        },
        f"{cri_runtime}.containerd": {"default_runtime_name": "runc"},
        runc_runtime: {"runtime_type": "io.containerd.runc.v2", "sandboxer": "podsandbox"},
        f"{runc_runtime}.options": {"BinaryName": str(runc), "Root": str(paths.runc_root), "SystemdCgroup": False},
        f"{cri_runtime}.cni": {
            "bin_dirs": [str(CNI_BIN_DIR)],
            "conf_dir": str(paths.cni_conf_dir),
            "max_conf_num": 1,
        },
        "plugins.'io.containerd.grpc.v1.cri'": {"stream_server_address": "127.0.0.1", "stream_server_port": "0"},
        "plugins.'io.containerd.internal.v1.opt'": {"path": str(paths.containerd_root / "opt")},
        "plugins.'io.containerd.nri.v1.nri'": {"disable": True},
        "plugins.'io.containerd.shim.v1.manager'": {"socket_dir": str(state / "s")},
        "plugins.'io.containerd.image-verifier.v1.bindir'": {"bin_dir": str(paths.containerd_root / "verifiers")},
    }
    top: dict[str, object] = {
        "version": 4,
        "root": str(paths.containerd_root),
        "state": str(state),
        "imports": [],  # never the host's /etc/containerd/conf.d
    }
    return _toml(tables, top)


def cni_conflist(addresses: NodeAddresses, paths: NodePaths) -> str:
    """A bridge with host-local IPAM over the slot's pod CIDR (gateway: the bridge), plus portmap."""
    gateway = str(next(ipaddress.ip_network(addresses.pod_cidr).hosts()))
    network: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": addresses.netns,  # also names libcni's result cache files (/var/lib/cni/results/<name>-...)
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,  # the host routes the pod CIDR back to the node: nothing to hide
                "hairpinMode": True,  # a pod reaching itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": addresses.pod_cidr, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(network, indent=2) + "\n"


def kubelet_config(
    addresses: NodeAddresses, paths: NodePaths, *, client_ca: Path, serving: KeyPair, cluster_dns: str | None = None
) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        # cgroup v1 on this kind of machine: allowed explicitly, driven by the kubelet itself (no systemd).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": addresses.cgroup_root,
        "cgroupsPerQOS": True,
        "failSwapOn": False,
        "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
        "address": addresses.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "serverTLSBootstrap": False,
        "rotateCertificates": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "registerNode": True,
        "podCIDR": addresses.pod_cidr,
        "maxPods": MAX_PODS,
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet_root / "volume-plugins"),
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "clusterDNS": [cluster_dns] if cluster_dns else [],
        # A busy build machine's disk must not evict the tests' pods, nor may image GC delete the images
        # imported from archives (they can never be pulled back).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
            "imagefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "0s",
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 2,
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(addresses: NodeAddresses, *, node_name: str, kubeconfig: Path) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": node_name,
        "clusterCIDR": addresses.pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"{addresses.node_ip}:{PROXY_HEALTHZ_PORT}",  # the host probes it
        "metricsBindAddress": "127.0.0.1:10249",
        "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
        # 0 = leave the kernel's conntrack table size and timeouts alone: they are host-wide sysctls.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # No NodePorts on 127.0.0.1 (that needs route_localnet); short sync periods for quick tests.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }
    return yaml.safe_dump(config, sort_keys=False)
