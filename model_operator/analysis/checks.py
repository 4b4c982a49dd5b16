"""The canary checks: built-in SLOs on the model server's own metrics, plus user PromQL checks.

``assess`` is the pure verdict function (Argo's ``assessMetricStatus``); ``run_analysis`` asks the
provider and records every check — value, limit and query — for the status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from model_operator.analysis.base import MetricProvider, ProviderError
from model_operator.durations import parse_duration
from model_operator.rollout.types import AnalysisOutcome, format_time
from model_operator.spec import CheckResult, ModelDeploymentSpec, ModelRef, Verdict


@dataclass(frozen=True)
class Target:
    """Which series belong to the canary."""

    model: ModelRef
    track: str = "canary"

    def selector(self, extra: str = "") -> str:
        labels = f'model="{self.model.name}",version="{self.model.version}",track="{self.track}"'
        return "{" + labels + (f",{extra}" if extra else "") + "}"


def requests_query(target: Target, window: str) -> str:
    return f"sum(increase(modelserver_requests_total{target.selector()}[{window}]))"


def error_rate_query(target: Target, window: str) -> str:
    server_errors = target.selector(extra='code=~"5.."')
    errors = f"sum(rate(modelserver_requests_total{server_errors}[{window}]))"
    return f"{errors} / sum(rate(modelserver_requests_total{target.selector()}[{window}]))"


def latency_query(target: Target, window: str, quantile: float) -> str:
    buckets = f"rate(modelserver_request_duration_seconds_bucket{target.selector()}[{window}])"
    return f"histogram_quantile({quantile}, sum by (le) ({buckets}))"


def assess(value: float | None, minimum: float | None, maximum: float | None) -> Verdict:
    if value is None:
        return Verdict.INCONCLUSIVE
    if minimum is not None and value < minimum:
        return Verdict.FAIL
    if maximum is not None and value > maximum:
        return Verdict.FAIL
    return Verdict.PASS


def overall(results: list[CheckResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    for verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return Verdict.PASS


def render(query: str, spec: ModelDeploymentSpec, canary: ModelRef, stable: ModelRef | None) -> str:
    """User queries may say {{model}}, {{canary_version}}, {{stable_version}}, {{window}}."""
    values = {
        "model": canary.name,
        "canary_version": canary.version,
        "stable_version": stable.version if stable else "",
        "window": spec.analysis.window,
    }
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return query


def run_analysis(
    spec: ModelDeploymentSpec,
    canary: ModelRef,
    stable: ModelRef | None,
    provider: MetricProvider,
    now: dt.datetime,
) -> AnalysisOutcome:
    analysis = spec.analysis
    window = analysis.window
    target = Target(canary)
    stamp = format_time(now)
    results: list[CheckResult] = []

    def check(name: str, query: str, minimum: float | None, maximum: float | None, limit: str) -> CheckResult:
        try:
            value = provider.query(query)
        except ProviderError as exc:
            result = CheckResult(
                time=stamp, check=name, verdict=Verdict.ERROR, limit=limit, query=query, message=str(exc)
            )
        else:
            verdict = assess(value, minimum, maximum)
            shown = "no data" if value is None else f"{value:.4g}"
            result = CheckResult(
                time=stamp,
                check=name,
                verdict=verdict,
                value=value,
                limit=limit,
                query=query,
                message=f"{name} {shown} (limit {limit})",
            )
        results.append(result)
        return result

    volume = check(
        "requests", requests_query(target, window), analysis.min_requests, None, f">= {analysis.min_requests}"
    )
    if volume.verdict is Verdict.FAIL:  # too few requests is not a failure: it is thin evidence
        volume.verdict = Verdict.INCONCLUSIVE
        volume.message = f"only {volume.value:.0f} canary requests in {window}; need {analysis.min_requests}"
    if volume.verdict is not Verdict.PASS:
        return AnalysisOutcome(overall(results), results, now)

    slo = analysis.slo
    check("error-rate", error_rate_query(target, window), None, slo.max_error_rate, f"<= {slo.max_error_rate}")
    for quantile, limit in ((0.95, slo.max_latency_p95), (0.99, slo.max_latency_p99)):
        if limit is not None:
            name = f"latency-p{round(quantile * 100)}"
            check(name, latency_query(target, window, quantile), None, parse_duration(limit), f"<= {limit}")
    for metric in analysis.metrics:
        bounds = " ".join(p for p in (f">= {metric.min}" if metric.min is not None else "",
                                      f"<= {metric.max}" if metric.max is not None else "") if p)  # fmt: skip
        check(metric.name, render(metric.query, spec, canary, stable), metric.min, metric.max, bounds)
    return AnalysisOutcome(overall(results), results, now)
