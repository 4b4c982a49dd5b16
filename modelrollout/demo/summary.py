"""The demo's results: ``summary.json`` (what the integration test reads) and the closing lines.

Rollback latency is measured from the outside, as a user would: from the first request the gateway
sent to the bad candidate (canary or preview track) to the first operator tick after which the HTTPRoute
gave it weight 0.
The operator's own measure (``modelrollout_rollback_duration_seconds``: first failed analysis → weight
0) is reported next to it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_operator.kube.manifests import CANDIDATE_TRACKS
from model_operator.metrics import OperatorMetrics
from modelrollout.demo.journal import Chapter, Journal
from modelrollout.demo.load import Outcome
from modelrollout.demo.settings import DemoOptions

WORST_FIRST = ("Fail", "Error", "Inconclusive", "Pass")  # as checks.overall ranks them


@dataclass(frozen=True)
class Run:
    """Everything the summary is computed from."""

    options: DemoOptions
    journal: Journal
    outcomes: list[Outcome]
    operator_metrics: OperatorMetrics
    namespace: str
    name: str
    bad_version: str
    steps_total: int
    finished: float


def _rollout(run: Run, chapter: Chapter) -> dict[str, Any]:
    ticks = [t for t in run.journal.ticks_of(chapter) if t.canary == chapter.version]
    weights: list[int] = []
    for tick in ticks:
        if tick.weight and (not weights or weights[-1] != tick.weight):
            weights.append(tick.weight)
    verdicts = [v for v in run.journal.verdicts if v.version == chapter.version]
    by_tick: dict[float, set[str]] = {}
    for verdict in verdicts:
        by_tick.setdefault(verdict.at, set()).add(verdict.verdict)
    overall = Counter(next((v for v in WORST_FIRST if v in found), "Pass") for found in by_tick.values())
    return {
        "version": chapter.version,
        "title": chapter.title,
        "outcome": chapter.outcome,
        "seconds": round((chapter.ended or run.finished) - chapter.started, 2),
        "steps_seen": sorted({t.step + 1 for t in ticks}),
        "steps_total": run.steps_total,
        "weights_seen": weights,
        "max_weight": max(weights, default=0),
        "analyses": dict(overall),
        "failed_checks": sorted({v.check for v in verdicts if v.verdict == "Fail"}),
    }


def rollback_latency(run: Run) -> tuple[float | None, float | None]:
    """(first bad canary request, weight back to 0) as monotonic times; None when it did not happen."""
    bad = (o for o in run.outcomes if o.track in CANDIDATE_TRACKS and o.version == run.bad_version)
    first = next((o.sent for o in bad), None)
    if first is None:
        return None, None
    zero = next((t.at for t in run.journal.ticks if t.at >= first and t.weight == 0), None)
    return first, zero


def build(run: Run, timeline_png: Path) -> dict[str, Any]:
    journal = run.journal
    first, zero = rollback_latency(run)
    operator_seconds = run.operator_metrics.registry.get_sample_value(
        "modelrollout_rollback_duration_seconds_sum", {"namespace": run.namespace, "name": run.name}
    )
    bad = [o for o in run.outcomes if o.version == run.bad_version]
    by_version: dict[str, dict[str, int]] = {}
    for outcome in run.outcomes:
        counts = by_version.setdefault(outcome.version, {"requests": 0, "failed": 0})
        counts["requests"] += 1
        counts["failed"] += outcome.failed
    return {
        "ok": True,
        "mode": run.options.profile.name,
        "metrics": journal.metrics,
        "duration_seconds": round(run.finished - journal.started, 2),
        "rollouts": [_rollout(run, chapter) for chapter in journal.chapters],
        "rollback": {
            "version": run.bad_version,
            "latency_seconds": None if first is None or zero is None else round(zero - first, 3),
            "first_canary_request_at_seconds": None if first is None else round(journal.since(first), 3),
            "weight_zero_at_seconds": None if zero is None else round(journal.since(zero), 3),
            "operator_seconds_first_failure_to_weight_zero": operator_seconds,
            "requests_to_bad_version": len(bad),
            "failed_requests_of_bad_version": sum(o.failed for o in bad),
        },
        "requests": {
            "total": len(run.outcomes),
            "failed": sum(o.failed for o in run.outcomes),
            "by_version": by_version,
        },
        "timeline_png": str(timeline_png),
        "out": str(run.options.out.resolve()),
    }


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")


def closing_lines(summary: dict[str, Any]) -> list[str]:
    """The few lines printed at the end, the same with and without a terminal."""
    lines = [f"demo finished in {summary['duration_seconds']:.0f}s ({summary['mode']}; metrics: {summary['metrics']})"]
    for rollout in summary["rollouts"]:
        details = []
        if rollout["weights_seen"]:
            details.append("weights " + " → ".join(f"{w}%" for w in rollout["weights_seen"]))
        if rollout["failed_checks"]:
            details.append(f"failed checks: {', '.join(rollout['failed_checks'])}")
        shown = f" ({'; '.join(details)})" if details else ""
        outcome = str(rollout["outcome"]).replace("_", " ")
        lines.append(f"  {rollout['version']}: {outcome} after {rollout['seconds']:.1f}s{shown}")
    rollback = summary["rollback"]
    if rollback["latency_seconds"] is not None:
        operator = rollback["operator_seconds_first_failure_to_weight_zero"]
        lines.append(
            f"  rollback latency: {rollback['latency_seconds']:.1f}s from the first request to {rollback['version']} "
            f"to canary weight 0 ({rollback['failed_requests_of_bad_version']} of "
            f"{rollback['requests_to_bad_version']} requests to it failed"
            + (f"; operator: {operator:.1f}s from the first failed analysis)" if operator is not None else ")")
        )
    requests = summary["requests"]
    lines.append(f"  requests: {requests['total']} sent, {requests['failed']} failed")
    lines.append(f"  timeline: {summary['timeline_png']}")
    lines.append(f"  summary:  {Path(summary['out']) / 'summary.json'}")
    return lines
