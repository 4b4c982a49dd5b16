"""A real Prometheus on loopback whose scrape targets and rules tests change at run time.

Scraping and rule evaluation every second keep analysis tests short while still exercising the real
PromQL engine (rate windows, histogram_quantile, staleness). Targets come from ``file_sd_configs``: a test
writes a JSON file and Prometheus picks it up within a second, no reload and no restart.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.rig import paths
from tests.rig.procs import Component, free_port, wait_until

INTERVAL = "1s"
STARTUP_TIMEOUT = 60.0


class PrometheusQueryError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, timeout, ...)."""


def _write_atomically(path: Path, text: str) -> None:
    """Prometheus re-reads files as they change; a rename means it never sees half a file."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


@dataclass
class Prometheus:
    """One Prometheus server; ``url`` is its base URL once ``start()`` returned."""

    work_dir: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    binary: str = "prometheus"
    """The rig binary: Debian's ``prometheus``, or ``prometheus-k8s`` (with Kubernetes service discovery)."""
    host: str = "127.0.0.1"
    """Where it listens: loopback, or an address pods can reach (an in-cluster operator queries it)."""
    component: Component | None = field(init=False, default=None)
    _targets: dict[str, dict[str, dict[str, str]]] = field(init=False, default_factory=dict)
    _discovered: list[dict[str, Any]] = field(init=False, default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def targets_dir(self) -> Path:
        return self.work_dir / "targets"

    @property
    def rules_dir(self) -> Path:
        return self.work_dir / "rules"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": INTERVAL,
                "scrape_timeout": INTERVAL,
                "evaluation_interval": INTERVAL,
            },
            "rule_files": [str(self.rules_dir / "*.yaml")],
            "scrape_configs": [
                {
                    "job_name": "file-sd",  # each file's own `job` label overrides this name
                    "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")], "refresh_interval": INTERVAL}],
                },
                *self._discovered,
            ],
        }

    def start(self) -> Prometheus:
        prometheus = paths.binary(self.binary)
        for directory in (self.targets_dir, self.rules_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        config = self.work_dir / "prometheus.yml"
        self.component = Component(
            "prometheus",
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",  # POST /-/reload after rule changes
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            self.log_dir,
        ).start()
        wait_until(
            lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
            timeout=STARTUP_TIMEOUT,
            what="Prometheus /-/ready",
            alive=self.component.check_alive,
        )
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    def _write_config(self) -> None:
        _write_atomically(self.work_dir / "prometheus.yml", yaml.safe_dump(self.config(), sort_keys=False))

    # --- targets and rules ---------------------------------------------------------------------

    def discover(self, scrape_configs: list[dict[str, Any]]) -> None:
        """Add scrape jobs that find their targets themselves (e.g. Kubernetes service discovery, see
        ``podmonitor.scrape_configs``), replacing jobs of the same name, and reload."""
        names = {config["job_name"] for config in scrape_configs}
        self._discovered = [c for c in self._discovered if c["job_name"] not in names] + list(scrape_configs)
        self._write_config()
        self.reload()

    def active_targets(self) -> list[dict[str, Any]]:
        """Prometheus' active targets (``/api/v1/targets``): labels, health, last error."""
        targets: list[dict[str, Any]] = self._api("targets", {"state": "active"})["activeTargets"]
        return targets

    def add_target(self, job: str, address: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape ``address`` (host:port; ``__metrics_path__`` in labels changes the path) as ``job``."""
        self._targets.setdefault(job, {})[address] = dict(labels or {})
        self._write_job(job)

    def remove_target(self, job: str, address: str | None = None) -> None:
        """Stop scraping one address of ``job``, or the whole job when ``address`` is None."""
        if address is None:
            self._targets.pop(job, None)
        else:
            self._targets.get(job, {}).pop(address, None)
        self._write_job(job)

    def _write_job(self, job: str) -> None:
        groups = [
            {"targets": [address], "labels": {**labels, "job": job}}
            for address, labels in self._targets.get(job, {}).items()
        ]
        path = self.targets_dir / f"{job}.json"
        if groups:
            _write_atomically(path, json.dumps(groups, indent=2))
        else:
            path.unlink(missing_ok=True)

    def wait_for_target(self, job: str, address: str, *, timeout: float = 30.0) -> None:
        """Block until Prometheus has scraped ``address`` successfully at least once."""

        def healthy() -> bool:
            active = self._api("targets", {"state": "active"})["activeTargets"]
            return any(
                t["labels"].get("job") == job and t["labels"].get("instance") == address and t.get("health") == "up"
                for t in active
            )

        wait_until(healthy, timeout=timeout, what=f"target {address} of job {job} up")

    def set_rules(self, name: str, groups: list[dict[str, Any]] | str) -> None:
        """Install (or replace) a rule file and reload; ``groups`` is the ``groups:`` list or YAML text."""
        text = groups if isinstance(groups, str) else yaml.safe_dump({"groups": groups}, sort_keys=False)
        _write_atomically(self.rules_dir / f"{name}.yaml", text)
        self.reload()

    def reload(self) -> None:
        response = httpx.post(f"{self.url}/-/reload", timeout=30)
        response.raise_for_status()

    # --- queries ---------------------------------------------------------------------------------

    def _api(self, endpoint: str, params: Mapping[str, str]) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{endpoint}", params=dict(params), timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{endpoint} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (vector samples: ``{"metric": ..., "value": [t, v]}``)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def wait_for_series(self, promql: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns at least one series; raises TimeoutError otherwise."""
        started = time.monotonic()
        try:
            return wait_until(lambda: self.query(promql) or None, timeout=timeout, what=f"series for {promql!r}")
        except TimeoutError as error:
            targets = self._api("targets", {"state": "active"})["activeTargets"]
            summary = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
            raise TimeoutError(f"{error} after {time.monotonic() - started:.1f}s; active targets: {summary}") from error
