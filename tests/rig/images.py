"""The project's container images as ``build_images.sh`` built them, and a way to run one without a kubelet.

``build_images.sh`` writes ``$RIG_DIR/images/images.env``: for each image its reference, the manifest digest
of its OCI archive (what containerd stores after ``ctr images import``) and the archive's path.

``MountedImage`` runs a command from an image the way a kubelet with ``readOnlyRootFilesystem: true`` would:
the image's root filesystem (a buildah working container) bind-mounted read-only in a private mount namespace,
an empty tmpfs on ``/tmp`` (the emptyDir), ``/dev`` with the usual nodes and a ``/dev/shm``, a ``/proc``,
read-only bind mounts for secrets, the image's environment, and the image's user (65532) with no capabilities.
The network is the host's, so a server in the image answers on 127.0.0.1 like a pod behind a port-forward.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from tests.rig.paths import RigMissingError, rig_dir

BUILD_SCRIPT = Path(__file__).resolve().parent / "build_images.sh"
BUILD_HINT = "run `bash tests/rig/build_images.sh` to build the container images"
DEVICES = ("null", "zero", "full", "random", "urandom")

# Runs as root in a new mount namespace: $1 the image's root, $2 an empty directory to assemble it in, $3 the
# user, then SOURCE TARGET pairs of read-only binds up to "--", then the command. Every mount is private to the
# namespace and disappears with its last process.
_CONFINE = r"""
set -eu
image_root=$1 root=$2 user=$3
shift 3
mount --bind "$image_root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
for device in null zero full random urandom; do
  touch "$root/dev/$device"
  mount --bind "/dev/$device" "$root/dev/$device"
done
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
while [ "$1" != "--" ]; do
  mount --bind "$1" "$root$2"
  mount -o remount,bind,ro "$root$2"
  shift 2
done
shift
exec chroot --userspec="$user" "$root" "$@"
"""


@dataclass(frozen=True)
class BuiltImage:
    """One image from ``images.env``."""

    name: str  # model-server, operator
    reference: str  # localhost/modelrollout/model-server:e2e
    digest: str  # sha256:… of the manifest in the OCI archive
    archive: Path

    @property
    def repository(self) -> str:
        return self.reference.rsplit(":", 1)[0]

    @property
    def pinned(self) -> str:
        """``REPOSITORY@DIGEST``: the name ``ctr images import`` gives the archive besides the reference."""
        return f"{self.repository}@{self.digest}"


def images_env_path() -> Path:
    return rig_dir() / "images" / "images.env"


def built_images() -> dict[str, BuiltImage]:
    """The images ``build_images.sh`` exported, by name; ``RigMissingError`` with the fix when absent."""
    path = images_env_path()
    if not path.is_file():
        raise RigMissingError(f"{path} is missing: {BUILD_HINT} (RIG_DIR={rig_dir()})")
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    out: dict[str, BuiltImage] = {}
    for key, reference in values.items():
        if not key.endswith("_IMAGE") or key == "BASE_IMAGE":
            continue
        prefix = key.removesuffix("_IMAGE")
        archive = Path(values[f"{prefix}_ARCHIVE"])
        if not archive.is_file():
            raise RigMissingError(f"{archive} is missing: {BUILD_HINT}")
        name = prefix.lower().replace("_", "-")
        out[name] = BuiltImage(name, reference, values[f"{prefix}_DIGEST"], archive)
    return out


def buildah(*args: str, timeout: float = 120.0) -> str:
    """Run buildah on the rig's image storage; its stdout, or RuntimeError with its stderr."""
    executable = shutil.which("buildah")
    if executable is None:
        raise RigMissingError(f"buildah is not installed: {BUILD_HINT}")
    storage = rig_dir() / "containers"
    command = [executable, "--root", str(storage / "root"), "--runroot", str(storage / "runroot")]
    command += ["--storage-driver", "overlay", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class ImageConfig:
    """What a runtime takes from the image's OCI config."""

    user: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    labels: dict[str, str]


def image_config(reference: str) -> ImageConfig:
    inspected = json.loads(buildah("inspect", "--type", "image", reference))
    config = inspected["OCIv1"].get("config", {})
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return ImageConfig(
        user=config.get("User") or "0:0",
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        env=env,
        labels=dict(config.get("Labels") or {}),
    )


def _inside(root: Path, path: str) -> Path:
    """``path`` (absolute, in the image) under ``root``, refusing a symlink on the way: a link such as
    ``/var/run -> /run`` would otherwise lead a host-side mkdir out of the image."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"not an absolute path inside the image: {path}")
    current = root
    for part in pure.parts[1:]:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"{path} crosses the symlink {current.relative_to(root)} in the image")
    return current


@dataclass
class MountedImage:
    """A buildah working container of ``reference``, mounted; ``command`` confines a process to it."""

    reference: str
    work_dir: Path
    container: str = ""
    image_root: Path = field(default_factory=Path)
    config: ImageConfig | None = None

    def __enter__(self) -> MountedImage:
        self.container = f"rig-{self.reference.rsplit('/', 1)[-1].replace(':', '-')}-{uuid.uuid4().hex[:8]}"
        buildah("from", "--pull-never", "--name", self.container, self.reference)
        self.image_root = Path(buildah("mount", self.container).strip())
        self.config = image_config(self.reference)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        buildah("rm", self.container)

    def command(
        self, args: Sequence[str], *, entrypoint: Sequence[str] | None = None, secrets: Mapping[str, Path] | None = None
    ) -> list[str]:
        """The host command that runs the image's entrypoint (or ``entrypoint``) with ``args`` confined to
        the image; ``secrets`` bind-mounts host directories read-only at paths in the image (created in the
        working container's own layer, as a runtime creates mount points, never in the image)."""
        assert self.config is not None, "use MountedImage as a context manager"
        binds: list[str] = []
        for target, source in (secrets or {}).items():
            _inside(self.image_root, target).mkdir(parents=True, exist_ok=True)
            binds += [str(source), target]
        root = Path(self.work_dir) / f"root-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True)
        argv = [*(self.config.entrypoint if entrypoint is None else entrypoint), *args]
        if not argv:
            raise ValueError(f"{self.reference} has no entrypoint and no command was given")
        user = self.config.user if ":" in self.config.user else f"{self.config.user}:{self.config.user}"
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _CONFINE, "confine", str(self.image_root), str(root), user, *binds, "--", *argv,
        ]  # fmt: skip

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's environment as a runtime sets it (HOME=/ for a user without a passwd entry), plus
        ``extra`` (a pod's ``env``)."""
        assert self.config is not None, "use MountedImage as a context manager"
        return {"HOME": "/", **self.config.env, **(extra or {})}

    def spawn(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] | None = None,
        secrets: Mapping[str, Path] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start the confined process; its pid is the image's process itself (every step ``exec``s)."""
        with log_path.open("wb") as log:
            return subprocess.Popen(
                self.command(args, entrypoint=entrypoint, secrets=secrets),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(env),
                cwd="/",
            )

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args, entrypoint=entrypoint),
            capture_output=True,
            text=True,
            env=self.environment(env),
            cwd="/",
            timeout=timeout,
            check=False,
        )


def process_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1]
    return int(uid), int(gid)


def process_root_entries(pid: int, path: str) -> list[str]:
    """Names in ``path`` as the process sees its root (``/proc/PID/root``), e.g. what it wrote to /tmp."""
    return sorted(os.listdir(f"/proc/{pid}/root{path}"))
