"""The in-process PromQL evaluator against hand-made series, computed the way Prometheus 2.x does."""

from __future__ import annotations

import math

import httpx
import pytest

from model_operator.analysis.base import ProviderError
from model_operator.analysis.checks import Scope, Target, error_rate_query, latency_query, requests_query
from model_operator.spec import ModelRef
from model_server.metrics import ServerMetrics
from modelrollout.demo import promql
from modelrollout.demo.promql import bucket_quantile, extrapolated_rate, instant_value
from modelrollout.demo.scrape_provider import SampleBuffer, ScrapeProvider

CANARY = ModelRef(name="iris", version="2.0.0", uri="file:///b/", digest="sha256:" + "a" * 64)
SCOPE = Scope("demo", "iris")
TARGET = Target(SCOPE, CANARY)
SCOPE_LABELS = {"namespace": "demo", "modeldeployment": "iris"}
BASE = {**SCOPE_LABELS, "model": "iris", "version": "2.0.0", "track": "canary", "endpoint": "predict"}
T0 = 1_700_000_000.0


def counter(buffer: SampleBuffer, name: str, labels: dict[str, str], values: list[float], start: float = T0) -> None:
    for i, value in enumerate(values):
        buffer.add(start + i, name, labels, value)


def test_increase_and_rate_extrapolate_to_the_window_edges() -> None:
    points = [(10.0, 0.0), (11.0, 10.0), (12.0, 20.0), (13.0, 30.0), (14.0, 40.0)]
    # sampled 4s, 1s apart; to start 0s (and the zero point is at the first sample), to end 1s < 1.1s:
    # extrapolated over 5s → 40 * 5/4
    assert extrapolated_rate(points, 10.0, 15.0, 5.0, is_rate=False) == pytest.approx(50.0)
    assert extrapolated_rate(points, 10.0, 15.0, 5.0, is_rate=True) == pytest.approx(10.0)


def test_a_far_window_start_extrapolates_half_a_sample_interval() -> None:
    points = [(12.0, 100.0), (13.0, 110.0), (14.0, 120.0)]
    # to start 7s > 1.1s: + 0.5s; to end 1s: + 1s → 20 * 3.5/2
    assert extrapolated_rate(points, 5.0, 15.0, 10.0, is_rate=False) == pytest.approx(35.0)


def test_counter_resets_and_the_zero_point() -> None:
    points = [(10.0, 5.0), (11.0, 8.0), (12.0, 2.0), (13.0, 4.0)]
    assert extrapolated_rate(points, 10.0, 13.0, 3.0, is_rate=False) == pytest.approx(7.0)
    # 10 → 20 in 1s and the window starts 5s earlier: extrapolation stops where the counter was 0 (t=9)
    assert extrapolated_rate([(10.0, 10.0), (11.0, 20.0)], 5.0, 11.0, 6.0, is_rate=False) == pytest.approx(20.0)


def test_one_sample_is_no_rate() -> None:
    assert extrapolated_rate([(10.0, 1.0)], 5.0, 11.0, 6.0, is_rate=True) is None


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.95, [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)], 0.35),
        (0.5, [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)], 0.1),
        (0.95, [(0.1, 10.0), (math.inf, 100.0)], 0.1),  # in the +Inf bucket: the highest finite bound
        (0.5, [(0.1, 10.0), (0.2, 5.0), (math.inf, 20.0)], 0.1),  # made monotonic
        (0.5, [(0.2, 8.0), (0.1, 4.0), (math.inf, 8.0), (0.1, 0.0)], 0.1),  # unsorted, duplicates coalesced
    ],
)
def test_bucket_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert bucket_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize("buckets", [[(0.1, 0.0), (math.inf, 0.0)], [(0.1, 5.0), (0.2, 10.0)], [(math.inf, 4.0)]])
def test_bucket_quantile_without_an_answer_is_nan(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(bucket_quantile(0.95, buckets))


def analysis_buffer() -> SampleBuffer:
    """10 s of canary and stable traffic, sampled every second: canary 10 req/s with 1 error/s."""
    buffer = SampleBuffer(retention=60)
    name = "modelserver_requests_total"
    counter(buffer, name, {**BASE, "code": "200"}, [9.0 * i for i in range(11)])
    counter(buffer, name, {**BASE, "code": "500"}, [1.0 * i for i in range(11)])
    counter(buffer, name, {**BASE, "track": "stable", "version": "1.0.0", "code": "500"}, [50.0 * i for i in range(11)])
    bucket = "modelserver_request_duration_seconds_bucket"
    for le, share in (("0.01", 0.5), ("0.1", 0.9), ("0.5", 1.0), ("+Inf", 1.0)):
        counter(buffer, bucket, {**BASE, "le": le}, [10.0 * share * i for i in range(11)])
    return buffer


def test_the_analysis_queries_of_checks_py() -> None:
    buffer, at = analysis_buffer(), T0 + 10
    # window 5s holds 6 samples 1s apart ending at `at`: 50 requests, no extrapolation needed
    assert instant_value(requests_query(TARGET, "5s"), buffer, at) == pytest.approx(50.0)
    assert instant_value(error_rate_query(TARGET, "5s"), buffer, at) == pytest.approx(0.1)  # stable ignored
    # p95 of 10 req/s: rank 9.5 in (0.1, 0.5] holding 1 req/s → 0.1 + 0.4 * 0.5
    assert instant_value(latency_query(TARGET, "5s", 0.95), buffer, at) == pytest.approx(0.3)
    assert instant_value(latency_query(TARGET, "5s", 0.5), buffer, at) == pytest.approx(0.01)


def test_no_data_is_none() -> None:
    buffer, at = analysis_buffer(), T0 + 10
    other = Target(SCOPE, CANARY.model_copy(update={"version": "9.9.9"}))
    assert instant_value(requests_query(other, "5s"), buffer, at) is None
    assert instant_value(error_rate_query(TARGET, "5s"), buffer, at + 120) is None  # all samples too old
    quiet = SampleBuffer(60)
    counter(quiet, "modelserver_requests_total", {**BASE, "code": "200"}, [3.0] * 5)
    counter(quiet, "modelserver_requests_total", {**BASE, "code": "500"}, [0.0] * 5)
    assert instant_value(error_rate_query(TARGET, "4s"), quiet, T0 + 4) is None  # 0 / 0 is NaN: no data


def test_label_matchers() -> None:
    buffer, at = analysis_buffer(), T0 + 10
    query = 'sum(rate(modelserver_requests_total{track!="canary",code=~"5.."}[5s]))'
    assert instant_value(query, buffer, at) == pytest.approx(50.0)
    assert instant_value('sum(rate(modelserver_requests_total{code!~"5..|2.."}[5s]))', buffer, at) is None
    assert instant_value("sum by (track) (increase(modelserver_requests_total{track='stable'}[5s]))", buffer, at) == (
        pytest.approx(250.0)
    )


def test_more_than_one_series_is_an_error() -> None:
    with pytest.raises(ProviderError, match="2 series"):
        instant_value("sum by (track) (rate(modelserver_requests_total[5s]))", analysis_buffer(), T0 + 10)


@pytest.mark.parametrize(
    "query",
    [
        "quantile(0.5, up)",
        "sum(rate(modelserver_requests_total[1m])) * 2",
        "modelserver_requests_total[1m]",
        "sum(up) and vector(1)",
        "rate(modelserver_requests_total[5x])",
        'rate(modelserver_requests_total{code=~"("}[1m])',
        "sum(rate(modelserver_requests_total[1m]))) ",
        "rate(modelserver_requests_total)",
    ],
)
def test_unsupported_queries_say_so(query: str) -> None:
    with pytest.raises(ProviderError, match="unsupported query"):
        promql.parse(query)


def test_windows_longer_than_the_buffer_are_refused() -> None:
    with pytest.raises(ProviderError, match="longer than"):
        instant_value(requests_query(TARGET, "5m"), SampleBuffer(retention=60), T0)


def test_the_buffer_keeps_time_order_and_forgets_old_samples() -> None:
    buffer = SampleBuffer(retention=10)
    for t in (0.0, 5.0, 4.0, 12.0, 20.0):
        buffer.add(T0 + t, "m", {"a": "1"}, t)
    [(labels, points)] = buffer.select("m", [], T0 + 10, T0 + 20)
    assert labels == (("a", "1"),)
    assert points == [(T0 + 12.0, 12.0), (T0 + 20.0, 20.0)]


def test_the_scrape_provider_reads_a_model_servers_exposition() -> None:
    """The real server's metrics, scraped through httpx.MockTransport on a hand-driven clock."""
    metrics = ServerMetrics("iris", "2.0.0", "canary", "demo", "iris")
    metrics.observe_request_count_only("predict", 500)
    now = [T0]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        return httpx.Response(200, content=metrics.exposition())

    provider = ScrapeProvider(client=httpx.Client(transport=httpx.MockTransport(handler)), clock=lambda: now[0])
    provider.set_targets(["http://127.0.0.1:9999"])
    try:
        for _ in range(6):
            provider.scrape_once()
            for _ in range(10):
                metrics.observe_request("predict", 200, 0.004)
            metrics.observe_request("predict", 500, 0.2)
            now[0] += 1.0
        now[0] -= 1.0  # evaluate at the last scrape
        assert provider.scrapes == 6
        assert provider.query(requests_query(TARGET, "5s")) == pytest.approx(55.0)
        assert provider.query(error_rate_query(TARGET, "5s")) == pytest.approx(1 / 11)
        p95 = provider.query(latency_query(TARGET, "5s", 0.95))
        assert p95 is not None and 0.15 < p95 <= 0.2
        assert not provider.is_online()  # its thread was never started
    finally:
        provider.close()


# --- the shapes of compareToStable and maxInputDrift --------------------------------------------------

SELECTOR = 'model="iris",version="2.0.0",track="canary"'


def test_or_vector_zero_turns_no_errors_into_zero() -> None:
    buffer, at = analysis_buffer(), T0 + 10
    errors = f'sum(increase(modelserver_requests_total{{{SELECTOR},code=~"5.."}}[5s])) or vector(0)'
    assert instant_value(errors, buffer, at) == pytest.approx(5.0)
    none = f'sum(increase(modelserver_requests_total{{{SELECTOR},code=~"4.."}}[5s])) or vector(0)'
    assert instant_value(none, buffer, at) == 0.0


def test_vectors_by_one_label() -> None:
    buffer, now = analysis_buffer(), [T0 + 10]
    provider = ScrapeProvider(clock=lambda: now[0])
    provider.buffer = buffer
    try:
        buckets = provider.query_vector(
            f"sum by (le) (increase(modelserver_request_duration_seconds_bucket{{{SELECTOR}}}[5s]))"
        )
        assert buckets == pytest.approx({"0.01": 25.0, "0.1": 45.0, "0.5": 50.0, "+Inf": 50.0})
        assert provider.query_vector("sum by (le) (increase(nothing[5s]))") == {}
        with pytest.raises(ProviderError, match="exactly one label"):
            provider.query_vector("sum by (le, track) (increase(modelserver_request_duration_seconds_bucket[5s]))")
    finally:
        provider.close()


def test_aggregations_and_instant_selectors_with_staleness() -> None:
    buffer = SampleBuffer(retention=60)
    for feature, values in (("a", [0.1, 0.2]), ("b", [0.4, 0.3]), ("c", [0.05, 0.05])):
        counter(buffer, "modelserver_input_drift_psi", {**BASE, "feature": feature}, values)
    at = T0 + 5
    drift = f"max(modelserver_input_drift_psi{{{SELECTOR}}})"
    assert instant_value(drift, buffer, at) == pytest.approx(0.3)  # the latest sample of each series
    assert instant_value(f"min(modelserver_input_drift_psi{{{SELECTOR}}})", buffer, at) == pytest.approx(0.05)
    assert instant_value("count(modelserver_input_drift_psi)", buffer, at) == 3.0
    assert instant_value("avg(modelserver_input_drift_psi)", buffer, at) == pytest.approx(0.55 / 3)
    buffer.mark_stale(T0 + 3, [("modelserver_input_drift_psi", tuple(sorted({**BASE, "feature": "b"}.items())))])
    assert instant_value(drift, buffer, at) == pytest.approx(0.2), "a stale series is gone"
    assert instant_value(drift, buffer, T0 + 1.5) == pytest.approx(0.3), "but was there before"
    assert instant_value(drift, buffer, T0 + 400) is None, "nothing within the lookback"


def test_a_series_missing_from_a_scrape_goes_stale() -> None:
    texts = [
        b'# TYPE g gauge\ng{feature="a"} 1.0\ng{feature="b"} 2.0\n',
        b'# TYPE g gauge\ng{feature="a"} 1.5\n',
    ]
    now = [T0]
    provider = ScrapeProvider(
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=texts.pop(0)))),
        clock=lambda: now[0],
    )
    provider.set_targets(["http://127.0.0.1:9999"])
    try:
        provider.scrape_once()
        now[0] += 1
        assert provider.query("max(g)") == 2.0
        provider.scrape_once()
        assert provider.query("max(g)") == 1.5
        provider.set_targets([])
        now[0] += 1
        assert provider.query("max(g)") is None, "a target that is gone leaves no live series"
    finally:
        provider.close()
