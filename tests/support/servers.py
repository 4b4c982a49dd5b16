"""Start real model-server processes for tests: free port, wait for readiness, stop cleanly, keep logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MODELROLLOUT = [sys.executable, "-m", "modelrollout"]
STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pod_args(namespace: str, name: str, track: str) -> tuple[str, ...]:
    """The arguments the operator's pods give a track's model server (``manifests.deployment``): its role and
    its ModelDeployment, which label every series the analysis reads."""
    return ("--track", track, "--namespace", namespace, "--model-deployment", name)


@dataclass
class ServerProcess:
    """One ``modelrollout serve`` process; ``url`` is its base URL once ``start`` returned."""

    bundle_uri: str
    log_path: Path
    args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*MODELROLLOUT, "serve", self.bundle_uri, "--port", str(self.port), *self.args]

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self.process

    def start(self) -> ServerProcess:
        self.spawn()
        return self.wait_ready()

    def wait_ready(self) -> ServerProcess:
        process = self.process
        assert process is not None, "spawn() first"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELROLLOUT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def processes_mentioning(text: str, exclude: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose command line contains ``text``, except this process,
    ``exclude`` and zombies. The demos name their --out dir on every child's command line, so this finds
    anything they left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), exclude):
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append((int(entry.name), command[:200]))
    return found
