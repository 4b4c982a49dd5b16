"""The chart's files agree with the rest of the repository (no helm needed: see integration/test_chart.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.support.servers import REPO

CHART = REPO / "charts" / "modelrollout"


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every value a user can set (maps with content are descended)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OPAQUE:
            yield from leaves(value, f"{path}.")
        else:
            yield path


# Values handed to Kubernetes as they are: their inside is the Kubernetes API's, not the chart's.
OPAQUE = {"operator.resources", "operator.podSecurityContext", "operator.securityContext"}


def test_chart_crd_is_the_generated_crd() -> None:
    assert (CHART / "crds" / "modeldeployments.yaml").read_text() == (
        REPO / "crds" / "modeldeployments.yaml"
    ).read_text(), "charts/modelrollout/crds/ is stale: run `make crds`"


def documented_paths(text: str) -> set[str]:
    """Dotted paths of the keys in values.yaml that have a comment line right above them."""
    stack: list[tuple[int, str]] = []
    found: set[str] = set()
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if index and lines[index - 1].strip().startswith("#"):
            found.add(".".join(key for _, key in stack))
    return found


def test_every_value_is_documented_in_values_yaml() -> None:
    text = (CHART / "values.yaml").read_text()
    undocumented = sorted(set(leaves(yaml.safe_load(text))) - documented_paths(text))
    assert not undocumented, f"values without a `# --` comment above them: {undocumented}"


def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in leaves(values):
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                missing.append(path)
                break
        else:
            assert "description" in node or node.get("type") == "object", f"{path}: no description in the schema"
    assert not missing, f"values.yaml keys the schema does not describe: {missing}"
    assert schema["additionalProperties"] is False, "a mistyped top-level key must be rejected"


def test_makefile_keeps_the_chart_crd_in_step() -> None:
    assert "charts/modelrollout/crds/modeldeployments.yaml" in (REPO / "Makefile").read_text()
