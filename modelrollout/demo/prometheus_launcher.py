"""A real Prometheus on loopback for the demo, when one is installed.

Looked for on ``PATH``, then in ``$RIG_DIR/bin`` (where ``make rig`` builds the test rig's copy). It
scrapes every second; its targets come from a ``file_sd_configs`` file that ``set_targets`` rewrites
atomically whenever LocalKube's processes change (Prometheus re-reads it within a second) — the local
stand-in for Kubernetes service discovery. The operator's own ``PrometheusProvider`` queries it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from modelrollout.demo import procs

INTERVAL = "1s"
STARTUP_TIMEOUT = 60.0


class PrometheusError(RuntimeError):
    """Prometheus could not be started."""


def find_prometheus() -> Path | None:
    """The ``prometheus`` binary on PATH or in ``$RIG_DIR/bin``; None when there is none."""
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    rig = os.environ.get("RIG_DIR")
    candidate = Path(rig) / "bin" / "prometheus" if rig else None
    if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


class PrometheusServer:
    """One Prometheus process; ``url`` answers once ``start`` returned."""

    def __init__(self, binary: Path, work_dir: Path, job: str = "model-servers") -> None:
        self.binary, self.work_dir, self.job = binary, work_dir, job
        self.port = procs.free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "prometheus.log"

    @property
    def targets_file(self) -> Path:
        return self.work_dir / "targets.json"

    def config(self) -> dict[str, object]:
        return {
            "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": INTERVAL}],
                }
            ],
        }

    def start(self) -> PrometheusServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.set_targets([])
        command = [
            str(self.binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = procs.spawn(command, self.log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {self.process.returncode}: {procs.last_line(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {STARTUP_TIMEOUT:.0f}s (log: {self.log_path})")

    def set_targets(self, urls: Iterable[str]) -> None:
        """Scrape exactly these base URLs from now on. Idempotent; written atomically; thread-safe."""
        wanted = tuple(sorted(set(urls)))
        with self._lock:
            if wanted == self._targets:
                return
            groups = [{"targets": [urlsplit(url).netloc], "labels": {"job": self.job}} for url in wanted]
            partial = self.targets_file.with_name(f".{self.targets_file.name}.tmp")
            partial.write_text(json.dumps(groups, indent=2))
            os.replace(partial, self.targets_file)
            self._targets = wanted

    def stop(self) -> None:
        """Stop it and delete its data (the demo keeps only the log). Idempotent."""
        if self.process is not None:
            procs.stop(self.process)
        shutil.rmtree(self.work_dir / "data", ignore_errors=True)
