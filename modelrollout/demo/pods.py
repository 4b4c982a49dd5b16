"""A local "pod": one ``modelrollout serve`` process on a free loopback port.

``LocalKube`` turns the container arguments of a Deployment (exactly what ``manifests.deployment``
writes) into a command line: the listen address becomes 127.0.0.1 and a free port; the image is
ignored — the model server is this installation's own ``python -m modelrollout serve``. Readiness is
the server's ``/health/ready``, the same endpoint the Deployment's readinessProbe names.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelrollout.demo import procs

PROBE_TIMEOUT = 0.5
ExtraArgs = Callable[[Mapping[str, str]], Sequence[str]]


def local_args(args: Sequence[str], port: int) -> list[str]:
    """The container's arguments with the listen address moved to loopback and ``port``."""
    out = list(args)
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


@dataclass
class ServerPod:
    """One model-server process. Not thread-safe by itself: ``LocalKube`` serialises calls."""

    name: str
    command: list[str]
    log_path: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerPod:
        self.process = procs.spawn(self.command, self.log_path, self.env)
        return self

    def probe_ready(self) -> bool:
        """GET /health/ready answered 200. Never raises."""
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=PROBE_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            return False

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        """SIGTERM: the server drains in-flight requests, then exits. Idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def wait(self, timeout: float) -> None:
        if self.process is not None:
            procs.stop(self.process, timeout)

    def last_log_line(self) -> str:
        return procs.last_line(self.log_path)


@dataclass
class ServerPodFactory:
    """Makes ``ServerPod`` s; ``extra_args`` adds arguments by pod labels (the demo's fault injection)."""

    log_dir: Path
    extra_args: ExtraArgs = lambda labels: ()
    python: str = sys.executable
    started: int = 0

    def __call__(self, name: str, args: Sequence[str], env: Mapping[str, str], labels: Mapping[str, str]) -> ServerPod:
        self.started += 1
        port = procs.free_port()
        command = [self.python, "-m", "modelrollout", "serve", *local_args(args, port), *self.extra_args(labels)]
        log_path = self.log_dir / f"{name}-{self.started}.log"
        return ServerPod(name, command, log_path, port, dict(env)).start()
