"""``modelrollout demo``: the whole story as a user runs it, Ctrl-C, and the in-process metrics provider
against a real Prometheus on the same model server."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_operator.analysis.checks import Scope, Target, error_rate_query, latency_query, requests_query
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.spec import ModelRef
from model_server.bundle import ModelManifest
from modelrollout.demo.load import ROWS
from modelrollout.demo.prometheus_launcher import PrometheusServer, find_prometheus
from modelrollout.demo.promql import evaluate, instant_value
from modelrollout.demo.scrape_provider import SampleBuffer, ScrapeProvider
from tests.rig import paths
from tests.support.servers import MODELROLLOUT, REPO, ServerProcess, processes_mentioning

SCOPE = Scope("demo", "faulty")
SCOPE_ARGS = ("--namespace", SCOPE.namespace, "--model-deployment", SCOPE.name)

pytestmark = pytest.mark.integration


def run_demo(out: Path, *args: str, timeout: float = 420) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [*MODELROLLOUT, "demo", "--fast", "--out", str(out), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    return result, time.monotonic() - started


@pytest.mark.parametrize("metrics", ["scrape", "prometheus"])
def test_the_fast_demo_promotes_the_good_model_and_rolls_back_the_bad_one(
    tmp_path: Path, metrics: str, record_property: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if metrics == "prometheus" and find_prometheus() is None:
        paths.binary("prometheus")  # fails with the fix (`make rig`) when the rig has none either
        monkeypatch.setenv("RIG_DIR", str(paths.rig_dir()))  # where the demo looks after PATH
    out = tmp_path / "demo"
    result, seconds = run_demo(out, "--metrics", metrics)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert "\x1b[" not in result.stdout, "no terminal: plain lines, no escape codes"
    assert "2.0.0 StepStarted: step 1/7: setWeight 5%" in result.stdout
    assert "3.0.0 RolledBack" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    v1, v2, v3 = summary["rollouts"]
    assert (v1["version"], v1["outcome"]) == ("1.0.0", "stable")
    assert (v2["version"], v2["outcome"]) == ("2.0.0", "promoted")
    assert v2["steps_seen"] == list(range(1, v2["steps_total"] + 1)), "every step seen"
    assert v2["weights_seen"] == [5, 25, 50, 100]
    assert v2["failed_checks"] == []
    assert (v3["version"], v3["outcome"]) == ("3.0.0", "rolled_back")
    assert v3["max_weight"] < 100 and v3["failed_checks"], "never promoted; a check failed"
    rollback = summary["rollback"]
    assert rollback["latency_seconds"] is not None and 0 < rollback["latency_seconds"] < 30
    assert rollback["operator_seconds_first_failure_to_weight_zero"] is not None
    assert Path(summary["timeline_png"]).read_bytes()[:4] == b"\x89PNG"
    assert metrics in summary["metrics"].lower()
    assert processes_mentioning(str(out)) == [], "no process outlives the demo"
    record_property(
        "measured",
        f"demo --fast --metrics {metrics}: {seconds:.0f}s wall, rollback latency {rollback['latency_seconds']:.1f}s",
    )


def test_ctrl_c_stops_every_process_and_prints_one_line(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [*MODELROLLOUT, "demo", "--fast", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and demo.poll() is None:
            children = processes_mentioning(str(out), exclude=demo.pid)
            if any(" serve " in command for _, command in children):
                break
            time.sleep(0.5)
        assert demo.poll() is None, "the demo ended before a model server started"
        assert children, "the demo has children to stop"
        time.sleep(1.0)
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130
    assert stderr.strip().splitlines() == ["demo interrupted: every process it started is stopped"], stderr
    assert processes_mentioning(str(out)) == []


# --- the in-process provider against a real Prometheus ---------------------------------------------


def prometheus_binary() -> Path:
    return find_prometheus() or paths.binary("prometheus")


@pytest.fixture
def faulty_server(bundles: dict[str, Path], tmp_path: Path) -> Iterator[tuple[ServerProcess, ModelRef]]:
    bundle = bundles["iris-v1"]
    manifest = ModelManifest.model_validate_json((bundle / "model.json").read_bytes())
    args = ("--track", "canary", "--fault-error-rate", "0.2", *SCOPE_ARGS)
    server = ServerProcess(bundle.as_uri(), tmp_path / "server.log", args)
    server.start()
    ref = ModelRef(name=manifest.name, version=manifest.version, uri=bundle.as_uri() + "/", digest=manifest.digest)
    yield server, ref
    server.stop()


def steady_load(url: str, stop: threading.Event, rate: float = 30.0) -> None:
    with httpx.Client(timeout=5) as client:
        for row in itertools.cycle(ROWS):  # every class, so per-class series exist
            if stop.wait(1 / rate):
                return
            client.post(f"{url}/predict", json=row)


def raw_samples(prometheus: str, names: list[str], at: float) -> SampleBuffer:
    """Exactly the samples Prometheus stored, as a SampleBuffer."""
    buffer = SampleBuffer(retention=120)
    for name in names:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": f"{name}[60s]", "time": f"{at:.3f}"})
        for series in response.json()["data"]["result"]:
            labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
            for t, value in series["values"]:
                buffer.add(float(t), name, labels, float(value))
    return buffer


def prometheus_value(prometheus: str, query: str, at: float) -> float | None:
    data = httpx.get(f"{prometheus}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}).json()["data"]
    if not data["result"]:
        return None
    value = float(data["result"][0]["value"][1])
    return None if value != value else value


def prometheus_vector(prometheus: str, query: str, at: float) -> dict[str, float]:
    data = httpx.get(f"{prometheus}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}).json()["data"]
    return {next(iter(r["metric"].values())): float(r["value"][1]) for r in data["result"]}


def test_the_in_process_provider_agrees_with_prometheus(
    faulty_server: tuple[ServerProcess, ModelRef], tmp_path: Path
) -> None:
    server, model = faulty_server
    prometheus = PrometheusServer(prometheus_binary(), tmp_path / "prometheus").start()
    scraper = ScrapeProvider(interval=1.0).start()
    stop = threading.Event()
    load = threading.Thread(target=steady_load, args=(server.url, stop), daemon=True)
    try:
        prometheus.set_targets([server.url])
        scraper.set_targets([server.url])
        load.start()
        time.sleep(14)
        target = Target(SCOPE, model)
        queries = [requests_query(target, "10s"), error_rate_query(target, "10s")]
        queries += [latency_query(target, "10s", q) for q in (0.5, 0.95, 0.99)]
        selector = target.selector()
        # the compareToStable / maxInputDrift shapes, written out (checks.py builds them the same way)
        server_errors, client_errors = target.selector('code=~"5.."'), target.selector('code=~"4.."')
        queries += [
            f"sum(increase(modelserver_requests_total{server_errors}[10s])) or vector(0)",
            f"sum(increase(modelserver_requests_total{client_errors}[10s])) or vector(0)",  # none: the 0
            f"max(modelserver_input_drift_psi{selector})",
        ]
        vectors = [
            f"sum by (le) (increase(modelserver_request_duration_seconds_bucket{selector}[10s]))",
            f"sum by (class) (increase(modelserver_predictions_total{selector}[10s]))",
        ]
        names = ["modelserver_requests_total", "modelserver_request_duration_seconds_bucket"]
        names += ["modelserver_input_drift_psi", "modelserver_predictions_total"]

        # 1. the same samples give the same numbers: the evaluator is Prometheus' semantics (up to float
        #    seconds vs Prometheus' integer milliseconds: a 1 ms difference anywhere would be ~1e-4)
        at = round(time.time() - 0.5, 3)
        stored = raw_samples(prometheus.url, names, at)
        for query in queries:
            theirs = prometheus_value(prometheus.url, query, at)
            assert theirs is not None, query
            assert instant_value(query, stored, at) == pytest.approx(theirs, rel=1e-6), query
        for query in vectors:
            theirs_vector = prometheus_vector(prometheus.url, query, at)
            ours_vector = {labels[0][1]: value for labels, value in evaluate(query, stored, at)}
            assert len(theirs_vector) >= 2 and ours_vector == pytest.approx(theirs_vector, rel=1e-6), query

        # 2. scraping on its own clock, the provider sees what Prometheus sees
        with httpx.Client() as client:
            real = PrometheusProvider(prometheus.url, client=client)
            requests, errors = (real.query(q) for q in queries[:2])
            ours_requests, ours_errors = (scraper.query(q) for q in queries[:2])
            ours_p95, real_p95 = scraper.query(queries[3]), real.query(queries[3])
        assert requests is not None and ours_requests == pytest.approx(requests, rel=0.25)
        assert errors is not None and ours_errors == pytest.approx(errors, abs=0.08)
        assert 0.1 < errors < 0.3  # the server's 20 % fault injection
        assert real_p95 is not None and ours_p95 is not None and 0.4 < ours_p95 / real_p95 < 2.5
        assert scraper.is_online()
    finally:
        stop.set()
        load.join(10)
        scraper.close()
        prometheus.stop()
