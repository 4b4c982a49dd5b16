"""The generated CRD on a real API server: accepted, printer columns, and CEL messages for bad specs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rig import Cluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "crd-validation"
GOOD: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": NAMESPACE},
    "spec": {
        "model": {
            "name": "iris",
            "version": "2.0.0",
            "uri": "http://models.internal/iris-2.0.0/",
            "digest": "sha256:" + "a" * 64,
        },
        "image": "registry.internal/modelrollout/server@sha256:" + "b" * 64,
        "strategy": {"canary": {"steps": [{"setWeight": 5}, {"pause": {"duration": "30s"}}, {"setWeight": 100}]}},
        "analysis": {"interval": "30s", "slo": {"maxErrorRate": 0.01, "maxLatencyP95": "250ms"}},
    },
}


@pytest.fixture(scope="module")
def crd_cluster(cluster: Cluster) -> Cluster:
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io", "--timeout=60s")
    cluster.create_namespace(NAMESPACE)
    return cluster


def variant(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(GOOD)
    node = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return body


def test_a_valid_model_deployment_is_accepted_with_printer_columns(crd_cluster: Cluster) -> None:
    crd_cluster.apply(GOOD)
    out = crd_cluster.kubectl("get", "md", "-n", NAMESPACE).stdout
    assert out.split()[:6] == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "AGE"]
    crd_cluster.kubectl("delete", "md", "iris", "-n", NAMESPACE)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.strategy", {"canary": {"steps": [{"setWeight": 5}, {"setWeight": 50}]}},
         "the last setWeight step must be 100"),
        ("spec.strategy", {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}, {"setWeight": 100}]}},
         "setWeight values must rise strictly"),
        ("spec.strategy", {"canary": {"steps": [{"setWeight": 0}, {"setWeight": 100}]}},
         "should be greater than or equal to 1"),
        ("spec.strategy", {"canary": {"steps": [{"setWeight": 5, "pause": {}}, {"setWeight": 100}]}},
         "each step is either setWeight or pause"),
        ("spec.model.digest", "sha256:nothex", "spec.model.digest"),
        ("spec.model.format", "joblib", "format joblib requires trustPickle: true"),
        ("spec.analysis", {"interval": "0s"}, "durations must be greater than 0"),
        ("spec.analysis", {"interval": "soon"}, "spec.analysis.interval"),
        ("spec.analysis", {"slo": {"maxErrorRate": 1.5}}, "spec.analysis.slo.maxErrorRate"),
        ("spec.analysis", {"metrics": [{"name": "m", "query": "up"}]}, "a metric check needs min, max or both"),
        ("spec.analysis", {"metrics": [{"name": "m", "query": "up", "min": 2, "max": 1}]}, "min must not exceed max"),
    ],
)  # fmt: skip
def test_invalid_specs_are_rejected_with_a_clear_message(
    crd_cluster: Cluster, path: str, value: Any, message: str
) -> None:
    body = yaml.safe_dump(variant(path, value))
    result = crd_cluster.kubectl("apply", "--server-side", "-f", "-", input=body, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
