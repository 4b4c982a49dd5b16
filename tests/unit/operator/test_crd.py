from __future__ import annotations

from pathlib import Path

from model_operator.crdgen import render

REPO = Path(__file__).resolve().parents[3]


def test_committed_crd_is_the_generated_one() -> None:
    committed = (REPO / "crds" / "modeldeployments.yaml").read_text()
    assert committed == render(), "crds/modeldeployments.yaml is stale: run `make crds` and commit it"
