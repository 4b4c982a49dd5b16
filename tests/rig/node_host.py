"""The little host-wide state a kubelet changes that no per-run setting can move, and its restoration.

- Kernel tunables: the kubelet sets ``vm.overcommit_memory=1``, ``vm.panic_on_oom=0``, ``kernel.panic=10``,
  ``kernel.panic_on_oops=1`` and the root key quotas when they differ (``protectKernelDefaults: true`` would
  refuse to start instead). They are host-wide sysctls, not per network namespace.
- Fixed paths: ``/var/lib/kubelet/device-plugins/`` (the device manager's socket directory, a constant;
  the kubelet empties it on start), ``/var/log/containers/`` (symlinks to pod logs, a constant) and
  ``/var/lib/cni/`` (libcni's result cache; its files carry the slot's network name).

The first run to start records the original values and which of those directories did not exist yet in
``/run/modelrollout-node/host-state.json``; the last run to stop (no other slot locked) writes the values
back, removes the directories it created and deletes the record.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from tests.rig.node_network import LOCK_DIR

RECORD = LOCK_DIR / "host-state.json"
TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
FIXED_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/var/lib/cni"))
SYSCTL = Path("/proc/sys")


def record_host_state() -> None:
    """Before a kubelet starts: remember the originals, unless a running node already did."""
    if RECORD.exists():
        return
    state = {
        "tunables": {name: (SYSCTL / name).read_text().strip() for name in TUNABLES if (SYSCTL / name).exists()},
        "created": [str(d) for d in FIXED_DIRS if not d.exists()],
    }
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    partial = RECORD.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(RECORD)


def restore_host_state() -> None:
    """After the last node stopped: the original tunables back, the fixed directories we created gone."""
    if not RECORD.exists():
        return
    state = json.loads(RECORD.read_text())
    for name, value in state.get("tunables", {}).items():
        with contextlib.suppress(OSError):
            if (SYSCTL / name).read_text().strip() != value:
                (SYSCTL / name).write_text(value)
    for directory in state.get("created", []):
        shutil.rmtree(directory, ignore_errors=True)
    RECORD.unlink(missing_ok=True)
