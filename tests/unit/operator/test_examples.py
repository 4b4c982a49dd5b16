from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model_operator.spec import ModelDeploymentSpec

MANIFESTS = sorted((Path(__file__).resolve().parents[3] / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_example_model_deployments_are_valid(path: Path) -> None:
    found = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "ModelDeployment"]
    assert found, f"{path.name} holds no ModelDeployment"
    for document in found:
        ModelDeploymentSpec.model_validate(document["spec"])
