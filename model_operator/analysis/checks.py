"""The canary checks: built-in SLOs on the model server's own metrics, the canary-vs-stable comparisons
(``compareToStable``, decided in ``statistics.py``), the input-drift gate, plus user PromQL checks.

``assess`` is the pure verdict function (Argo's ``assessMetricStatus``); ``run_analysis`` asks the
provider and records every check — value, limit and query — for the status. A comparison needs several
numbers; its ``query`` holds every query behind it, one per line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from model_operator.analysis import statistics
from model_operator.analysis.base import MetricProvider, ProviderError, VectorProvider
from model_operator.durations import parse_duration
from model_operator.rollout.types import AnalysisOutcome, format_time
from model_operator.spec import CheckResult, CompareToStable, ModelDeploymentSpec, ModelRef, Verdict


@dataclass(frozen=True)
class Scope:
    """The ModelDeployment being judged. Its model servers label every series with its namespace and name
    (``namespace``, ``modeldeployment``), so two ModelDeployments serving the same model and version — in
    two namespaces, or two teams' ``iris`` — never see each other's traffic."""

    namespace: str
    name: str


@dataclass(frozen=True)
class Target:
    """Which series belong to one track of one ModelDeployment."""

    scope: Scope
    model: ModelRef
    track: str = "canary"

    def selector(self, extra: str = "") -> str:
        labels = (
            f'namespace="{self.scope.namespace}",modeldeployment="{self.scope.name}",'
            f'model="{self.model.name}",version="{self.model.version}",track="{self.track}"'
        )
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


def errors_query(target: Target, window: str) -> str:
    """5xx responses in the window; zero (not "no data") when there were none."""
    server_errors = target.selector(extra='code=~"5.."')
    return f"sum(increase(modelserver_requests_total{server_errors}[{window}])) or vector(0)"


def latency_buckets_query(target: Target, window: str) -> str:
    """Cumulative latency bucket counts in the window, one number per ``le``."""
    buckets = f"increase(modelserver_request_duration_seconds_bucket{target.selector()}[{window}])"
    return f"sum by (le) ({buckets})"


def predictions_query(target: Target, window: str) -> str:
    """Predicted rows in the window, one number per class."""
    return f"sum by (class) (increase(modelserver_predictions_total{target.selector()}[{window}]))"


def input_drift_query(target: Target) -> str:
    """The largest per-feature PSI of live inputs against the training reference (the server's rolling
    estimate, a gauge)."""
    return f"max(modelserver_input_drift_psi{target.selector()})"


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


def render(
    query: str,
    spec: ModelDeploymentSpec,
    scope: Scope,
    canary: ModelRef,
    stable: ModelRef | None,
    track: str = "canary",
) -> str:
    """User queries may say {{namespace}} and {{name}} (the ModelDeployment's), {{model}}, {{canary_version}},
    {{stable_version}}, {{window}}, {{track}} (the candidate's: canary, or preview under BlueGreen)."""
    values = {
        "namespace": scope.namespace,
        "name": scope.name,
        "track": track,
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
    scope: Scope,
    canary: ModelRef,
    stable: ModelRef | None,
    provider: MetricProvider,
    now: dt.datetime,
    track: str = "canary",
    compare: bool = True,
) -> AnalysisOutcome:
    """``scope``: the ModelDeployment judged; every query is confined to its series.
    ``track``: the candidate's metrics label — ``canary`` (canary and shadow) or ``preview``.
    ``compare``: run ``compareToStable``; off while the candidate takes all live traffic (stable then
    serves nothing to compare with, and a comparison that can only be inconclusive would hold the rollout)."""
    analysis = spec.analysis
    window = analysis.window
    target = Target(scope, canary, track)
    stamp = format_time(now)
    results: list[CheckResult] = []

    def check(
        name: str, query: str, minimum: float | None, maximum: float | None, limit: str, unit: str = ""
    ) -> CheckResult:
        try:
            value = provider.query(query)
        except ProviderError as exc:
            result = CheckResult(
                time=stamp, check=name, verdict=Verdict.ERROR, limit=limit, query=query, message=str(exc)
            )
        else:
            verdict = assess(value, minimum, maximum)
            shown = "no data" if value is None else (f"{value * 1000:.4g}ms" if unit == "s" else f"{value:.4g}")
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
        volume.message = f"only {volume.value:.0f} {track} requests in {window}; need {analysis.min_requests}"
    if volume.verdict is not Verdict.PASS:
        return AnalysisOutcome(overall(results), results, now)

    slo = analysis.slo
    check("error-rate", error_rate_query(target, window), None, slo.max_error_rate, f"<= {slo.max_error_rate}")
    for quantile, limit in ((0.95, slo.max_latency_p95), (0.99, slo.max_latency_p99)):
        if limit is not None:
            name = f"latency-p{round(quantile * 100)}"
            check(name, latency_query(target, window, quantile), None, parse_duration(limit), f"<= {limit}", "s")
    if analysis.compare_to_stable is not None and compare:
        assert volume.value is not None  # the volume check passed
        comparisons = compare_to_stable(
            analysis.compare_to_stable, scope, canary, stable, window, volume.value, provider, track
        )
        results.extend(compared.result(stamp) for compared in comparisons)
    if analysis.max_input_drift is not None:
        drift = analysis.max_input_drift
        check("input-drift", input_drift_query(target), None, drift, f"<= {drift}")
    for metric in analysis.metrics:
        bounds = " ".join(p for p in (f">= {metric.min}" if metric.min is not None else "",
                                      f"<= {metric.max}" if metric.max is not None else "") if p)  # fmt: skip
        check(metric.name, render(metric.query, spec, scope, canary, stable, track), metric.min, metric.max, bounds)
    return AnalysisOutcome(overall(results), results, now)


@dataclass
class Compared:
    """One comparison's outcome before it is stamped into a ``CheckResult``."""

    check: str
    verdict: Verdict
    value: float | None
    limit: str
    queries: list[str]
    message: str

    def result(self, stamp: str) -> CheckResult:
        return CheckResult(
            time=stamp,
            check=self.check,
            verdict=self.verdict,
            value=self.value,
            limit=self.limit,
            query="\n".join(self.queries),
            message=f"{self.check}: {self.message}",
        )


@dataclass
class _Tracks:
    """What every comparison asks: the two tracks' series, the window, the provider; ``queries`` collects
    each query asked, for the status."""

    canary: Target
    stable: Target
    window: str
    provider: MetricProvider
    queries: list[str]

    def number(self, promql: str, known: float | None = None) -> float | None:
        self.queries.append(promql)
        return known if known is not None else self.provider.query(promql)

    def vector(self, promql: str) -> dict[str, float]:
        self.queries.append(promql)
        if not isinstance(self.provider, VectorProvider):
            raise ProviderError(f"the {self.provider.name} metric provider cannot answer with one number per label")
        return self.provider.query_vector(promql)


def _error_rates(settings: CompareToStable, tracks: _Tracks, canary_total: float) -> statistics.Comparison:
    assert settings.error_rate_margin is not None
    canary_errors = tracks.number(errors_query(tracks.canary, tracks.window))
    canary_total_ = tracks.number(requests_query(tracks.canary, tracks.window), known=canary_total)
    stable_errors = tracks.number(errors_query(tracks.stable, tracks.window))
    stable_total = tracks.number(requests_query(tracks.stable, tracks.window))
    if canary_errors is None or canary_total_ is None or stable_errors is None or stable_total is None:
        return statistics.Comparison(Verdict.INCONCLUSIVE, None, "no data for the stable or canary requests")
    return statistics.compare_error_rates(
        canary_errors, canary_total_, stable_errors, stable_total, settings.error_rate_margin, settings.confidence
    )


def _latency(settings: CompareToStable, tracks: _Tracks, canary_total: float) -> statistics.Comparison:
    assert settings.latency_ratio is not None
    canary = tracks.vector(latency_buckets_query(tracks.canary, tracks.window))
    stable = tracks.vector(latency_buckets_query(tracks.stable, tracks.window))
    return statistics.compare_latency(canary, stable, settings.latency_ratio, settings.confidence, settings.min_samples)


def _predictions(settings: CompareToStable, tracks: _Tracks, canary_total: float) -> statistics.Comparison:
    assert settings.prediction_drift is not None
    canary = tracks.vector(predictions_query(tracks.canary, tracks.window))
    stable = tracks.vector(predictions_query(tracks.stable, tracks.window))
    return statistics.compare_predictions(
        canary, stable, settings.prediction_drift, settings.confidence, settings.min_samples
    )


def compare_to_stable(
    settings: CompareToStable,
    scope: Scope,
    canary: ModelRef,
    stable: ModelRef | None,
    window: str,
    canary_total: float,
    provider: MetricProvider,
    track: str = "canary",
) -> list[Compared]:
    """The enabled canary-vs-stable comparisons, each from counts over the same ``window``.

    No data is inconclusive, a provider failure is an error; neither is ever a pass. ``canary_total`` is
    the volume check's answer to the same query, reused so both checks judge one number.
    """
    confidence = settings.confidence
    planned: list[tuple[str, str, Callable[[CompareToStable, _Tracks, float], statistics.Comparison]]] = []
    if settings.error_rate_margin is not None:
        bound = f"P(error rate > stable + {settings.error_rate_margin}) < {confidence}"
        planned.append(("error-rate-vs-stable", bound, _error_rates))
    if settings.latency_ratio is not None:
        planned.append(("latency-p95-vs-stable", f"p95 <= {settings.latency_ratio}x stable at {confidence}", _latency))
    if settings.prediction_drift is not None:
        planned.append(("prediction-drift", f"PSI <= {settings.prediction_drift}", _predictions))
    out: list[Compared] = []
    for name, limit, judge in planned:
        queries: list[str] = []
        if stable is None:
            out.append(Compared(name, Verdict.INCONCLUSIVE, None, limit, queries, "no stable track to compare with"))
            continue
        tracks = _Tracks(Target(scope, canary, track), Target(scope, stable, "stable"), window, provider, queries)
        try:
            judged = judge(settings, tracks, canary_total)
        except (ProviderError, ArithmeticError) as exc:
            out.append(Compared(name, Verdict.ERROR, None, limit, queries, str(exc)))
            continue
        out.append(Compared(name, judged.verdict, judged.value, limit, queries, judged.message))
    return out
