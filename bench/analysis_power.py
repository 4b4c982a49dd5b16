"""Statistical power of the canary analysis: canary-vs-stable statistics against the plain threshold.

Run it with ``make bench-analysis`` (``.venv/bin/python -m bench.analysis_power``). Seeded, so every run
writes the same numbers. Method:

1. Traffic is simulated per analysis interval (30 s): the gateway sends ``weight`` % of ``rps`` to the
   canary and the rest to stable; each track's successes and 5xx errors in the interval are independent
   Poisson counts (Poisson arrivals, each request erring with the track's probability). Common random
   numbers: interval ``i`` of run ``r`` draws from a generator seeded with ``(seed, r, i)``, so the two
   methods see the same traffic for as long as their rollouts are at the same weight.
2. Every interval the operator's own code runs, imported, not re-implemented: ``analysis_due`` and
   ``run_analysis`` (over a provider that answers the operator's PromQL from the simulated counts of the
   last ``window``), then the state machine ``decide``. So the statistics method is decided by
   ``statistics.compare_error_rates`` and the threshold method by ``checks.assess``, exactly as in the
   operator; rollback means ``failureLimit`` (2) failed analyses in a row, promotion means every step of
   the default strategy (5 %, pause, 25 %, pause, 50 %, pause, 100 %) passed.
3. Methods, on otherwise identical specs (interval 30 s, the same window, failureLimit 2, minRequests 20,
   inconclusiveLimit 10, onNoData pause):
   - ``threshold``: ``slo.maxErrorRate: 0.01`` on the canary alone (the default SLO check);
   - ``statistics``: ``compareToStable: {errorRateMargin, confidence}`` with ``maxErrorRate: 1``, so only
     the comparison judges errors.
4. Scenarios: a canary erring on 5 % of requests against a stable at 0.1 % (bad), identical versions at
   0.1 % (same), and a canary at 1 % against 0.1 % (subtle: ten times worse, under the threshold's
   1 %), at 100 and at 20 requests/s. A rollout ends rolled back, promoted, or still held when the
   simulated time (``--horizon`` intervals) runs out.

Writes ``bench/results/analysis-power-latest.json`` and the table between the markers in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics as pystats
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_operator.analysis.checks import (
    Scope,
    Target,
    assess,
    error_rate_query,
    errors_query,
    requests_query,
    run_analysis,
)
from model_operator.analysis.statistics import compare_error_rates
from model_operator.durations import parse_duration
from model_operator.rollout.machine import analysis_due, decide
from model_operator.rollout.types import Observation
from model_operator.spec import ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, Phase

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
START, END = "<!-- analysis-power:start -->", "<!-- analysis-power:end -->"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STABLE_ERRORS = 0.001

STABLE = ModelRef(name="iris", version="1.0.0", uri="http://models/iris-1/", digest="sha256:" + "1" * 64)
CANARY = ModelRef(name="iris", version="2.0.0", uri="http://models/iris-2/", digest="sha256:" + "2" * 64)
SCOPE = Scope("models", "iris")


def make_spec(method: str, model: ModelRef, window: str, margin: float, confidence: float) -> ModelDeploymentSpec:
    analysis: dict[str, Any] = {
        "interval": "30s",
        "window": window,
        "failureLimit": 2,
        "minRequests": 20,
        "inconclusiveLimit": 10,
        "onNoData": "pause",
        "slo": {"maxErrorRate": 0.01, "maxLatencyP95": None},
    }
    if method == "statistics":
        analysis["slo"]["maxErrorRate"] = 1.0
        analysis["compareToStable"] = {"errorRateMargin": margin, "confidence": confidence}
    return ModelDeploymentSpec.model_validate(
        {"model": model.wire(), "image": "server@sha256:" + "f" * 64, "analysis": analysis}
    )


class SimulatedPrometheus:
    """Answers the operator's queries from the simulated counts of the last window (one number each)."""

    name = "simulated"

    def __init__(self, window: str) -> None:
        self.window = window
        self.answers: dict[str, float | None] = {}

    def load(self, canary: tuple[float, float], stable: tuple[float, float]) -> None:
        (c_ok, c_err), (s_ok, s_err) = canary, stable
        c, s, w = Target(SCOPE, CANARY), Target(SCOPE, STABLE, "stable"), self.window
        c_total = c_ok + c_err
        self.answers = {
            requests_query(c, w): c_total,
            errors_query(c, w): c_err,
            requests_query(s, w): s_ok + s_err,
            errors_query(s, w): s_err,
            error_rate_query(c, w): c_err / c_total if c_total else None,
        }

    def query(self, promql: str) -> float | None:
        return self.answers[promql]

    def is_online(self) -> bool:
        return True


@dataclass
class Rollout:
    outcome: str  # RolledBack | Succeeded | held
    intervals: int  # analysis intervals from the canary's first traffic to the outcome (or the horizon)
    analyses: int
    verdicts: Counter[str] = field(default_factory=Counter)


def simulate(
    method: str,
    run: int,
    rps: float,
    canary_errors: float,
    window: str,
    margin: float,
    confidence: float,
    horizon: int,
    seed: int,
) -> Rollout:
    spec_v1 = make_spec(method, STABLE, window, margin, confidence)
    spec = make_spec(method, CANARY, window, margin, confidence)
    interval = parse_duration(spec.analysis.interval)
    slots = max(1, round(parse_duration(window) / interval))
    prometheus = SimulatedPrometheus(window)

    def traffic(key: int, weight: int) -> tuple[float, float, float, float]:
        """One interval at ``weight``: canary ok, canary errors, stable ok, stable errors (Poisson)."""
        rng = np.random.default_rng([seed, run, key])  # common random numbers per run and interval
        canary_rate, stable_rate = rps * interval * weight / 100, rps * interval * (100 - weight) / 100
        return (
            float(rng.poisson(canary_rate * (1 - canary_errors))),
            float(rng.poisson(canary_rate * canary_errors)),
            float(rng.poisson(stable_rate * (1 - STABLE_ERRORS))),
            float(rng.poisson(stable_rate * STABLE_ERRORS)),
        )

    # stable served everything before the canary arrived, so the first windows hold a full window of it
    history = [traffic(horizon + 1 + i, 0) for i in range(slots)]
    now = T0
    status = ModelDeploymentStatus()
    for _ in range(2):  # v1 becomes stable
        obs = Observation(1, STABLE.digest, 0, canary_serving=None)
        _, status = decide(spec_v1, status, obs, now)
    verdicts: Counter[str] = Counter()
    analyses = 0
    first_traffic: int | None = None
    for tick in range(horizon + 1):
        outcome = None
        if status.canary is not None and analysis_due(spec, status, now):
            recent = np.sum(history[-slots:], axis=0)
            prometheus.load((recent[0], recent[1]), (recent[2], recent[3]))
            outcome = run_analysis(spec, SCOPE, status.canary, status.stable, prometheus, now)
            judged = {r.check for r in outcome.results}
            # past the volume check, errors were judged by compare_error_rates (statistics) or assess (threshold)
            assert "requests" in judged, judged
            assert len(judged) == 1 or ("error-rate-vs-stable" if method == "statistics" else "error-rate") in judged
            verdicts[outcome.verdict.value] += 1
            analyses += 1
        serving = status.stable.digest if status.stable else None
        obs = Observation(2, serving, status.canary_weight, analysis=outcome, canary_serving=CANARY.digest)
        _, status = decide(spec, status, obs, now)
        # The machine reads only the newest result of status.analysis (the step's last verdict); keeping the
        # older ones would only make its deep copy of the status slower.
        status.analysis = status.analysis[-1:]
        elapsed = tick - first_traffic if first_traffic is not None else 0
        if status.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK):
            return Rollout("RolledBack", elapsed, analyses, verdicts)
        if status.phase is Phase.SUCCEEDED and status.stable is not None and status.stable.digest == CANARY.digest:
            return Rollout("Succeeded", elapsed, analyses, verdicts)
        weight = status.canary_weight
        if weight > 0 and first_traffic is None:
            first_traffic = tick
        history.append(traffic(tick, weight))  # traffic in [now, now + interval) at the weight just decided
        now += dt.timedelta(seconds=interval)
    return Rollout("held", horizon - (first_traffic or 0), analyses, verdicts)


@dataclass(frozen=True)
class Scenario:
    key: str
    rps: float
    canary_errors: float
    runs: int
    what: str


def summarize(rollouts: list[Rollout], interval: float) -> dict[str, Any]:
    n = len(rollouts)
    back = [r.intervals for r in rollouts if r.outcome == "RolledBack"]
    promoted = [r.intervals for r in rollouts if r.outcome == "Succeeded"]
    verdicts: Counter[str] = Counter()
    for r in rollouts:
        verdicts.update(r.verdicts)
    total_verdicts = sum(verdicts.values()) or 1

    def quantiles(values: list[int]) -> dict[str, float] | None:
        if not values:
            return None
        q = np.percentile(values, [50, 90, 99])
        return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(max(values))}

    return {
        "runs": n,
        "rolled_back": len(back) / n,
        "rolled_back_within_2_intervals": sum(1 for t in back if t <= 2) / n,
        "promoted": len(promoted) / n,
        "held": (n - len(back) - len(promoted)) / n,
        "rollback_intervals": quantiles(back),
        "rollback_seconds_mean": pystats.fmean(back) * interval if back else None,
        "rollback_interval_histogram": dict(sorted(Counter(back).items())),
        "promotion_intervals": quantiles(promoted),
        "verdict_shares": {k: v / total_verdicts for k, v in sorted(verdicts.items())},
        "analyses_mean": pystats.fmean(r.analyses for r in rollouts),
    }


def wilson_upper(successes: int, n: int, z: float = 1.96) -> float:
    """Upper end of the 95 % Wilson interval of a proportion (for "< 1 %" claims from finitely many runs)."""
    if n == 0:
        return 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return float((centre + spread) / (1 + z * z / n))


def wilson_lower(successes: int, n: int, z: float = 1.96) -> float:
    return 1.0 - wilson_upper(n - successes, n, z)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--runs-bad", type=int, default=3000, help="rollouts of the bad canary at 100 req/s")
    parser.add_argument("--runs", type=int, default=1000, help="rollouts of the other scenarios at 100 req/s")
    parser.add_argument("--runs-low", type=int, default=300, help="rollouts per scenario at 20 req/s")
    parser.add_argument("--horizon", type=int, default=40, help="simulated analysis intervals per rollout")
    parser.add_argument("--window", default="3m", help="analysis.window of both methods")
    parser.add_argument("--margin", type=float, default=0.004, help="compareToStable.errorRateMargin")
    parser.add_argument("--confidence", type=float, default=0.95, help="compareToStable.confidence")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results and README alone")
    args = parser.parse_args(argv)

    scenarios = [
        Scenario("bad@100", 100, 0.05, args.runs_bad, "canary 5 % errors vs stable 0.1 %, 100 req/s"),
        Scenario("same@100", 100, STABLE_ERRORS, args.runs, "identical versions (0.1 %), 100 req/s"),
        Scenario("subtle@100", 100, 0.01, args.runs_low, "canary 1 % vs stable 0.1 %, 100 req/s"),
        Scenario("bad@20", 20, 0.05, args.runs_low, "canary 5 % vs stable 0.1 %, 20 req/s"),
        Scenario("same@20", 20, STABLE_ERRORS, args.runs_low, "identical versions (0.1 %), 20 req/s"),
        Scenario("subtle@20", 20, 0.01, args.runs_low, "canary 1 % vs stable 0.1 %, 20 req/s"),
    ]
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for scenario in scenarios:
        results[scenario.key] = {
            "what": scenario.what,
            "rps": scenario.rps,
            "canary_error_rate": scenario.canary_errors,
        }
        for method in ("statistics", "threshold"):
            rollouts = [
                simulate(
                    method,
                    run,
                    scenario.rps,
                    scenario.canary_errors,
                    args.window,
                    args.margin,
                    args.confidence,
                    args.horizon,
                    args.seed,
                )
                for run in range(scenario.runs)
            ]
            summary = summarize(rollouts, 30.0)
            results[scenario.key][method] = summary
            print(
                f"{scenario.key:11} {method:10} rolled back {summary['rolled_back']:7.2%} "
                f"(≤2 intervals {summary['rolled_back_within_2_intervals']:7.2%}) "
                f"promoted {summary['promoted']:7.2%} held {summary['held']:7.2%}  "
                f"rollback p50/p90/p99 {summary['rollback_intervals']}",
                flush=True,
            )
    runtime = time.perf_counter() - started
    bad = results["bad@100"]["statistics"]
    same = results["same@100"]["statistics"]
    n_bad, n_same = bad["runs"], same["runs"]
    claims = {
        "bad@100 caught within 2 intervals >= 99 %": bad["rolled_back_within_2_intervals"] >= 0.99,
        "bad@100 caught within 2 intervals, 95 % lower bound": wilson_lower(
            round(bad["rolled_back_within_2_intervals"] * n_bad), n_bad
        ),
        "same@100 rolled back < 1 %": same["rolled_back"] < 0.01,
        "same@100 rolled back, 95 % upper bound": wilson_upper(round(same["rolled_back"] * n_same), n_same),
        "same@20 statistics never promotes on thin evidence": results["same@20"]["statistics"]["promoted"] == 0.0,
    }
    report = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.analysis_power", *(argv or sys.argv[1:])]),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "seed": args.seed,
        "settings": {
            "interval": "30s",
            "window": args.window,
            "failureLimit": 2,
            "minRequests": 20,
            "inconclusiveLimit": 10,
            "onNoData": "pause",
            "steps": "setWeight 5, pause 30s, 25, pause 30s, 50, pause 30s, 100 (the default)",
            "statistics": {"errorRateMargin": args.margin, "confidence": args.confidence, "slo.maxErrorRate": 1.0},
            "threshold": {"slo.maxErrorRate": 0.01},
            "stable_error_rate": STABLE_ERRORS,
            "horizon_intervals": args.horizon,
        },
        "decision_functions": {
            "statistics": f"{compare_error_rates.__module__}.{compare_error_rates.__qualname__}",
            "threshold": f"{assess.__module__}.{assess.__qualname__}",
            "rollout": f"{decide.__module__}.{decide.__qualname__}",
        },
        "claims": claims,
        "scenarios": results,
        "runtime_seconds": round(runtime, 1),
    }
    print(json.dumps(claims, indent=2))
    print(f"runtime {runtime:.1f} s")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "analysis-power-latest.json").write_text(json.dumps(report, indent=2) + "\n")
        write_readme(report)
    return 0


def pct(value: float) -> str:
    return f"{value:.1%}"


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Run {report['generated']}, seed {report['seed']}, {report['runtime_seconds']} s. interval 30 s, window "
        f"{s['window']}, failureLimit 2, minRequests 20, default steps, {s['horizon_intervals']} intervals "
        f"simulated per rollout. statistics = `compareToStable: {{errorRateMargin: "
        f"{s['statistics']['errorRateMargin']}, confidence: {s['statistics']['confidence']}}}`; "
        "threshold = `slo.maxErrorRate: 0.01`. Stable errs on 0.1 %.",
        "",
        "| scenario | method | rolled back | within 2 intervals | promoted | held | rollback after, intervals "
        "(p50 · p90 · max) | promoted after, intervals (p50 · p90) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, scenario in report["scenarios"].items():
        for method in ("statistics", "threshold"):
            r = scenario[method]
            q = r["rollback_intervals"]
            timing = f"{q['p50']:.0f} · {q['p90']:.0f} · {q['max']:.0f}" if q else "—"
            p = r["promotion_intervals"]
            promoted = f"{p['p50']:.0f} · {p['p90']:.0f}" if p else "—"
            lines.append(
                f"| {key}: {scenario['what']} ({r['runs']} runs) | {method} | {pct(r['rolled_back'])} | "
                f"{pct(r['rolled_back_within_2_intervals'])} | {pct(r['promoted'])} | {pct(r['held'])} | {timing} | "
                f"{promoted} |"
            )
    claims = report["claims"]
    low = report["scenarios"]["bad@20"]
    for method in ("statistics", "threshold"):
        runs = low[method]["runs"]
        spread = ", ".join(f"{k}: {v / runs:.1%}" for k, v in low[method]["rollback_interval_histogram"].items())
        lines += [
            "",
            f"Detection time of the bad canary at 20 req/s, {method} (intervals after first traffic: share): {spread}.",
        ]
    lines += [
        "",
        "Claims (statistics method): bad canary at 100 req/s rolled back within 2 intervals in "
        f"{pct(report['scenarios']['bad@100']['statistics']['rolled_back_within_2_intervals'])} of runs "
        f"(95 % lower bound {pct(claims['bad@100 caught within 2 intervals, 95 % lower bound'])}); identical "
        f"versions rolled back in {pct(report['scenarios']['same@100']['statistics']['rolled_back'])} "
        f"(95 % upper bound {pct(claims['same@100 rolled back, 95 % upper bound'])}).",
    ]
    return "\n".join(lines)


def write_readme(report: dict[str, Any]) -> None:
    text = README.read_text()
    block = f"{START}\n{table(report)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
