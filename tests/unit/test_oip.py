from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model_server.bundle import ModelManifest
from model_server.dataplane import Prediction
from model_server.errors import InvalidInput
from model_server.oip import InferenceRequest, requested_outputs, to_matrix, to_response


def request(inputs: list[dict[str, Any]], outputs: list[str] | None = None) -> InferenceRequest:
    body: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return InferenceRequest.model_validate(body)


def test_single_tensor_flat_and_nested(manifests: dict[str, ModelManifest]) -> None:
    manifest = manifests["iris-v1"]
    flat = request([{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}])
    nested = request([{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}])
    expected = [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert to_matrix(flat, manifest, 10).tolist() == expected
    assert to_matrix(nested, manifest, 10).tolist() == expected


def test_one_tensor_per_feature(manifests: dict[str, ModelManifest]) -> None:
    manifest = manifests["iris-v1"]
    inputs = [
        {"name": name, "shape": [2], "datatype": "FP64", "data": [i, i + 10]}
        for i, name in reversed(list(enumerate(manifest.feature_names)))
    ]
    assert to_matrix(request(inputs), manifest, 10).tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}], r"expected \[N, 4\]"),
        ([{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "needs 8 values"),
        ([{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}], "not numeric"),
        ([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, "2", 3, 4]}], "must be a number"),
        ([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, True, 3, 4]}], "must be a number"),
        ([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 1e308 * 10, 3, 4]}], "finite"),
        ([{"name": "x", "shape": [11, 4], "datatype": "FP64", "data": [1.0] * 44}], "between 1 and 10 rows"),
        ([{"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}], "between 1 and 10 rows"),
        (
            [
                {"name": "sepal_length_cm", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "bogus", "shape": [1], "datatype": "FP64", "data": [1]},
            ],
            r"unknown \['bogus'\]",
        ),
    ],
)
def test_bad_tensors_are_client_errors(manifests: dict[str, ModelManifest], inputs: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_matrix(request(inputs), manifests["iris-v1"], 10)


def test_outputs_selection_and_response_shape(manifests: dict[str, ModelManifest]) -> None:
    manifest = manifests["iris-v1"]
    req = request([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], ["predict_proba"])
    assert requested_outputs(req) == ["predict_proba"]
    with pytest.raises(InvalidInput, match="unknown output"):
        requested_outputs(request(req.model_dump()["inputs"], ["scores"]))
    prediction = Prediction(["setosa"], np.array([[0.9, 0.05, 0.05]]))
    body = to_response(manifest, "rid", prediction, ["predict", "predict_proba"])
    assert body["outputs"][0] == {"name": "predict", "shape": [1], "datatype": "BYTES", "data": ["setosa"]}
    assert body["outputs"][1]["shape"] == [1, 3] and body["model_version"] == "1.0.0"
