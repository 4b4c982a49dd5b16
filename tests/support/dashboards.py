"""The Grafana dashboard the chart ships, read as PromQL: each panel query with its template variables filled in.

Unit tests parse every query with promtool; integration tests run them against a real Prometheus during a
rollout, passing the rollout's namespace and model to ``dashboard_queries``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from tests.rig.paths import REPO

DASHBOARD: Final = REPO / "charts" / "modelrollout" / "files" / "dashboards" / "modelrollout.json"

DEFAULT_VARIABLES: Final[Mapping[str, str]] = {
    "datasource": "prometheus",
    "namespace": ".*",
    "model": ".*",
    "rollout": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
}
"""Values that select everything: the dashboard as it opens with every variable on "All"."""

_VARIABLE = re.compile(r"\$\{(?P<braced>\w+)\}|\$(?P<bare>\w+)")


class UnknownVariableError(KeyError):
    """A query uses a template variable that the given mapping has no value for."""


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana's ``$name`` and ``${name}`` with their values; unknown names raise."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        if name not in variables:
            raise UnknownVariableError(f"${name} in {text!r} has no value (known: {sorted(variables)})")
        return variables[name]

    return _VARIABLE.sub(value, text)


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(
    path: Path = DASHBOARD, variables: Mapping[str, str] = DEFAULT_VARIABLES
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target, with ``variables`` substituted."""
    return [
        (panel["title"], substitute(target["expr"], variables))
        for panel in panels(load_dashboard(path))
        for target in panel.get("targets", [])
    ]
