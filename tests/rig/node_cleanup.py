"""Everything a real node leaves on the host, found by its slot's names and removed.

Used by ``RealNode.stop()`` after a clean shutdown and, for a slot a killed run never cleaned, before the
slot is used again. Order matters: processes first (a live shim keeps mounts and cgroups busy), then mounts
deepest first, then cgroups deepest first, then the network namespace and the veth, then the directories.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.rig.node_network import NodeAddresses

CGROUP_MOUNT = Path("/sys/fs/cgroup")
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # hard-coded in the kubelet: symlinks to pod log files
CNI_RESULTS = Path("/var/lib/cni/results")  # libcni's cache (containerd cannot move it); files: <network>-<id>-<if>
MNT_DETACH = 2
TRASH = ".trash"  # next to the slots' data directories: removed in the background
_REMOVERS: list[subprocess.Popen[bytes]] = []  # kept so they are reaped, not garbage-collected running


def _netns_processes(netns: Path) -> set[int]:
    """Processes living in the network namespace bound at ``netns`` (containerd, shims, kubelet, ...)."""
    try:
        target = netns.stat()
    except OSError:
        return set()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            found = (entry / "ns" / "net").stat()
            if (found.st_ino, found.st_dev) == (target.st_ino, target.st_dev):
                pids.add(int(entry.name))
    return pids


def _cgroup_dirs(cgroup_root: str) -> Iterator[Path]:
    """The slot's cgroup directory in every mounted hierarchy (v1 controllers, named ones, v2)."""
    if not CGROUP_MOUNT.is_dir():
        return
    for hierarchy in CGROUP_MOUNT.iterdir():
        directory = hierarchy / cgroup_root.strip("/")
        if directory.is_dir():
            yield directory


def _cgroup_processes(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(cgroup_root):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _kill_slot_processes(addresses: NodeAddresses, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    own = os.getpid()
    while True:
        pids = (_netns_processes(addresses.netns_path) | _cgroup_processes(addresses.cgroup_root)) - {own}
        if not pids:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"node slot {addresses.slot}: processes {sorted(pids)} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _mounts_under(roots: tuple[Path, ...]) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (from this process's mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(root) or point.startswith(f"{root}/") for root in roots):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(roots: tuple[Path, ...]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):  # a bind mount can sit on top of another at the same point: repeat until none left
        points = _mounts_under(roots)
        if not points:
            return
        for point in points:
            libc.umount2(point.encode(), MNT_DETACH)
    left = _mounts_under(roots)
    if left:
        raise RuntimeError(f"could not unmount: {left}")


def _remove_cgroups(cgroup_root: str) -> None:
    for top in list(_cgroup_dirs(cgroup_root)):
        directories = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*directories, top]:
            for _ in range(50):  # a cgroup whose last task just died can be busy for a moment
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def _remove_network(addresses: NodeAddresses) -> None:
    subprocess.run(["ip", "link", "del", addresses.host_veth], capture_output=True, timeout=30, check=False)
    if addresses.netns_path.exists():
        result = subprocess.run(
            ["ip", "netns", "delete", addresses.netns], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0 and addresses.netns_path.exists():
            raise RuntimeError(f"ip netns delete {addresses.netns}: {result.stderr.strip()}")


def _remove_log_links(pod_logs: Path) -> None:
    """The kubelet's /var/log/containers symlinks that point into this slot's pod log directory."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(f"{pod_logs}/"):
                link.unlink()


def _discard(directory: Path) -> None:
    """Delete ``directory`` in the background: unpacked images are tens of thousands of files, seconds of
    unlinking nobody needs to wait for. It is renamed into a trash directory first (so the slot is free at
    once) and whatever an interrupted removal left in the trash goes with it."""
    trash = directory.parent / TRASH
    trash.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        directory.rename(trash / f"{directory.name}-{time.time_ns()}")
    _REMOVERS[:] = [remover for remover in _REMOVERS if remover.poll() is None]  # reap finished ones
    if any(trash.iterdir()):
        remover = subprocess.Popen(  # its own session: it may outlive this process, and that is fine
            ["rm", "-rf", "--one-file-system", *map(str, trash.iterdir())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _REMOVERS.append(remover)


def _remove_cni_results(network: str) -> None:
    """libcni's cached results for this slot's network, left behind when pods were not torn down by CNI."""
    for cached in CNI_RESULTS.glob(f"{network}-*"):
        cached.unlink(missing_ok=True)


def sweep_node(addresses: NodeAddresses) -> None:
    """Remove every trace of the node in ``addresses.slot`` but its network (a no-op for an unused slot)."""
    _kill_slot_processes(addresses)
    roots = (addresses.state_dir, addresses.data_dir)
    _unmount_all(roots)
    _remove_cgroups(addresses.cgroup_root)
    _remove_log_links(addresses.data_dir / "pod-logs")
    _remove_cni_results(addresses.netns)
    shutil.rmtree(addresses.state_dir, ignore_errors=True)
    _discard(addresses.data_dir)


def sweep_slot(addresses: NodeAddresses) -> None:
    """Remove every trace of the node in ``addresses.slot``, its network namespace and veth included."""
    sweep_node(addresses)
    _remove_network(addresses)
