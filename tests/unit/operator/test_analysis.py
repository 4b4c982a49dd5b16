from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import httpx
import pytest
from pydantic import ValidationError

from model_operator.analysis.base import ProviderError, ProviderUnavailable, VectorProvider
from model_operator.analysis.checks import (
    Scope,
    Target,
    assess,
    error_rate_query,
    errors_query,
    input_drift_query,
    latency_buckets_query,
    latency_query,
    predictions_query,
    render,
    requests_query,
    run_analysis,
)
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.rollout.types import AnalysisOutcome
from model_operator.spec import CheckResult, ModelDeploymentSpec, Verdict
from tests.unit.operator.machine_helpers import make_spec, model

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
SCOPE = Scope("models", "iris")


def vector(*values: str) -> dict[str, object]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, v]} for v in values]},
    }


def provider(handler: Callable[[httpx.Request], httpx.Response], retries: int = 2) -> PrometheusProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return PrometheusProvider("http://prom:9090", client, retries=retries, sleep=lambda _: None)


def test_query_values_no_data_and_nan() -> None:
    answers = {"a": vector("0.25"), "b": vector(), "c": vector("NaN")}
    p = provider(lambda r: httpx.Response(200, json=answers[r.url.params["query"]]))
    assert p.query("a") == 0.25
    assert p.query("b") is None
    assert p.query("c") is None


def test_many_series_and_bad_queries_are_errors_not_no_data() -> None:
    with pytest.raises(ProviderError, match="aggregate"):
        provider(lambda r: httpx.Response(200, json=vector("1", "2"))).query("x")
    with pytest.raises(ProviderError, match="rejected"):
        provider(lambda r: httpx.Response(400, json={"status": "error", "error": "parse error"})).query("x(")


def test_retries_with_backoff_then_unavailable() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=vector("1"))

    client = httpx.Client(transport=httpx.MockTransport(flaky))
    assert PrometheusProvider("http://p", client, retries=2, backoff=0.5, sleep=sleeps.append).query("q") == 1.0
    assert sleeps == [0.5, 1.0]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ProviderUnavailable, match="unreachable after 3 tries"):
        provider(down).query("q")
    assert not provider(down).is_online()


def test_assess_is_a_pure_verdict() -> None:
    assert assess(None, 0, 1) is Verdict.INCONCLUSIVE
    assert assess(0.5, 0, 1) is Verdict.PASS
    assert assess(1.5, 0, 1) is Verdict.FAIL
    assert assess(-1, 0, None) is Verdict.FAIL


def fake(values: Mapping[str, float | Exception | None]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        for key, value in values.items():
            if query.startswith(key):
                if isinstance(value, Exception):
                    raise value
                return httpx.Response(200, json=vector() if value is None else vector(str(value)))
        raise AssertionError(query)

    return handler


@pytest.mark.parametrize(
    ("values", "verdict", "failing"),
    [
        ({"sum(increase": 500, "sum(rate": 0.001, "histogram_quantile(0.95": 0.01}, Verdict.PASS, None),
        ({"sum(increase": 500, "sum(rate": 0.1, "histogram_quantile(0.95": 0.01}, Verdict.FAIL, "error-rate"),
        ({"sum(increase": 500, "sum(rate": 0.0, "histogram_quantile(0.95": 0.4}, Verdict.FAIL, "latency-p95"),
        ({"sum(increase": 5, "sum(rate": 0.5}, Verdict.INCONCLUSIVE, None),
        ({"sum(increase": None}, Verdict.INCONCLUSIVE, None),
        ({"sum(increase": httpx.ConnectError("down")}, Verdict.ERROR, None),
    ],
)
def test_run_analysis(values: dict[str, float | Exception | None], verdict: Verdict, failing: str | None) -> None:
    spec = make_spec("2.0.0")
    outcome = run_analysis(spec, SCOPE, spec.model, model("1.0.0"), provider(fake(values), retries=0), NOW)
    assert outcome.verdict is verdict
    assert outcome.taken_at == NOW
    if failing:
        assert [r.check for r in outcome.results if r.verdict is Verdict.FAIL] == [failing]
    assert all(r.query for r in outcome.results)


def test_custom_checks_are_rendered_and_bounded() -> None:
    spec = make_spec(
        "2.0.0",
        metrics=[{"name": "setosa-share", "query": 'share{version="{{canary_version}}"}', "min": 0.2, "max": 0.5}],
    )
    values = {"sum(increase": 500, "sum(rate": 0.0, "histogram_quantile": 0.01, 'share{version="2.0.0"}': 0.9}
    outcome = run_analysis(spec, SCOPE, spec.model, model("1.0.0"), provider(fake(values), retries=0), NOW)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.results[-1].limit == ">= 0.2 <= 0.5"


def test_a_blue_green_preview_is_judged_on_its_own_track() -> None:
    spec = make_spec("2.0.0", metrics=[{"name": "track-share", "query": 'share{track="{{track}}"}', "max": 1}])
    values = {"sum(increase": 500, "sum(rate": 0.0, "histogram_quantile": 0.01, 'share{track="preview"}': 0.5}
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["query"])
        return fake(values)(request)

    outcome = run_analysis(spec, SCOPE, spec.model, model("1.0.0"), provider(handler, retries=0), NOW, "preview")
    assert outcome.verdict is Verdict.PASS
    assert asked and all('track="preview"' in query for query in asked), asked


def test_queries_select_the_canary_series() -> None:
    target = Target(SCOPE, model("2.0.0"))
    assert 'track="canary"' in error_rate_query(target, "1m") and 'code=~"5.."' in error_rate_query(target, "1m")
    assert latency_query(target, "1m", 0.99).startswith("histogram_quantile(0.99, sum by (le)")


# --- compareToStable and the input-drift gate ----------------------------------------------------------------

CANARY, STABLE = model("2.0.0"), model("1.0.0")
C, S = Target(SCOPE, CANARY), Target(SCOPE, STABLE, "stable")


class FakeProvider:
    """Answers exact queries from dicts: numbers for ``query``, label maps for ``query_vector``."""

    name = "fake"

    def __init__(
        self, numbers: Mapping[str, float | Exception | None], vectors: dict[str, dict[str, float]] | None = None
    ) -> None:
        self.numbers, self.vectors = numbers, vectors or {}
        self.asked: list[str] = []

    def query(self, promql: str) -> float | None:
        self.asked.append(promql)
        value = self.numbers[promql]
        if isinstance(value, Exception):
            raise value
        return value

    def query_vector(self, promql: str) -> dict[str, float]:
        self.asked.append(promql)
        return self.vectors.get(promql, {})

    def is_online(self) -> bool:
        return True


class ScalarOnlyProvider(FakeProvider):
    """A MetricProvider without query_vector (the Protocol's optional part)."""

    def __getattribute__(self, name: str) -> object:
        if name == "query_vector":
            raise AttributeError(name)
        return super().__getattribute__(name)


def compare_spec(**compare: object) -> ModelDeploymentSpec:
    return make_spec("2.0.0", slo={"maxErrorRate": 1.0, "maxLatencyP95": None}, compareToStable=compare)


def traffic(
    canary: tuple[float, float] = (300, 0), stable: tuple[float, float] = (17_000, 17), window: str = "1m"
) -> dict[str, float | None]:
    """Numbers for the volume, SLO and error comparison queries: (requests, errors) per track."""
    return {
        requests_query(C, window): canary[0],
        errors_query(C, window): canary[1],
        requests_query(S, window): stable[0],
        errors_query(S, window): stable[1],
        error_rate_query(C, window): canary[1] / canary[0] if canary[0] else None,
    }


IRIS = {"setosa": 1000.0, "versicolor": 1000.0, "virginica": 1000.0}


def by_check(outcome: AnalysisOutcome) -> dict[str, CheckResult]:
    return {r.check: r for r in outcome.results}


def test_compare_to_stable_is_off_by_default() -> None:
    spec = make_spec("2.0.0")
    assert spec.analysis.compare_to_stable is None
    assert spec.analysis.max_input_drift is None
    values: dict[str, float | Exception | None] = {
        "sum(increase": 500,
        "sum(rate": 0.001,
        "histogram_quantile(0.95": 0.01,
    }
    outcome = run_analysis(spec, SCOPE, spec.model, STABLE, provider(fake(values), retries=0), NOW)
    assert [r.check for r in outcome.results] == ["requests", "error-rate", "latency-p95"]


@pytest.mark.parametrize(
    ("canary", "verdict"),
    [((300, 15), Verdict.FAIL), ((900, 0), Verdict.PASS), ((300, 0), Verdict.INCONCLUSIVE)],
)
def test_error_rate_against_stable(canary: tuple[float, float], verdict: Verdict) -> None:
    spec = compare_spec(errorRateMargin=0.004)
    fake_provider = FakeProvider(traffic(canary))
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, fake_provider, NOW)
    result = by_check(outcome)["error-rate-vs-stable"]
    assert result.verdict is verdict
    assert outcome.verdict is verdict
    assert result.value is not None
    assert result.limit == "P(error rate > stable + 0.004) < 0.95"
    assert result.query is not None
    queries = result.query.splitlines()
    assert queries == [errors_query(C, "1m"), requests_query(C, "1m"), errors_query(S, "1m"), requests_query(S, "1m")]
    assert fake_provider.asked.count(requests_query(C, "1m")) == 1, "the volume check's answer is reused"
    assert result.message is not None
    assert result.message.startswith("error-rate-vs-stable: canary")


def test_a_constant_class_canary_fails_on_prediction_drift_alone() -> None:
    """Fast, no errors, one class for everything: only the prediction comparison sees it."""
    spec = compare_spec(errorRateMargin=0.004, predictionDrift=0.2)
    vectors = {predictions_query(C, "1m"): {"setosa": 900.0}, predictions_query(S, "1m"): IRIS}
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(traffic((900, 0)), vectors), NOW)
    checks = by_check(outcome)
    assert checks["error-rate-vs-stable"].verdict is Verdict.PASS
    assert checks["prediction-drift"].verdict is Verdict.FAIL
    assert outcome.verdict is Verdict.FAIL
    drift = checks["prediction-drift"]
    assert drift.value is not None
    assert drift.value > 5
    assert drift.limit == "PSI <= 0.2"
    assert drift.query == f"{predictions_query(C, '1m')}\n{predictions_query(S, '1m')}"


def test_no_comparison_while_the_candidate_takes_all_live_traffic() -> None:
    """At 100% stable serves nothing: a comparison could only be inconclusive and would hold the rollout."""
    spec = compare_spec(errorRateMargin=0.004, predictionDrift=0.2)
    fake_provider = FakeProvider(traffic((900, 0)))
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, fake_provider, NOW, compare=False)
    assert [r.check for r in outcome.results] == ["requests", "error-rate"]
    assert outcome.verdict is Verdict.PASS
    assert not [q for q in fake_provider.asked if 'track="stable"' in q], "stable was not even asked"


@pytest.mark.parametrize(
    ("canary_classes", "verdict"),
    [
        ({"setosa": 300.0, "versicolor": 310.0, "virginica": 290.0}, Verdict.PASS),
        ({"setosa": 30.0}, Verdict.INCONCLUSIVE),  # fewer rows than minSamples
        ({}, Verdict.INCONCLUSIVE),  # no data
    ],
)
def test_prediction_drift_needs_rows(canary_classes: dict[str, float], verdict: Verdict) -> None:
    spec = compare_spec(predictionDrift=0.2)
    vectors = {predictions_query(C, "1m"): canary_classes, predictions_query(S, "1m"): IRIS}
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(traffic((900, 0)), vectors), NOW)
    assert by_check(outcome)["prediction-drift"].verdict is verdict


def test_latency_against_stable_from_buckets() -> None:
    spec = compare_spec(latencyRatio=1.5)
    stable = {"0.005": 9000.0, "0.01": 10_000.0, "0.05": 10_000.0, "+Inf": 10_000.0}
    slow = {"0.005": 0.0, "0.01": 100.0, "0.05": 900.0, "+Inf": 900.0}
    same = {"0.005": 810.0, "0.01": 900.0, "0.05": 900.0, "+Inf": 900.0}
    for canary, verdict in ((slow, Verdict.FAIL), (same, Verdict.PASS)):
        vectors = {latency_buckets_query(C, "1m"): canary, latency_buckets_query(S, "1m"): stable}
        outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(traffic((900, 0)), vectors), NOW)
        result = by_check(outcome)["latency-p95-vs-stable"]
        assert result.verdict is verdict, result.message
        assert result.limit == "p95 <= 1.5x stable at 0.95"


def test_vector_checks_need_a_vector_provider_and_never_pass_without_one() -> None:
    spec = compare_spec(errorRateMargin=0.004, latencyRatio=1.5, predictionDrift=0.2)
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, ScalarOnlyProvider(traffic((900, 0))), NOW)
    checks = by_check(outcome)
    assert checks["error-rate-vs-stable"].verdict is Verdict.PASS
    assert checks["latency-p95-vs-stable"].verdict is Verdict.ERROR
    assert checks["prediction-drift"].verdict is Verdict.ERROR
    assert "one number per label" in (checks["prediction-drift"].message or "")
    assert outcome.verdict is Verdict.ERROR


def test_comparisons_without_stable_or_with_provider_errors() -> None:
    spec = compare_spec(errorRateMargin=0.004, predictionDrift=0.2)
    outcome = run_analysis(spec, SCOPE, CANARY, None, FakeProvider(traffic((900, 0))), NOW)
    assert {r.check: r.verdict for r in outcome.results if r.check != "requests" and r.check != "error-rate"} == {
        "error-rate-vs-stable": Verdict.INCONCLUSIVE,
        "prediction-drift": Verdict.INCONCLUSIVE,
    }
    numbers: dict[str, float | Exception | None] = {**traffic((900, 0))}
    numbers[requests_query(S, "1m")] = ProviderUnavailable("down")
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(numbers), NOW)
    assert by_check(outcome)["error-rate-vs-stable"].verdict is Verdict.ERROR
    numbers[requests_query(S, "1m")] = None
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(numbers), NOW)
    assert by_check(outcome)["error-rate-vs-stable"].verdict is Verdict.INCONCLUSIVE


def test_comparisons_wait_for_the_volume_check() -> None:
    spec = compare_spec(errorRateMargin=0.004)
    outcome = run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(traffic((5, 5))), NOW)
    assert [r.check for r in outcome.results] == ["requests"]
    assert outcome.verdict is Verdict.INCONCLUSIVE


@pytest.mark.parametrize(("psi", "verdict"), [(0.05, Verdict.PASS), (0.6, Verdict.FAIL), (None, Verdict.INCONCLUSIVE)])
def test_input_drift_gate(psi: float | None, verdict: Verdict) -> None:
    spec = make_spec("2.0.0", slo={"maxErrorRate": 1.0, "maxLatencyP95": None}, maxInputDrift=0.25)
    numbers = {**traffic((900, 0)), input_drift_query(C): psi}
    result = by_check(run_analysis(spec, SCOPE, CANARY, STABLE, FakeProvider(numbers), NOW))["input-drift"]
    assert result.verdict is verdict
    assert result.limit == "<= 0.25"
    assert result.query == (
        'max(modelserver_input_drift_psi{namespace="models",modeldeployment="iris",model="iris",version="2.0.0",'
        'track="canary"})'
    )


def test_comparison_queries() -> None:
    assert errors_query(C, "1m") == (
        'sum(increase(modelserver_requests_total{namespace="models",modeldeployment="iris",model="iris",'
        'version="2.0.0",track="canary",code=~"5.."}[1m])) or vector(0)'
    )
    assert latency_buckets_query(S, "2m") == (
        'sum by (le) (increase(modelserver_request_duration_seconds_bucket{namespace="models",'
        'modeldeployment="iris",model="iris",version="1.0.0",track="stable"}[2m]))'
    )
    assert predictions_query(C, "1m").startswith("sum by (class) (increase(modelserver_predictions_total{")


def test_every_query_is_confined_to_its_model_deployment() -> None:
    """Two ModelDeployments serving the same model and version never share a series: every built-in query
    and every rendered user query names the namespace and the ModelDeployment."""
    other = Target(Scope("staging", "iris"), CANARY)
    builders = (requests_query, error_rate_query, errors_query, latency_buckets_query, predictions_query)
    for build in builders:
        mine, theirs = build(C, "1m"), build(other, "1m")
        assert 'namespace="models",modeldeployment="iris"' in mine and 'namespace="staging"' in theirs, build
    assert 'namespace="models",modeldeployment="iris"' in input_drift_query(C)
    query = 'sum(rate(x{namespace="{{namespace}}", modeldeployment="{{ name }}", track="{{track}}"}[{{window}}]))'
    spec = make_spec()
    rendered = render(query, spec, Scope("staging", "fraud"), CANARY, STABLE, "preview")
    window = spec.analysis.window
    assert rendered == f'sum(rate(x{{namespace="staging", modeldeployment="fraud", track="preview"}}[{window}]))'


def test_query_vector_keys_by_the_one_label() -> None:
    def series(labels: dict[str, str], value: str) -> dict[str, object]:
        return {"metric": labels, "value": [0, value]}

    answers = {
        "ok": {"status": "success", "data": {"resultType": "vector", "result": [
            series({"le": "0.1"}, "3"), series({"le": "+Inf"}, "4"), series({"le": "0.05"}, "NaN")]}},
        "empty": vector(),
        "two": {"status": "success", "data": {"resultType": "vector", "result": [
            series({"le": "0.1", "pod": "a"}, "3")]}},
        "scalar": {"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}},
    }  # fmt: skip
    p = provider(lambda r: httpx.Response(200, json=answers[r.url.params["query"]]))
    assert isinstance(p, VectorProvider)
    assert p.query_vector("ok") == {"0.1": 3.0, "+Inf": 4.0}
    assert p.query_vector("empty") == {}
    with pytest.raises(ProviderError, match="exactly one label"):
        p.query_vector("two")
    with pytest.raises(ProviderError, match="must return a vector"):
        p.query_vector("scalar")


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ({}, "at least one of errorRateMargin"),
        ({"errorRateMargin": 0.01, "confidence": 0.5}, "greater than 0.5"),
        ({"errorRateMargin": 0.01, "confidence": 1.0}, "less than 1"),
        ({"errorRateMargin": -0.01}, "greater than or equal to 0"),
        ({"latencyRatio": 0.9}, "greater than or equal to 1"),
        ({"predictionDrift": 0}, "greater than 0"),
    ],
)
def test_compare_to_stable_bounds(compare: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        compare_spec(**compare)
