"""The Open Inference Protocol as its clients in the wild speak it, against a real ``modelrollout serve``.

Three independent clients: Triton's (``tritonclient.http``; binary tensors by default), KServe's
(``kserve.InferenceRESTClient`` from its own venv, see ``tests/support/kserve``; puts ``model_name`` in
the body, sends binary inputs as ``application/octet-stream``) and plain HTTP (httpx), whose binary
bodies and decoding are written here from the binary tensor extension's text, not from the server's code.
Every prediction is checked against the server's other front door, ``/predict`` with named features.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.kserve.client import KServeError, KServeWorker
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.6, 2.3]])
DTYPES: dict[str, type[np.generic]] = {
    "FP64": np.float64,
    "FP32": np.float32,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "UINT8": np.uint8,
}
HEADER = "Inference-Header-Content-Length"
TENSOR = {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS.ravel().tolist()}


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeWorker]:
    worker = KServeWorker()
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def triton(iris: ServerProcess) -> Any:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(url=iris.url.removeprefix("http://"))
    yield client
    client.close()


def reference(url: str, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities from ``/predict`` (named features, JSON): the path every client is held to."""
    instances = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
    response = httpx.post(f"{url}/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return [p["class"] for p in predictions], np.array([[p["probabilities"][c] for c in CLASSES] for p in predictions])


# ---- plain HTTP, written from the extension's text -------------------------------------------------------


def binary_request(header: dict[str, Any], *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(tensors), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def decode_response(response: httpx.Response) -> dict[str, np.ndarray | list[str]]:
    """Every output of a JSON or JSON+binary response, decoded by the extension's rules."""
    length = int(response.headers.get(HEADER, len(response.content)))
    body = json.loads(response.content[:length])
    raw, out = response.content[length:], {}
    for output in body["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[output["name"]] = output["data"]
            continue
        chunk, raw = raw[:size], raw[size:]
        if output["datatype"] == "BYTES":
            labels = []
            while chunk:
                (n,) = struct.unpack_from("<I", chunk)
                labels.append(chunk[4 : 4 + n].decode())
                chunk = chunk[4 + n :]
            out[output["name"]] = labels
        else:
            assert output["datatype"] == "FP64"
            out[output["name"]] = np.frombuffer(chunk, dtype="<f8").reshape(output["shape"])
    assert raw == b"", "bytes left after the last binary output"
    return out


# ---- the three clients as the issue met them -------------------------------------------------------------


def test_health_reads_true_in_every_client(iris: ServerProcess, kserve: KServeWorker, triton: Any) -> None:
    assert kserve.call("live", url=iris.url) is True
    assert kserve.call("ready", url=iris.url) is True
    assert kserve.call("model_ready", url=iris.url, model="iris") is True
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("iris")
    for prefix in ("", "/v2"):  # and whoever reads only `status` still finds it
        assert httpx.get(f"{iris.url}{prefix}/health/live").json() == {"status": "live", "live": True}
        assert httpx.get(f"{iris.url}{prefix}/health/ready").json() == {"status": "ready", "ready": True}
    assert "binary_tensor_data" in httpx.get(f"{iris.url}/v2").json()["extensions"]


@pytest.mark.parametrize("binary_inputs", [True, False])
@pytest.mark.parametrize("binary_outputs", [True, False, None])
def test_kserve_client_infers(
    iris: ServerProcess, kserve: KServeWorker, binary_inputs: bool, binary_outputs: bool | None
) -> None:
    """KServe's client: model_name in the body; binary inputs as octet-stream; binary outputs on request."""
    result = kserve.call(
        "infer",
        url=iris.url,
        model="iris",
        id="kserve-1",
        inputs=[{**TENSOR, "datatype": "FP32", "binary": binary_inputs}],
        parameters=None if binary_outputs is None else {"binary_data_output": binary_outputs},
    )
    labels, probabilities = reference(iris.url, ROWS.astype(np.float32))
    assert result["model_name"] == "iris" and result["id"] == "kserve-1"
    assert result["outputs"]["predict"]["data"] == labels == ["setosa", "virginica"]
    assert np.allclose(
        np.reshape(result["outputs"]["predict_proba"]["data"], (2, 3)), probabilities, rtol=0, atol=1e-12
    )
    sent_binary = result["headers"].get("inference-header-content-length") is not None
    assert sent_binary is bool(binary_outputs)
    assert result["headers"]["content-type"] == ("application/octet-stream" if binary_outputs else "application/json")


def test_kserve_client_gets_a_4xx_naming_the_field(iris: ServerProcess, kserve: KServeWorker) -> None:
    nan = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, float("nan"), 0.2]}
    with pytest.raises(KServeError, match=r"inputs\[0\]\.data: values must be finite") as caught:
        kserve.call("infer", url=iris.url, model="iris", inputs=[{**nan, "binary": True}])
    assert caught.value.status == 422
    with pytest.raises(KServeError, match="serves 'iris'") as caught:
        kserve.call("infer", url=iris.url, model="wine", inputs=[{**nan, "binary": True}])
    assert caught.value.status == 404


def test_triton_client_binary_by_default(iris: ServerProcess, triton: Any) -> None:
    """tritonclient's defaults: binary inputs, and binary outputs for every output not asked otherwise."""
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("input-0", [2, 4], "FP32")
    tensor.set_data_from_numpy(ROWS.astype(np.float32))  # binary_data=True
    labels, probabilities = reference(iris.url, ROWS.astype(np.float32))
    for outputs in (
        None,
        [
            triton_http.InferRequestedOutput("predict_proba"),
            triton_http.InferRequestedOutput("predict", binary_data=False),
        ],
    ):
        result = triton.infer("iris", [tensor], outputs=outputs, model_version="1.0.0", request_id="t-1")
        assert [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("predict")] == labels
        assert np.allclose(result.as_numpy("predict_proba"), probabilities, rtol=0, atol=1e-12)
        assert result.get_response()["id"] == "t-1"
    # per-feature tensors, some binary, some JSON, out of order
    inputs = []
    for i in (3, 0, 2, 1):
        column = triton_http.InferInput(FEATURES[i], [2], "FP64")
        column.set_data_from_numpy(ROWS[:, i].copy(), binary_data=i % 2 == 0)
        inputs.append(column)
    assert np.allclose(triton.infer("iris", inputs).as_numpy("predict_proba"), reference(iris.url, ROWS)[1], atol=1e-12)
    bad = triton_http.InferInput("input-0", [1, 4], "FP32")
    bad.set_data_from_numpy(np.array([[1, 2, 3, np.inf]], dtype=np.float32))
    with pytest.raises(triton_http.InferenceServerException, match=r"inputs\[0\]\.data: values must be finite"):
        triton.infer("iris", [bad])
    with pytest.raises(triton_http.InferenceServerException, match="classification extension is not supported"):
        triton.infer("iris", [tensor], outputs=[triton_http.InferRequestedOutput("predict", class_count=2)])


# ---- plain HTTP: the envelope and the extension's edges --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("/v2/models/iris/infer", {"model_name": "iris"}, 200, None),
        ("/v2/models/iris/infer", {"model_name": "iris", "model_version": "1.0.0"}, 200, None),
        ("/v2/models/iris/infer", {"model_name": "", "model_version": ""}, 200, None),
        ("/v2/models/iris/versions/1.0.0/infer", {"model_name": "iris", "model_version": "1.0.0"}, 200, None),
        ("/v2/models/iris/infer", {"model_name": "wine"}, 400, "model_name"),
        ("/v2/models/iris/versions/1.0.0/infer", {"model_version": "2.0.0"}, 400, "model_version"),
        ("/v2/models/iris/infer", {"model_version": "2.0.0"}, 404, None),
    ],
)
def test_model_name_and_version_in_the_body(
    iris: ServerProcess, path: str, body: dict[str, str], status: int, named: str | None
) -> None:
    response = httpx.post(f"{iris.url}{path}", json={**body, "inputs": [TENSOR]})
    assert response.status_code == status, response.text
    if named is not None:
        error = response.json()
        assert [d["field"] for d in error["detail"]] == [named]
        assert body[named] in error["error"] and ("iris" if named == "model_name" else "1.0.0") in error["error"]


@pytest.mark.parametrize("content_type", ["application/octet-stream", None, "application/json"])
def test_a_hand_made_binary_request(iris: ServerProcess, content_type: str | None) -> None:
    """JSON header + little-endian tensors, in input order; the Content-Type does not decide, the header does."""
    header = {
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_request(header, struct.pack("<4f", *ROWS[1]))
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    response = httpx.post(f"{iris.url}/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    outputs = decode_response(response)
    labels, probabilities = reference(iris.url, ROWS[1:].astype(np.float32))
    assert outputs["predict"] == labels == ["virginica"]
    assert np.allclose(outputs["predict_proba"], probabilities, rtol=0, atol=1e-12)


def rows_header(size: int, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": size}}
    return {"inputs": [{**tensor, **extra}]}


ROW_BYTES = struct.pack("<4d", *ROWS[0])


SIZE, DATA, DATATYPE = "inputs[0].parameters.binary_data_size", "inputs[0].data", "inputs[0].datatype"
NAN_ROW, INF_FP32 = struct.pack("<4d", 1, 2, float("nan"), 4), struct.pack("<4f", 1, 2, 3, float("inf"))
NO_DATA = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64"}]}
NOT_BOOL = {"name": "predict", "parameters": {"binary_data": "yes"}}


@pytest.mark.parametrize(
    ("header", "tensors", "declared", "status", "field"),
    [
        pytest.param(rows_header(32), [ROW_BYTES], "abc", 400, HEADER, id="header-not-a-number"),
        pytest.param(rows_header(32), [ROW_BYTES], "-1", 400, HEADER, id="header-negative"),
        pytest.param(rows_header(32), [ROW_BYTES], "0", 400, HEADER, id="header-zero"),
        pytest.param(rows_header(32), [ROW_BYTES], "99999", 400, HEADER, id="header-past-the-body"),
        pytest.param(rows_header(32), [ROW_BYTES], "5", 400, None, id="header-cuts-the-json"),
        pytest.param(rows_header(40), [ROW_BYTES], None, 422, SIZE, id="size-past-the-body"),
        pytest.param(rows_header(24), [ROW_BYTES[:24]], None, 422, SIZE, id="size-not-the-shape"),
        pytest.param(rows_header(-8), [], None, 422, SIZE, id="size-negative"),
        pytest.param(rows_header("32"), [ROW_BYTES], None, 422, SIZE, id="size-a-string"),
        pytest.param(rows_header(32), [ROW_BYTES, b"\0"], None, 400, "inputs", id="bytes-left-over"),
        pytest.param(rows_header(32, data=[1, 2, 3, 4]), [ROW_BYTES], None, 422, DATA, id="data-and-binary"),
        pytest.param(NO_DATA, [], None, 422, DATA, id="no-data"),
        pytest.param(rows_header(32), [NAN_ROW], None, 422, DATA, id="nan"),
        pytest.param(rows_header(16, datatype="FP32"), [INF_FP32], None, 422, DATA, id="inf-fp32"),
        pytest.param(rows_header(6, datatype="FP16"), [ROW_BYTES[:6]], None, 422, SIZE, id="fp16-short"),
        pytest.param(rows_header(20, datatype="BYTES"), [b"\x01\0\0\0a" * 4], None, 422, DATATYPE, id="bytes"),
        pytest.param(rows_header(4, datatype="BOOL"), [b"\1\0\1\0"], None, 422, DATATYPE, id="bool"),
        pytest.param(
            {**rows_header(32), "outputs": [NOT_BOOL]}, [ROW_BYTES], None, 422, "outputs[0].parameters.binary_data",
            id="binary-data-not-bool",
        ),
        pytest.param(
            {**rows_header(32), "parameters": {"binary_data_output": 1}}, [ROW_BYTES], None, 422,
            "parameters.binary_data_output", id="binary-output-not-bool",
        ),
    ],
)  # fmt: skip
def test_binary_mistakes_are_a_4xx_naming_the_field(
    iris: ServerProcess,
    header: dict[str, Any],
    tensors: list[bytes],
    declared: str | None,
    status: int,
    field: str | None,
) -> None:
    body, headers = binary_request(header, *tensors)
    if declared is not None:
        headers[HEADER] = declared
    response = httpx.post(f"{iris.url}/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] and error["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert field in [d["field"] for d in error["detail"]], error


def test_other_media_types_are_415(iris: ServerProcess) -> None:
    response = httpx.post(f"{iris.url}/v2/models/iris/infer", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/json or application/octet-stream" in response.json()["error"]


# ---- every client, any valid data: the same predictions as the JSON path ---------------------------------


@dataclass
class Case:
    client: str  # "triton", "kserve" or "httpx"
    datatype: str
    rows: np.ndarray  # already in the datatype, so every path sees the very same numbers
    per_feature: list[tuple[int, bool]] | None  # (feature index, [N, 1] rather than [N]) in sending order
    binary_inputs: list[bool]
    outputs: list[tuple[str, bool | None]] | None
    binary_output_default: bool | None

    def tensors(self) -> list[dict[str, Any]]:
        if self.per_feature is None:
            specs = [("input-0", list(self.rows.shape), self.rows)]
        else:
            specs = [
                (FEATURES[i], [len(self.rows), 1] if column else [len(self.rows)], self.rows[:, i])
                for i, column in self.per_feature
            ]
        return [
            {"name": name, "shape": shape, "datatype": self.datatype, "values": values, "binary": binary}
            for (name, shape, values), binary in zip(specs, self.binary_inputs, strict=True)
        ]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    datatype = draw(st.sampled_from(sorted(DTYPES)))
    n = draw(st.integers(1, 8))
    if datatype.startswith("FP"):
        elements = st.floats(-60, 60, allow_nan=False, allow_infinity=False)
    else:
        elements = st.integers(0, 12)
    values = draw(st.lists(elements, min_size=4 * n, max_size=4 * n))
    rows = np.array(values).astype(DTYPES[datatype]).reshape(n, 4)
    per_feature = None
    if draw(st.booleans()):
        order = draw(st.permutations(range(4)))
        per_feature = [(i, draw(st.booleans())) for i in order]
    client = draw(st.sampled_from(["triton", "kserve", "httpx"]))
    count = 1 if per_feature is None else 4
    binary_inputs = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    if client == "httpx":
        binary_inputs = [False] * count  # plain HTTP sends JSON; its binary bodies have their own tests above
    if client == "kserve" and datatype == "FP16":
        binary_inputs = [True] * count  # KServe's client refuses FP16 as JSON
    outputs = draw(
        st.none()
        | st.lists(
            st.tuples(st.sampled_from(["predict", "predict_proba"]), st.none() | st.booleans()),
            min_size=1,
            max_size=2,
            unique_by=lambda o: o[0],
        )
    )
    return Case(client, datatype, rows, per_feature, binary_inputs, outputs, draw(st.none() | st.booleans()))


def infer_with_triton(client: Any, case: Case) -> dict[str, Any]:
    import tritonclient.http as triton_http

    inputs = []
    for spec in case.tensors():
        tensor = triton_http.InferInput(spec["name"], spec["shape"], case.datatype)
        tensor.set_data_from_numpy(
            np.ascontiguousarray(spec["values"]).reshape(spec["shape"]), binary_data=spec["binary"]
        )
        inputs.append(tensor)
    outputs = None
    if case.outputs is not None:  # tritonclient always sets binary_data on a requested output; None means its default
        outputs = [
            triton_http.InferRequestedOutput(name, binary_data=binary is not False) for name, binary in case.outputs
        ]
    # binary_data_output is tritonclient's to set (True when no output is named): it refuses it as a parameter
    result = client.infer("iris", inputs, outputs=outputs)
    names = [o["name"] for o in result.get_response()["outputs"]]
    return {name: result.as_numpy(name) for name in names}


def infer_with_kserve(worker: KServeWorker, url: str, case: Case) -> dict[str, Any]:
    inputs = [
        {"name": s["name"], "shape": s["shape"], "datatype": case.datatype, "data": s["values"].ravel().tolist()}
        | {"binary": s["binary"]}
        for s in case.tensors()
    ]
    outputs = None if case.outputs is None else [{"name": n, "binary": b} for n, b in case.outputs]
    parameters = None if case.binary_output_default is None else {"binary_data_output": case.binary_output_default}
    result = worker.call("infer", url=url, model="iris", inputs=inputs, outputs=outputs, parameters=parameters)
    return {name: output["data"] for name, output in result["outputs"].items()}


def infer_with_httpx(url: str, case: Case) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": s["name"], "shape": s["shape"], "datatype": case.datatype, "data": s["values"].ravel().tolist()}
            for s in case.tensors()
        ]
    }
    if case.outputs is not None:
        body["outputs"] = [
            {"name": name, **({} if binary is None else {"parameters": {"binary_data": binary}})}
            for name, binary in case.outputs
        ]
    if case.binary_output_default is not None:
        body["parameters"] = {"binary_data_output": case.binary_output_default}
    response = httpx.post(f"{url}/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    return decode_response(response)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_every_client_request_for_valid_data_gets_the_json_paths_predictions(
    iris: ServerProcess, kserve: KServeWorker, triton: Any, case: Case
) -> None:
    event(f"{case.client}, {'binary' if any(case.binary_inputs) else 'JSON'} inputs")
    if case.client == "triton":
        outputs = infer_with_triton(triton, case)
    elif case.client == "kserve":
        outputs = infer_with_kserve(kserve, iris.url, case)
    else:
        outputs = infer_with_httpx(iris.url, case)
    wanted = ["predict", "predict_proba"] if case.outputs is None else [name for name, _ in case.outputs]
    assert sorted(outputs) == sorted(wanted)
    labels, probabilities = reference(iris.url, case.rows.astype(np.float64))
    if "predict" in outputs:
        got = [x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(outputs["predict"])]
        assert got == labels
    if "predict_proba" in outputs:
        got_probabilities = np.asarray(outputs["predict_proba"], dtype=np.float64).reshape(probabilities.shape)
        assert np.allclose(got_probabilities, probabilities, rtol=0, atol=1e-12)
