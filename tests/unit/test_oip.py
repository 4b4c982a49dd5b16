from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from model_server import binary
from model_server.bundle import ModelManifest
from model_server.dataplane import Prediction
from model_server.errors import BadRequest, InvalidInput
from model_server.oip import (
    InferenceRequest,
    binary_outputs,
    check_target,
    requested_outputs,
    to_binary_response,
    to_matrix,
    to_response,
)


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


# ---- the binary tensor data extension and the envelope ---------------------------------------------------

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.6, 2.3]])


def test_binary_tensors_read_like_json_ones(manifests: dict[str, ModelManifest]) -> None:
    """Little-endian, row-major, in input order, each input's binary_data_size bytes; JSON inputs in between."""
    manifest = manifests["iris-v1"]
    fp32 = ROWS.astype("<f4")
    single = request([{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}])
    assert to_matrix(single, manifest, 10, fp32.tobytes()).tolist() == fp32.astype(np.float64).tolist()

    names = manifest.feature_names
    columns = [
        {"name": names[2], "shape": [2], "datatype": "INT16", "parameters": {"binary_data_size": 4}},
        {"name": names[0], "shape": [2, 1], "datatype": "FP64", "data": [[5.1], [6.9]]},
        {"name": names[3], "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
        {"name": names[1], "shape": [2, 1], "datatype": "UINT8", "parameters": {"binary_data_size": 2}},
    ]
    raw = np.array([1, 5], "<i2").tobytes() + np.array([0.25, 2.5], "<f2").tobytes() + bytes([3, 4])
    assert to_matrix(request(columns), manifest, 10, raw).tolist() == [[5.1, 3, 1, 0.25], [6.9, 4, 5, 2.5]]


def binary_input(size: Any, datatype: str = "FP64", **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "x", "shape": [1, 4], "datatype": datatype, "parameters": {"binary_data_size": size}, **extra}]


@pytest.mark.parametrize(
    ("inputs", "raw", "message"),
    [
        pytest.param([{"name": "x", "shape": [1, 4], "datatype": "FP64"}], b"", r"inputs\[0\]\.data: Field required",
                     id="no-data"),
        pytest.param(binary_input(33), bytes(32), "33 bytes declared, 32 left", id="past-the-body"),
        pytest.param(binary_input(32, "FP32"), bytes(32), "needs 16 bytes, got 32", id="not-the-shape"),
        pytest.param(binary_input(True), bytes(32), "must be a byte count", id="size-a-bool"),
        pytest.param(binary_input(32, data=[1, 2, 3, 4]), bytes(32), "either data or parameters.binary_data_size",
                     id="data-and-binary"),
        pytest.param(binary_input(16, "FP32"), np.array([1, 2, np.nan, 4], "<f4").tobytes(), "finite", id="nan"),
    ],
)  # fmt: skip
def test_bad_binary_tensors_are_client_errors(
    manifests: dict[str, ModelManifest], inputs: Any, raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_matrix(request(inputs), manifests["iris-v1"], 10, raw)


def test_bytes_nobody_claims_are_a_bad_request(manifests: dict[str, ModelManifest]) -> None:
    single = request([{"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}])
    with pytest.raises(BadRequest, match="1 bytes after the JSON header belong to no input"):
        to_matrix(single, manifests["iris-v1"], 10, bytes(33))


@pytest.mark.parametrize(
    ("declared", "split_at"),
    [(None, 10), ("4", 4), (" 10 ", 10), ("abc", None), ("-1", None), ("0", None), ("11", None), ("1_0", None)],
)
def test_the_header_says_where_the_json_ends(declared: str | None, split_at: int | None) -> None:
    body = b"0123456789"
    if split_at is None:
        with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
            binary.split(body, declared)
    else:
        assert binary.split(body, declared) == (body[:split_at], body[split_at:])


@pytest.mark.parametrize(
    ("body", "path_version", "asked", "mismatch"),
    [
        ({}, None, None, None),
        ({"model_name": "iris", "model_version": "1.0.0"}, "1.0.0", "1.0.0", None),
        ({"model_name": "", "model_version": ""}, None, None, None),
        ({"model_version": "2.0.0"}, None, "2.0.0", None),  # the unversioned path: the body picks (404 if not served)
        ({"model_name": "wine"}, None, None, "model_name 'wine' in the body does not match 'iris'"),
        ({"model_version": "2.0.0"}, "1.0.0", None, "model_version '2.0.0' in the body does not match '1.0.0'"),
    ],
)
def test_the_body_may_name_the_model_of_the_path(
    body: dict[str, str], path_version: str | None, asked: str | None, mismatch: str | None
) -> None:
    infer = InferenceRequest.model_validate(
        {**body, "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}
    )
    if mismatch is None:
        assert check_target(infer, "iris", path_version) == asked
    else:
        with pytest.raises(BadRequest, match=mismatch) as caught:
            check_target(infer, "iris", path_version)
        assert [p.field for p in caught.value.problems] == [next(iter(body))]


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary_ones"),
    [
        (None, None, set()),
        ({"binary_data_output": True}, None, {"predict", "predict_proba"}),
        ({"binary_data_output": True}, [("predict", None), ("predict_proba", False)], {"predict"}),
        ({"binary_data_output": False}, [("predict", True), ("predict_proba", None)], {"predict"}),
        (None, [("predict_proba", True)], {"predict_proba"}),
        ({"priority": 1}, [("predict", None)], set()),
    ],
)
def test_binary_outputs_per_output_over_the_requests_default(
    parameters: dict[str, Any] | None, outputs: list[tuple[str, bool | None]] | None, binary_ones: set[str]
) -> None:
    body: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}
    if parameters is not None:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = [{"name": n, **({} if b is None else {"parameters": {"binary_data": b}})} for n, b in outputs]
    assert binary_outputs(InferenceRequest.model_validate(body)) == binary_ones


def test_binary_response_layout(manifests: dict[str, ModelManifest]) -> None:
    """The JSON header (its length returned for the header), then each binary output in output order."""
    manifest = manifests["iris-v1"]
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]])
    prediction = Prediction(["setosa", "virginica"], probabilities)
    body, length = to_binary_response(
        manifest, "rid", prediction, ["predict_proba", "predict"], {"predict_proba", "predict"}
    )
    header = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [48, 4 + 6 + 4 + 9]
    assert all("data" not in o for o in header["outputs"])
    assert body[length : length + 48] == probabilities.astype("<f8").tobytes()
    assert body[length + 48 :] == b"\x06\0\0\0setosa\x09\0\0\0virginica"
    mixed, length = to_binary_response(manifest, "rid", prediction, ["predict", "predict_proba"], {"predict"})
    outputs = json.loads(mixed[:length])["outputs"]
    assert outputs[1]["data"] == probabilities.ravel().tolist() and "parameters" not in outputs[1]
    assert mixed[length:] == b"\x06\0\0\0setosa\x09\0\0\0virginica"


def test_the_classification_extension_is_refused_not_ignored() -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}],
        "outputs": [{"name": "predict", "parameters": {"classification": 2}}],
    }
    with pytest.raises(InvalidInput, match=r"outputs\[0\]\.parameters\.classification"):
        requested_outputs(InferenceRequest.model_validate(body))
