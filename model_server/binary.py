"""Framing of the Open Inference Protocol's binary tensor data extension (Triton's, adopted by KServe).

A request may carry tensors as raw bytes after its JSON: the ``Inference-Header-Content-Length`` header
gives the JSON's length in bytes, each binary input declares its byte count in
``parameters.binary_data_size`` instead of sending ``data``, and the tensors follow the JSON in input
order — little-endian, row-major, no padding; BOOL is one byte per element, BYTES a 4-byte little-endian
length before each element. A response sends an output as bytes when the request asks for it
(``binary_data`` on the requested output, or ``binary_data_output`` in the request's parameters for
every output without its own ``binary_data``), with the same header and ``binary_data_size`` on the output.

KServe's client marks such bodies ``application/octet-stream``, Triton's sends no Content-Type; both send
the header, and the header alone says where the JSON ends (a body without it is all JSON, whatever its
type). This module only cuts and joins bytes; which input is which feature is ``oip``'s business.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from model_server.errors import BadRequest, FieldProblem

HEADER = "inference-header-content-length"
HEADER_TITLE = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
EXTENSION = "binary_tensor_data"  # the name servers report in /v2's "extensions"

# Fixed-size datatypes in their wire layout (little-endian whatever the host); BYTES has no fixed size.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_LENGTH = struct.Struct("<I")


def split(body: bytes, declared: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request body; without the header the whole body is JSON."""
    if declared is None:
        return body, b""
    value = declared.strip()
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(
            f"{HEADER_TITLE} must be the JSON header's length in bytes, got {declared!r}",
            [FieldProblem(HEADER_TITLE, "must be a non-negative integer", "header")],
        )
    length = int(value)
    if not 0 < length <= len(body):
        raise BadRequest(
            f"{HEADER_TITLE} is {length}, but the body has {len(body)} bytes",
            [FieldProblem(HEADER_TITLE, f"must be between 1 and the body's {len(body)} bytes", "header")],
        )
    return body[:length], body[length:]


def decode(raw: bytes, datatype: str) -> np.ndarray[Any, np.dtype[Any]]:
    """A fixed-size tensor's elements, flat, as sent (the caller has checked ``len(raw)`` against the shape)."""
    return np.frombuffer(raw, dtype=DTYPES[datatype])


def encode_strings(items: Iterable[str]) -> bytes:
    """A BYTES tensor on the wire: each element's UTF-8 length (4 bytes, little-endian), then the element."""
    chunks: list[bytes] = []
    for item in items:
        data = item.encode()
        chunks += (_LENGTH.pack(len(data)), data)
    return b"".join(chunks)


def encode_numbers(array: np.ndarray[Any, np.dtype[Any]], datatype: str) -> bytes:
    """A fixed-size tensor on the wire, row-major."""
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def join(header: dict[str, Any], tensors: Iterable[bytes]) -> tuple[bytes, int]:
    """A response body (the JSON, then the binary tensors in output order) and the JSON's length."""
    head = orjson.dumps(header)
    return b"".join((head, *tensors)), len(head)
