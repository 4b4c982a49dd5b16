"""Open Inference Protocol (KServe v2) request/response shapes and the tensor ↔ matrix conversion.

Two input layouts are accepted, as KServe and MLServer clients send them:
- one tensor of shape ``[N, F]`` (columns in the model's feature order), data flat or nested;
- one tensor per feature, named after the feature, each of shape ``[N]`` or ``[N, 1]``.
Outputs: ``predict`` (BYTES, the class label per row) and ``predict_proba`` (FP64, ``[N, C]``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_server.batching import Matrix
from model_server.bundle import ModelManifest
from model_server.dataplane import Prediction
from model_server.errors import FieldProblem, InvalidInput

NUMERIC_TYPES = (
    "FP64",
    "FP32",
    "FP16",
    "INT64",
    "INT32",
    "INT16",
    "INT8",
    "UINT64",
    "UINT32",
    "UINT16",
    "UINT8",
)
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
OUTPUT_NAMES = ("predict", "predict_proba")


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


def model_metadata(manifest: ModelManifest) -> ModelMetadata:
    return ModelMetadata(
        name=manifest.name,
        versions=[manifest.version],
        platform="sklearn",
        inputs=[TensorMetadata(name="input-0", datatype="FP64", shape=[-1, len(manifest.features)])],
        outputs=[
            TensorMetadata(name="predict", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="predict_proba", datatype="FP64", shape=[-1, len(manifest.classes)]),
        ],
        parameters={"feature_names": manifest.feature_names, "classes": manifest.classes},
    )


def _flatten(data: list[Any], where: str) -> list[float]:
    out: list[float] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise InvalidInput(
                    f"{where}: every element must be a number, got {type(item).__name__}",
                    [FieldProblem(where, "every element must be a number", "number_type")],
                )
            out.append(float(item))
        else:
            stack.pop()
    return out


def _tensor(tensor: RequestInput, index: int, columns: int | None) -> Matrix:
    where = f"inputs[{index}]"
    if tensor.datatype not in NUMERIC_TYPES:
        raise InvalidInput(
            f"{where}.datatype: {tensor.datatype} is not numeric; use FP64, FP32 or an integer type",
            [FieldProblem(f"{where}.datatype", "must be a numeric datatype", "datatype")],
        )
    values = _flatten(tensor.data, f"{where}.data")
    expected = int(np.prod(tensor.shape)) if all(d >= 0 for d in tensor.shape) else -1
    if expected != len(values):
        raise InvalidInput(
            f"{where}: shape {tensor.shape} needs {max(expected, 0)} values, data has {len(values)}",
            [FieldProblem(f"{where}.shape", "does not match the number of data elements", "shape")],
        )
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidInput(
            f"{where}.data: values must be finite",
            [FieldProblem(f"{where}.data", "must be finite", "finite")],
        )
    if columns is not None:
        if len(tensor.shape) != 2 or tensor.shape[1] != columns:
            raise InvalidInput(
                f"{where}.shape: expected [N, {columns}] (one column per feature), got {tensor.shape}",
                [FieldProblem(f"{where}.shape", f"expected [N, {columns}]", "shape")],
            )
        return array.reshape(tensor.shape[0], columns)
    if len(tensor.shape) == 2 and tensor.shape[1] != 1:
        raise InvalidInput(
            f"{where}.shape: a per-feature tensor must be [N] or [N, 1], got {tensor.shape}",
            [FieldProblem(f"{where}.shape", "expected [N] or [N, 1]", "shape")],
        )
    return array


def to_matrix(request: InferenceRequest, manifest: ModelManifest, max_rows: int) -> Matrix:
    names = manifest.feature_names
    if len(request.inputs) == 1 and request.inputs[0].name not in names:
        matrix = _tensor(request.inputs[0], 0, len(names))
    else:
        by_name = {t.name: (i, t) for i, t in enumerate(request.inputs)}
        unknown = sorted(set(by_name) - set(names))
        missing = [n for n in names if n not in by_name]
        if unknown or missing:
            raise InvalidInput(
                f"inputs: send one [N, {len(names)}] tensor, or one tensor per feature named {names}; "
                f"unknown {unknown}, missing {missing}",
                [FieldProblem("inputs", f"unknown {unknown}, missing {missing}", "inputs")],
            )
        columns = [_tensor(by_name[n][1], by_name[n][0], None) for n in names]
        if len({len(c) for c in columns}) != 1:
            raise InvalidInput(
                "inputs: all per-feature tensors must have the same number of rows",
                [FieldProblem("inputs", "row counts differ", "shape")],
            )
        matrix = np.column_stack(columns)
    if not 1 <= len(matrix) <= max_rows:
        raise InvalidInput(
            f"inputs: between 1 and {max_rows} rows per request, got {len(matrix)}",
            [FieldProblem("inputs", f"1..{max_rows} rows", "rows")],
        )
    return matrix


def requested_outputs(request: InferenceRequest) -> list[str]:
    if not request.outputs:
        return list(OUTPUT_NAMES)
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise InvalidInput(
            f"outputs: unknown output(s) {unknown}; this model has {list(OUTPUT_NAMES)}",
            [FieldProblem("outputs", f"unknown {unknown}", "outputs")],
        )
    return names


def to_response(manifest: ModelManifest, request_id: str, prediction: Prediction, outputs: list[str]) -> dict[str, Any]:
    rows = len(prediction.classes)
    tensors = {
        "predict": {"name": "predict", "shape": [rows], "datatype": "BYTES", "data": prediction.classes},
        "predict_proba": {
            "name": "predict_proba",
            "shape": [rows, len(manifest.classes)],
            "datatype": "FP64",
            "data": prediction.probabilities.ravel().tolist(),
        },
    }
    return {
        "model_name": manifest.name,
        "model_version": manifest.version,
        "id": request_id,
        "parameters": {},
        "outputs": [tensors[name] for name in outputs],
    }
