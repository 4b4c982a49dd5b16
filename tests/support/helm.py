"""The rig's helm binary, run against a test cluster with its own throwaway config/cache dirs."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.rig.paths import binary
from tests.support.servers import REPO

CHART = REPO / "charts" / "modelrollout"


class HelmError(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr or result.stdout}")
        self.stderr = result.stderr


@dataclass
class Helm:
    home: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "PATH": "/usr/bin:/bin",
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        command = [str(binary("helm")), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise HelmError(list(args), result)
        return result

    def template(
        self, values: Mapping[str, Any] | None = None, namespace: str = "modelrollout-system", release: str = "mr"
    ) -> list[dict[str, Any]]:
        rendered = self.run(
            "template", release, str(CHART), "-n", namespace, "--skip-tests", *self.values_args(values)
        ).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    def values_args(self, values: Mapping[str, Any] | None) -> list[str]:
        """``--values`` of a file holding ``values`` (types survive, unlike ``--set``)."""
        if not values:
            return []
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / f"values-{abs(hash(yaml.safe_dump(dict(values))))}.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        return ["--values", str(path)]


def kinds(documents: list[dict[str, Any]]) -> set[str]:
    return {doc["kind"] for doc in documents}
