"""The model server as users run it: real ``modelrollout serve`` processes spoken to over HTTP."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_server.bundle import ModelManifest
from tests.support.servers import ServerProcess, free_port, run_cli

pytestmark = pytest.mark.integration

ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
StartServer = Callable[..., ServerProcess]


def samples(base_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(f"{base_url}/metrics").text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(base_url: str, name: str, **labels: str) -> float:
    return sum(value for found, value in samples(base_url, name) if labels.items() <= found.items())


def test_single_row_and_batch(iris: ServerProcess) -> None:
    response = httpx.post(f"{iris.url}/predict", json=ROW, headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200
    body = response.json()
    assert body["class"] == "setosa"
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert (body["model"], body["version"], body["request_id"]) == ("iris", "1.0.0", "abc-123")
    assert response.headers["x-request-id"] == "abc-123"

    virginica = {"sepal_length_cm": 6.9, "sepal_width_cm": 3.1, "petal_length_cm": 5.6, "petal_width_cm": 2.3}
    batch = httpx.post(f"{iris.url}/predict", json={"instances": [ROW, virginica]}).json()
    assert [p["class"] for p in batch["predictions"]] == ["setosa", "virginica"]
    assert len(batch["request_id"]) == 32


LONG = {"instances": [ROW] * 51}


@pytest.mark.parametrize(
    ("content", "content_type", "status", "field"),
    [
        (json.dumps({**ROW, "sepal_length_cm": "wide"}), "application/json", 422, "sepal_length_cm"),
        (json.dumps({k: v for k, v in ROW.items() if k != "sepal_width_cm"}), "application/json", 422,
         "sepal_width_cm"),
        (json.dumps({**ROW, "colour": "blue"}), "application/json", 422, "colour"),
        ('{"sepal_length_cm": NaN, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}',
         "application/json", 422, "sepal_length_cm"),
        ('{"sepal_length_cm": -Infinity, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}',
         "application/json", 422, "sepal_length_cm"),
        (json.dumps({"instances": []}), "application/json", 422, "instances"),
        (json.dumps(LONG), "application/json", 422, "instances"),
        (json.dumps({"instances": [ROW, {**ROW, "petal_width_cm": None}]}), "application/json", 422,
         "instances[1].petal_width_cm"),
        (json.dumps({"instances": [{**ROW, "sepal_length_cm": 1.7e308, "sepal_width_cm": -1.7e308}]}),
         "application/json", 422, "instances[0]"),
        ("not json", "application/json", 400, None),
        ("", "application/json", 400, None),
        ("[1, 2, 3]", "application/json", 400, None),
        (json.dumps(ROW), "text/plain", 415, None),
        (json.dumps(ROW), "application/x-www-form-urlencoded", 415, None),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(
    iris: ServerProcess, content: str, content_type: str, status: int, field: str | None
) -> None:
    response = httpx.post(f"{iris.url}/predict", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["message"]
    if field is not None:
        assert field in [d["field"] for d in body["detail"]]


def test_oversized_bodies_get_413_declared_or_streamed(iris: ServerProcess) -> None:
    huge = b'{"instances": [' + b",".join([json.dumps(ROW).encode()] * 20000) + b"]}"
    assert len(huge) > 1 << 20
    declared = httpx.post(f"{iris.url}/predict", content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert "larger than" in declared.json()["message"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    streamed = httpx.post(f"{iris.url}/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_unknown_routes_and_models_are_404(iris: ServerProcess) -> None:
    assert httpx.get(f"{iris.url}/nope").status_code == 404
    response = httpx.post(f"{iris.url}/v2/models/wine/infer", json={"inputs": []})
    assert response.status_code == 404
    assert "serves 'iris'" in response.json()["error"]


def test_open_inference_protocol_with_a_real_client(iris: ServerProcess) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=iris.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    metadata = client.get_model_metadata("iris")
    assert metadata["versions"] == ["1.0.0"]
    assert metadata["inputs"][0]["shape"] == [-1, 4]

    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.6, 2.3]], dtype=np.float64)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=False)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=False),
        triton.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="oip-1")
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("predict").tolist()]
    assert labels == ["setosa", "virginica"]
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.shape == (2, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert result.get_response()["id"] == "oip-1"

    bad = triton.InferInput("input-0", [1, 4], "BYTES")
    bad.set_data_from_numpy(np.array([[b"a", b"b", b"c", b"d"]], dtype=object), binary_data=False)
    with pytest.raises(triton.InferenceServerException, match="not numeric"):
        client.infer("iris", [bad])


def test_metrics_carry_model_version_and_track(bundles: dict[str, Path], start_server: StartServer) -> None:
    server = start_server(f"file://{bundles['iris-v2']}", "--track", "canary")
    rng = np.random.default_rng(0)
    rows = [dict(zip(ROW, map(float, r), strict=True)) for r in rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (150, 4))]
    for start in range(0, 150, 30):
        assert httpx.post(f"{server.url}/predict", json={"instances": rows[start : start + 30]}).status_code == 200
    assert httpx.post(f"{server.url}/predict", json={"bad": 1}).status_code == 422
    base = {"model": "iris", "version": "2.0.0", "track": "canary"}
    assert total(server.url, "modelserver_requests_total", code="200", endpoint="predict", **base) == 5
    assert total(server.url, "modelserver_requests_total", code="422", **base) == 1
    assert total(server.url, "modelserver_requests_total", code="500", **base) == 0
    assert total(server.url, "modelserver_request_duration_seconds_count", **base) == 6
    assert total(server.url, "modelserver_predictions_total", **base) == 150
    assert {labels["class"] for labels, _ in samples(server.url, "modelserver_predictions_total")} >= {"setosa"}
    assert total(server.url, "modelserver_prediction_score_count", **base) == 150
    assert total(server.url, "modelserver_inflight_requests", **base) == 0
    info = samples(server.url, "modelserver_model_info")
    assert info[0][0]["digest"].startswith("sha256:") and info[0][0]["engine"] == "onnx"
    # uniform inputs drift from the iris training distribution, on the petal features above all
    drift = {labels["feature"]: value for labels, value in samples(server.url, "modelserver_input_drift_psi")}
    assert set(drift) == set(ROW) and drift["petal_length_cm"] > 0.1
    buckets = [labels["le"] for labels, _ in samples(server.url, "modelserver_request_duration_seconds_bucket")]
    assert "0.0001" in buckets and "10.0" in buckets


def test_several_workers_report_one_sum(bundles: dict[str, Path], start_server: StartServer) -> None:
    server = start_server(f"file://{bundles['iris-v1']}", "--workers", "2")
    for _ in range(40):  # a new connection each time, so both workers take requests
        assert httpx.post(f"{server.url}/predict", json=ROW).status_code == 200
    assert total(server.url, "modelserver_requests_total", code="200") == 40
    assert total(server.url, "modelserver_predictions_total") == 40


def wait_for_exit(process: subprocess.Popen[bytes], timeout: float = 120) -> int:
    return process.wait(timeout)


@pytest.mark.parametrize(
    ("bundle", "args", "message"),
    [
        ("iris-v1", ("--expected-digest", "sha256:" + "0" * 64), "not the pinned"),
        ("iris-v1-joblib", (), "--trust-pickle"),
        ("missing", (), "no model.json"),
        ("tampered", (), "tampered"),
        ("iris-v3-constant", ("--engine", "onnx"), "--engine onnx"),
    ],
)
def test_bad_bundles_are_refused_and_nothing_is_served(
    bundles: dict[str, Path], tmp_path: Path, bundle: str, args: tuple[str, ...], message: str
) -> None:
    if bundle == "tampered":
        path = tmp_path / "tampered"
        shutil.copytree(bundles["iris-v1"], path)
        (path / "model.skops").write_bytes((path / "model.skops").read_bytes()[:-1] + b"!")
    else:
        path = bundles.get(bundle, tmp_path / "missing")
    port = free_port()
    result = run_cli("serve", f"file://{path}", "--port", str(port), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "nothing is served" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health/live")


def test_pickle_is_served_when_explicitly_trusted(bundles: dict[str, Path], start_server: StartServer) -> None:
    server = start_server(f"file://{bundles['iris-v1-joblib']}", "--trust-pickle")
    assert httpx.post(f"{server.url}/predict", json=ROW).json()["version"] == "1.0.0-joblib"


@pytest.fixture
def http_bundles(bundles: dict[str, Path]) -> Iterator[str]:
    """The bundles directory served over real HTTP, as an artifact store would."""
    root = next(iter(bundles.values())).parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bundle_over_http_with_pinned_digest(
    http_bundles: str, manifests: dict[str, ModelManifest], start_server: StartServer
) -> None:
    digest = manifests["iris-v2"].digest
    server = start_server(f"{http_bundles}/iris-v2/", "--expected-digest", digest, "--track", "canary")
    assert httpx.post(f"{server.url}/predict", json=ROW).json()["version"] == "2.0.0"
    refused = run_cli("serve", f"{http_bundles}/iris-v2/", "--expected-digest", manifests["iris-v1"].digest)
    assert refused.returncode == 2 and "not the pinned" in refused.stderr
    missing = run_cli("serve", f"{http_bundles}/nothing-here/")
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr


def test_graceful_shutdown_finishes_in_flight_requests(bundles: dict[str, Path], tmp_path: Path) -> None:
    server = ServerProcess(
        f"file://{bundles['iris-v1']}", tmp_path / "server.log", ("--fault-latency-ms", "1500")
    ).start()
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(httpx.post(f"{server.url}/predict", json=ROW, timeout=30).status_code)
    )
    thread.start()
    time.sleep(0.5)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert results == [200]
    assert wait_for_exit(server.process) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
    assert "TEST-ONLY FAULT INJECTION ENABLED" in server.log()
    messages = [json.loads(line)["msg"] for line in server.log().splitlines() if line.startswith("{")]
    steps = [
        "Shutting down",
        "Waiting for connections to close. (CTRL+C to force quit)",
        "Application shutdown complete.",
    ]
    assert [m for m in messages if m in steps] == steps, "drained the open connection before it stopped"


def test_fault_injection_errors_are_counted_as_5xx(bundles: dict[str, Path], start_server: StartServer) -> None:
    server = start_server(f"file://{bundles['iris-v2']}", "--fault-error-rate", "0.5", "--track", "canary")
    codes = [httpx.post(f"{server.url}/predict", json=ROW).status_code for _ in range(60)]
    assert set(codes) == {200, 500}
    assert total(server.url, "modelserver_requests_total", code="500") == codes.count(500)
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    logged = [e for e in entries if e.get("logger") == "model_server.access" and e.get("path") == "/predict"]
    # failures are always logged, successes only with --access-log: one line per injected 500, no more
    assert [e["status"] for e in logged] == [500] * codes.count(500)


def test_logs_are_json_with_request_ids(iris: ServerProcess) -> None:
    httpx.post(f"{iris.url}/predict", json={"x": 1}, headers={"X-Request-ID": "trace-me-42"})
    time.sleep(0.2)
    lines = [json.loads(line) for line in iris.log().splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == "trace-me-42" and entry.get("status") == 422 for entry in lines)
    assert all({"ts", "level", "msg"} <= entry.keys() for entry in lines)


def test_schemathesis_finds_no_server_error(iris: ServerProcess, tmp_path: Path) -> None:
    """Property-based fuzzing of every operation in the server's own OpenAPI schema."""
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")), "run", f"{iris.url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples", "60", "--workers", "1", "--seed", "20261123", "--phases", "examples,fuzzing,stateful",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and "failure" not in result.stdout.split("SUMMARY")[-1].lower()
