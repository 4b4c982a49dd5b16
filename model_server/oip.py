"""Open Inference Protocol (KServe v2) request/response shapes and the tensor ↔ matrix conversion.

Two input layouts are accepted, as KServe and MLServer clients send them:
- one tensor of shape ``[N, F]`` (columns in the model's feature order), data flat or nested;
- one tensor per feature, named after the feature, each of shape ``[N]`` or ``[N, 1]``.
Each tensor's values come as JSON ``data`` or as binary data after the JSON (``binary.py``); either way
they are checked the same: numeric datatype, element count matching the shape, finite.
Outputs: ``predict`` (BYTES, the class label per row) and ``predict_proba`` (FP64, ``[N, C]``), as JSON or,
when asked for, as binary data.

The envelope is lenient where real clients differ and nothing can go wrong: ``model_name`` and
``model_version`` in the body (KServe's client sends ``model_name``; the binary extension's own example
does too) are accepted when they agree with the path, and so are any ``parameters``. Values are strict.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_server import binary
from model_server.batching import Matrix
from model_server.bundle import ModelManifest
from model_server.dataplane import Prediction
from model_server.errors import BadRequest, FieldProblem, InvalidInput

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
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size`: the tensor's bytes follow the JSON (binary tensor extension)"
    )
    data: list[Any] | None = Field(default=None, description="Required unless sent as binary data")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="`binary_data`: return it as binary data")


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=256)
    model_name: str | None = Field(default=None, max_length=256, description="If given, must match the path's")
    model_version: str | None = Field(default=None, max_length=256, description="If given, must be served here")
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_output`: return every output as binary data"
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


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


def check_target(request: InferenceRequest, name: str, version: str | None) -> str | None:
    """Refuse a body that names another model or version than the path; the version the body asks for.

    An empty ``model_name``/``model_version`` counts as absent (Triton's reading: "" is the latest version).
    """
    if not (request.model_name or request.model_version):
        return version
    problems = [
        (field, given, expected)
        for field, given, expected in (
            ("model_name", request.model_name, name),
            ("model_version", request.model_version, version),
        )
        if given and expected is not None and given != expected
    ]
    if problems:
        raise BadRequest(
            "; ".join(
                f"{field} {given!r} in the body does not match {expected!r} in the path"
                for field, given, expected in problems
            ),
            [
                FieldProblem(field, f"{given!r} in the body, {expected!r} in the path", "mismatch")
                for field, given, expected in problems
            ],
        )
    return version or request.model_version or None


def binary_inputs(request: InferenceRequest, raw: bytes) -> list[bytes | None]:
    """Each input's binary data (None where it sent JSON ``data``), cut from ``raw`` in input order."""
    out: list[bytes | None] = []
    offset = 0
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise InvalidInput(
                    f"{where}.data: Field required (or send the tensor's bytes, with parameters.binary_data_size)",
                    [FieldProblem(f"{where}.data", "Field required", "missing")],
                )
            out.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(
                f"{where}.parameters.binary_data_size: must be a byte count, got {size!r}",
                [FieldProblem(f"{where}.parameters.binary_data_size", "must be a non-negative integer", "int_type")],
            )
        if tensor.data is not None:
            raise InvalidInput(
                f"{where}: send either data or parameters.binary_data_size, not both",
                [FieldProblem(f"{where}.data", "not allowed with parameters.binary_data_size", "extra_forbidden")],
            )
        if offset + size > len(raw):
            raise InvalidInput(
                f"{where}.parameters.binary_data_size: {size} bytes declared, {len(raw) - offset} left after the "
                f"JSON header ({binary.HEADER_TITLE} and the body's length disagree with the inputs)",
                [FieldProblem(f"{where}.parameters.binary_data_size", "more bytes than the body holds", "binary_size")],
            )
        out.append(raw[offset : offset + size])
        offset += size
    if offset != len(raw):
        raise BadRequest(
            f"{len(raw) - offset} bytes after the JSON header belong to no input's binary_data_size",
            [FieldProblem("inputs", "binary data left over", "binary_size")],
        )
    return out


def _values(tensor: RequestInput, where: str, raw: bytes | None) -> Matrix:
    """A tensor's elements as float64, flat, after checking their count against the shape."""
    expected = int(np.prod(tensor.shape)) if all(d >= 0 for d in tensor.shape) else -1
    if raw is not None:
        itemsize = binary.DTYPES[tensor.datatype].itemsize
        if expected * itemsize != len(raw):
            raise InvalidInput(
                f"{where}.parameters.binary_data_size: shape {tensor.shape} of {tensor.datatype} needs "
                f"{max(expected, 0) * itemsize} bytes, got {len(raw)}",
                [FieldProblem(f"{where}.parameters.binary_data_size", "does not match the shape", "shape")],
            )
        return binary.decode(raw, tensor.datatype).astype(np.float64)
    assert tensor.data is not None  # binary_inputs refused the tensor otherwise
    values = _flatten(tensor.data, f"{where}.data")
    if expected != len(values):
        raise InvalidInput(
            f"{where}: shape {tensor.shape} needs {max(expected, 0)} values, data has {len(values)}",
            [FieldProblem(f"{where}.shape", "does not match the number of data elements", "shape")],
        )
    return np.asarray(values, dtype=np.float64)


def _tensor(tensor: RequestInput, index: int, columns: int | None, raw: bytes | None) -> Matrix:
    where = f"inputs[{index}]"
    if tensor.datatype not in NUMERIC_TYPES:
        raise InvalidInput(
            f"{where}.datatype: {tensor.datatype} is not numeric; use FP64, FP32 or an integer type",
            [FieldProblem(f"{where}.datatype", "must be a numeric datatype", "datatype")],
        )
    array = _values(tensor, where, raw)
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


def to_matrix(request: InferenceRequest, manifest: ModelManifest, max_rows: int, raw: bytes = b"") -> Matrix:
    """The request's rows in feature order; ``raw`` is the body after the JSON (binary tensors, or nothing)."""
    names = manifest.feature_names
    chunks = binary_inputs(request, raw)
    if len(request.inputs) == 1 and request.inputs[0].name not in names:
        matrix = _tensor(request.inputs[0], 0, len(names), chunks[0])
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
        columns = [_tensor(t, i, None, chunks[i]) for i, t in (by_name[n] for n in names)]
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
    for index, output in enumerate(request.outputs):
        if "classification" in (output.parameters or {}):
            raise InvalidInput(
                f"outputs[{index}].parameters.classification: the classification extension is not supported; "
                "request 'predict' (the class label per row) and 'predict_proba'",
                [FieldProblem(f"outputs[{index}].parameters.classification", "not supported", "extension")],
            )
    return names


def _flag(parameters: dict[str, Any] | None, key: str, where: str, default: bool) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(
            f"{where}.{key}: must be true or false, got {value!r}",
            [FieldProblem(f"{where}.{key}", "must be a boolean", "bool_type")],
        )
    return value


def binary_outputs(request: InferenceRequest) -> set[str]:
    """The outputs to send as binary data: ``binary_data`` per output, else the request's ``binary_data_output``."""
    default = _flag(request.parameters, "binary_data_output", "parameters", False)
    if not request.outputs:
        return set(OUTPUT_NAMES) if default else set()
    return {
        output.name
        for index, output in enumerate(request.outputs)
        if _flag(output.parameters, "binary_data", f"outputs[{index}].parameters", default)
    }


def _header(manifest: ModelManifest, request_id: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model_name": manifest.name,
        "model_version": manifest.version,
        "id": request_id,
        "parameters": {},
        "outputs": outputs,
    }


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
    return _header(manifest, request_id, [tensors[name] for name in outputs])


def to_binary_response(
    manifest: ModelManifest, request_id: str, prediction: Prediction, outputs: list[str], as_binary: set[str]
) -> tuple[bytes, int]:
    """The response body with the outputs in ``as_binary`` as binary data, and its JSON header's length."""
    rows = len(prediction.classes)
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in outputs:
        labels = name == "predict"
        tensor: dict[str, Any] = {
            "name": name,
            "shape": [rows] if labels else [rows, len(manifest.classes)],
            "datatype": "BYTES" if labels else "FP64",
        }
        if name in as_binary:
            chunks.append(
                binary.encode_strings(prediction.classes)
                if labels
                else binary.encode_numbers(prediction.probabilities, "FP64")
            )
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = prediction.classes if labels else prediction.probabilities.ravel().tolist()
        tensors.append(tensor)
    return binary.join(_header(manifest, request_id, tensors), chunks)
