"""Where the rig's binaries and CRDs live, and the one error a missing piece raises.

``build.sh`` and the Makefile agree on ``$RIG_DIR`` (default ``<repo>/.rig``). A missing binary is a setup
error that must fail the test run loudly with the fix (``make rig``), never be skipped around.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(__file__).resolve().parent / "testdata"
VERSIONS_ENV = Path(__file__).resolve().parent / "versions.env"
KUBECTL = Path("/usr/bin/kubectl")


class RigMissingError(RuntimeError):
    """A rig binary or CRD directory is absent: the rig was not built (or built elsewhere)."""


def rig_dir() -> Path:
    return Path(os.environ.get("RIG_DIR") or REPO / ".rig")


def binary(name: str) -> Path:
    """Path of a rig binary; raises ``RigMissingError`` naming the fix when it is not there."""
    path = rig_dir() / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RigMissingError(f"{path} is missing: run `make rig` to build the test rig (RIG_DIR={rig_dir()})")
    return path


def kubectl() -> Path:
    """kubectl comes from the machine (it is also what users run), falling back to one on PATH."""
    if KUBECTL.is_file():
        return KUBECTL
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry) / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RigMissingError("kubectl is not installed: it is needed by the integration tests")


def crd_dirs() -> list[Path]:
    """The third-party CRD directories ``build.sh`` copied (Gateway API, Prometheus Operator, ...)."""
    root = rig_dir() / "crds"
    dirs = sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    if not dirs:
        raise RigMissingError(f"no CRDs under {root}: run `make rig` to build the test rig")
    return dirs


def kwok_stages() -> list[Path]:
    """kwok's Stage manifests (node initialize + lease heartbeat, pod ready/complete/delete).

    kwok >= 0.8 has no built-in default stages; ``build.sh`` copies upstream's "fast" set from the kwok
    module so the fake kubelets behave exactly as the kwok release documents.
    """
    stages = sorted((rig_dir() / "kwok" / "stages").glob("*.yaml"))
    if not stages:
        raise RigMissingError(f"no kwok stages under {rig_dir() / 'kwok'}: run `make rig` to build the test rig")
    return stages


def versions() -> dict[str, str]:
    """``versions.env`` as a dict, so tests can assert what the rig reports against what was pinned."""
    out: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


NODE_FIX = "run `bash tests/rig/build_node.sh` to build the real node"


def node_binary(name: str) -> Path:
    """A binary of the real node (containerd, its shim, ctr, runc, kubelet, kube-proxy), with the fix."""
    try:
        return binary(name)
    except RigMissingError:
        raise RigMissingError(f"{rig_dir() / 'bin' / name} is missing: {NODE_FIX} (RIG_DIR={rig_dir()})") from None


def images_dir() -> Path:
    """OCI archives the real node imports at start (the pause sandbox, busybox, the project's images)."""
    return rig_dir() / "images"


def node_image_archives() -> list[Path]:
    """Every OCI archive in ``images_dir()``; the sandbox (pause) image must be among them."""
    archives = sorted(images_dir().glob("*.tar"))
    if not any(archive.name == "pause.tar" for archive in archives):
        raise RigMissingError(f"no pause.tar in {images_dir()}: {NODE_FIX}")
    return archives
