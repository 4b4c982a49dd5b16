"""The real node's network: one network namespace per run, joined to the host by a veth pair.

containerd, the kubelet and kube-proxy run inside the namespace, so the CNI bridge, the pods' addresses and
kube-proxy's iptables rules never touch the host's own network stack. The host keeps only the veth's host
end and two routes (the pod CIDR and the service CIDR via the node's end), which is how tests on the host
reach pod IPs and ClusterIPs directly. Deleting the namespace and the veth removes all of it.

Every run claims a *slot* (a lock held for the life of the run): the slot numbers the namespace, the
interfaces, every address range and the node's directories, so concurrent runs never collide and whatever
a killed run left behind is found by name and swept before the slot is used again.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.node_cleanup import sweep_slot

SLOTS = 64
LOCK_DIR = Path("/run/modelrollout-node")
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class NodeAddresses:
    """Every name, address and directory of the node in slot ``slot`` (pure arithmetic, nothing created)."""

    slot: int

    @property
    def netns(self) -> str:
        return f"mr-node-{self.slot}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return f"mrh{self.slot}"

    @property
    def link_cidr(self) -> str:
        return f"10.240.{self.slot}.0/30"

    @property
    def host_ip(self) -> str:
        """The host's end of the veth: the API server binds and advertises it (pods reach it here)."""
        return f"10.240.{self.slot}.1"

    @property
    def node_ip(self) -> str:
        """The node's end of the veth: the kubelet's InternalIP and serving address."""
        return f"10.240.{self.slot}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.241.{self.slot}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.242.{self.slot}.0/24"

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroupRoot: every pod's cgroup lives below it in each hierarchy."""
        return f"/mr-node-{self.slot}"

    @property
    def state_dir(self) -> Path:
        """Sockets and runtime state (containerd state, runc root, shim sockets, pod netns mounts)."""
        return LOCK_DIR / str(self.slot)

    @property
    def data_dir(self) -> Path:
        """On disk: containerd's content and snapshots, the kubelet's root dir, pod logs, IPAM leases."""
        return Path("/var/lib/modelrollout-node") / str(self.slot)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix the host routes or has an address in (what a slot's ranges must not overlap)."""
    networks = []
    for entry in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        destination = entry.get("dst", "")
        if destination and destination != "default":
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.ip_network(destination, strict=False))
    for link in json.loads(_ip("-j", "-4", "addr").stdout or "[]"):
        for info in link.get("addr_info", []):
            networks.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return [n for n in networks if isinstance(n, ipaddress.IPv4Network)]


def _collides(addresses: NodeAddresses) -> bool:
    ours = [ipaddress.ip_network(c) for c in (addresses.link_cidr, addresses.pod_cidr, addresses.service_cidr)]
    return any(mine.overlaps(theirs) for mine in ours for theirs in _routed_networks())


@dataclass(repr=False)
class NodeNetwork:
    """A claimed slot with its namespace, veth pair and host routes; ``release()`` removes them all."""

    addresses: NodeAddresses = field(init=False)
    _lock: int | None = field(init=False, default=None)

    def __repr__(self) -> str:
        if self._lock is None:
            return "NodeNetwork(unclaimed)"
        a = self.addresses
        return f"NodeNetwork(netns={a.netns!r}, host={a.host_ip}, node={a.node_ip}, pods={a.pod_cidr})"

    def claim(self) -> NodeNetwork:
        """Take the first free slot (sweeping what a dead run left in it) and set its network up."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            descriptor = os.open(LOCK_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            candidate = NodeAddresses(slot)
            sweep_slot(candidate)  # whatever a killed run left in this slot: its lock died with it
            if _collides(candidate):  # the machine uses these ranges for something else
                os.close(descriptor)
                continue
            self._lock, self.addresses = descriptor, candidate
            try:
                self._set_up()
            except BaseException:
                self.release()
                raise
            return self
        raise RuntimeError(f"no free node slot out of {SLOTS} (locks in {LOCK_DIR})")

    def _set_up(self) -> None:
        a = self.addresses
        _ip("netns", "add", a.netns)
        _ip("link", "add", a.host_veth, "type", "veth", "peer", "name", "eth0", "netns", a.netns)
        _ip("addr", "add", f"{a.host_ip}/30", "dev", a.host_veth)
        _ip("link", "set", a.host_veth, "up")
        inside = ("-n", a.netns)
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{a.node_ip}/30", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", "default", "via", a.host_ip)
        # The host reaches pods and ClusterIPs through the node (kube-proxy DNATs in the node's PREROUTING).
        for cidr in (a.pod_cidr, a.service_cidr):
            _ip("route", "add", cidr, "via", a.node_ip, "dev", a.host_veth)

    def exec_prefix(self) -> list[str]:
        """Prepended to a command to run it in the node's network namespace (and nothing else: the node's
        processes share the host's mount namespace, so the kubelet's volume mounts are what runc sees)."""
        return ["nsenter", f"--net={self.addresses.netns_path}", "--"]

    def release(self) -> None:
        """Sweep the slot (processes, mounts, cgroups, namespace, veth, directories) and give it up."""
        if self._lock is None:
            return
        try:
            sweep_slot(self.addresses)
        finally:
            os.close(self._lock)
            self._lock = None

    @staticmethod
    def others_active(own_slot: int) -> bool:
        """Whether another run holds a node slot right now (host-wide state is only restored by the last)."""
        for slot in range(SLOTS):
            path = LOCK_DIR / f"slot-{slot}.lock"
            if slot == own_slot or not path.exists():
                continue
            descriptor = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(descriptor)
        return False
