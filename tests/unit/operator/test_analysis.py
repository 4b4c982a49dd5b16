from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest

from model_operator.analysis.base import ProviderError, ProviderUnavailable
from model_operator.analysis.checks import Target, assess, error_rate_query, latency_query, run_analysis
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.spec import Verdict
from tests.unit.operator.machine_helpers import make_spec, model

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


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


def fake(values: dict[str, float | Exception | None]) -> Callable[[httpx.Request], httpx.Response]:
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
    outcome = run_analysis(spec, spec.model, model("1.0.0"), provider(fake(values), retries=0), NOW)
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
    outcome = run_analysis(spec, spec.model, model("1.0.0"), provider(fake(values), retries=0), NOW)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.results[-1].limit == ">= 0.2 <= 0.5"


def test_queries_select_the_canary_series() -> None:
    target = Target(model("2.0.0"))
    assert 'track="canary"' in error_rate_query(target, "1m") and 'code=~"5.."' in error_rate_query(target, "1m")
    assert latency_query(target, "1m", 0.99).startswith("histogram_quantile(0.99, sum by (le)")
