"""The summary, the timeline PNG and the plain progress lines, from a hand-made run."""

from __future__ import annotations

import io
import json
from pathlib import Path

from model_operator.metrics import OperatorMetrics
from modelrollout.demo import summary as summaries
from modelrollout.demo.journal import Chapter, Happening, Journal, Tick, Verdict
from modelrollout.demo.load import Outcome, quantile
from modelrollout.demo.settings import DemoOptions
from modelrollout.demo.timeline import client_series, write_png
from modelrollout.demo.view import PlainView, render

START = 1000.0


def made_up_run(out: Path) -> summaries.Run:
    journal = Journal(started=START, metrics="fake metrics")
    journal.chapters = [
        Chapter("2.0.0 canary", "2.0.0", START + 1, START + 10, "promoted"),
        Chapter("3.0.0 canary", "3.0.0", START + 10, START + 20, "rolled_back"),
    ]
    weights = [(2, 5, 0), (4, 25, 2), (6, 50, 4), (8, 100, 6), (10, 0, 0)]
    journal.ticks = [Tick(START + t, "Progressing", w, step, "2.0.0", "1.0.0") for t, w, step in weights]
    journal.ticks += [
        Tick(START + 11, "Progressing", 5, 0, "3.0.0", "2.0.0"),
        Tick(START + 15, "RolledBack", 0, 0, "3.0.0", "2.0.0"),
    ]
    for at, verdict in ((3, "Inconclusive"), (5, "Pass")):
        journal.verdicts.append(Verdict(START + at, "2.0.0", "requests", verdict, 9.0, ">= 5", None))
    journal.verdicts += [
        Verdict(START + 14, "3.0.0", "requests", "Pass", 12.0, ">= 5", None),
        Verdict(START + 14, "3.0.0", "error-rate", "Fail", 0.3, "<= 0.02", "error-rate 0.3"),
        Verdict(START + 14, "3.0.0", "latency-p95", "Fail", 0.4, "<= 250ms", None),
    ]
    journal.events.append(Happening(START + 15, "3.0.0", "RolledBack", "stable takes all traffic", True))
    outcomes = [Outcome(START + 2 + i * 0.1, "stable", "1.0.0", 200, 0.004) for i in range(50)]
    outcomes += [Outcome(START + 12 + i * 0.5, "canary", "3.0.0", 500 if i % 3 else 200, 0.3) for i in range(6)]
    outcomes.sort(key=lambda o: o.sent)
    metrics = OperatorMetrics()
    metrics.rollback_seconds.labels("demo", "iris").observe(1.5)
    return summaries.Run(DemoOptions(out=out, fast=True), journal, outcomes, metrics, "demo", "iris", "3.0.0", 7,
                         finished=START + 20)  # fmt: skip


def test_summary_measures_the_rollback_from_the_first_bad_request(tmp_path: Path) -> None:
    run = made_up_run(tmp_path)
    summary = summaries.build(run, tmp_path / "timeline.png")
    good, bad = summary["rollouts"]
    assert good["weights_seen"] == [5, 25, 50, 100] and good["steps_seen"] == [1, 3, 5, 7]
    assert good["analyses"] == {"Inconclusive": 1, "Pass": 1}
    assert bad["outcome"] == "rolled_back" and bad["failed_checks"] == ["error-rate", "latency-p95"]
    assert bad["analyses"] == {"Fail": 1}
    assert summary["rollback"]["latency_seconds"] == 3.0  # first bad request at 12 s, weight 0 at 15 s
    assert summary["rollback"]["operator_seconds_first_failure_to_weight_zero"] == 1.5
    assert summary["rollback"]["failed_requests_of_bad_version"] == 4
    summaries.write_json(summary, tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text())["mode"] == "fast"
    lines = summaries.closing_lines(summary)
    assert any("rollback latency: 3.0s" in line for line in lines)
    assert any("3.0.0: rolled back" in line for line in lines)


def test_timeline_png(tmp_path: Path) -> None:
    run = made_up_run(tmp_path)
    path = write_png(tmp_path / "timeline.png", run)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_client_series_ends_with_the_tracks_traffic(tmp_path: Path) -> None:
    run = made_up_run(tmp_path)
    xs, errors, p95s = client_series(run.outcomes, "canary", START, START + 20)
    shown = [x for x, e in zip(xs, errors, strict=True) if e == e]  # not NaN
    assert shown == [12, 13, 14, 15]
    assert [p for p in p95s if p == p] == [300.0] * 4
    assert quantile([0.1, 0.2, 0.3, 0.4], 0.5) == 0.2 and quantile([], 0.9) is None


def test_plain_view_prints_each_thing_once(tmp_path: Path) -> None:
    run = made_up_run(tmp_path)
    stream = io.StringIO()
    view = PlainView(stream)
    with view:
        view.update(run.journal, {})
        view.update(run.journal, {})
    text = stream.getvalue()
    assert text.count("RolledBack: stable takes all traffic") == 1
    assert "3.0.0 analysis Fail: requests 12 (limit >= 5) Pass · error-rate 0.3 (limit <= 0.02) Fail" in text
    assert "  15.0s  3.0.0 RolledBack" in text
    render(run.journal, {})  # the live view renders the same journal
