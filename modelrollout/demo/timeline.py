"""The timeline PNG: canary weight, error rate and p95 latency over the whole demo, rollback marked.

Lines are what clients saw (the load generator's own record, over a sliding ``SMOOTH`` seconds per
track); dots are what the operator's analysis saw (each error-rate / latency-p95 check, green when it
passed, red when it failed). matplotlib runs headless (Agg backend).
"""

from __future__ import annotations

import math
from pathlib import Path

from modelrollout.demo.load import TRANSPORT_ERROR, Outcome, quantile
from modelrollout.demo.summary import Run, rollback_latency

SMOOTH = 3.0
COLORS = {"stable": "#1f77b4", "canary": "#ff7f0e", "preview": "#9467bd"}
VERDICT_COLORS = {"Pass": "#2ca02c", "Fail": "#d62728"}


def client_series(
    outcomes: list[Outcome], track: str, start: float, end: float
) -> tuple[list[float], list[float], list[float]]:
    """(seconds, error rate, p95 ms) per second, over the last ``SMOOTH`` seconds; NaN for a second
    without requests of its own (so a line ends when the track's traffic ends)."""
    mine = [o for o in outcomes if o.track == track]
    xs, errors, p95s = [], [], []
    second = math.ceil(start)
    lo = 0
    while second <= end:
        while lo < len(mine) and mine[lo].sent < second - SMOOTH:
            lo += 1
        window = [o for o in mine[lo:] if o.sent <= second]
        xs.append(second - start)
        if window and window[-1].sent > second - 1:
            errors.append(100 * sum(o.failed for o in window) / len(window))
            p95 = quantile([o.latency for o in window if o.reached and o.status != TRANSPORT_ERROR], 0.95)
            p95s.append(math.nan if p95 is None else 1000 * p95)
        else:
            errors.append(math.nan)
            p95s.append(math.nan)
        second += 1
    return xs, errors, p95s


def write_png(path: Path, run: Run, slo_p95_ms: float = 250.0, slo_error_percent: float = 2.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    journal = run.journal
    start = journal.started
    figure, (weight_ax, error_ax, latency_ax) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    figure.suptitle("modelrollout demo — canary of 2.0.0 promoted, canary of 3.0.0 rolled back")

    ticks = journal.ticks
    weight_ax.step([t.at - start for t in ticks], [t.weight for t in ticks], where="post", color=COLORS["canary"])
    weight_ax.set_ylabel("canary weight (%)")
    weight_ax.set_ylim(-5, 105)
    for chapter in journal.chapters:
        end = (chapter.ended or run.finished) - start
        weight_ax.axvspan(
            chapter.started - start,
            end,
            alpha=0.08,
            color="#d62728" if chapter.version == run.bad_version else "#2ca02c",
        )
        weight_ax.text(
            chapter.started - start,
            102,
            f" {chapter.version}: {(chapter.outcome or '…').replace('_', ' ')}",
            fontsize=8,
            va="top",
        )

    for track in [t for t in COLORS if t in ("stable", "canary") or any(o.track == t for o in run.outcomes)]:
        xs, errors, p95s = client_series(run.outcomes, track, start, run.finished)
        error_ax.plot(xs, errors, color=COLORS[track], label=f"{track} (clients)")
        latency_ax.plot(xs, p95s, color=COLORS[track], label=f"{track} (clients)")
    for check, axis, scale in (("error-rate", error_ax, 100.0), ("latency-p95", latency_ax, 1000.0)):
        for verdict, color in VERDICT_COLORS.items():
            found = [v for v in journal.verdicts if v.check == check and v.verdict == verdict and v.value is not None]
            if found:
                axis.scatter([v.at - start for v in found], [scale * (v.value or 0.0) for v in found], color=color,
                             s=18, zorder=3, label=f"canary analysis: {verdict}")  # fmt: skip
    error_ax.axhline(slo_error_percent, color="grey", linestyle="--", linewidth=1, label="SLO")
    error_ax.set_ylabel("errors (%)")
    latency_ax.axhline(slo_p95_ms, color="grey", linestyle="--", linewidth=1, label="SLO")
    latency_ax.set_ylabel("p95 latency (ms)")
    latency_ax.set_xlabel("seconds since the demo started")

    first, zero = rollback_latency(run)
    if first is not None and zero is not None:
        for axis in (weight_ax, error_ax, latency_ax):
            axis.axvspan(first - start, zero - start, color="#d62728", alpha=0.18)
            axis.axvline(zero - start, color="#d62728", linewidth=1.2)
        weight_ax.annotate(
            f"rollback: {zero - first:.1f}s from first bad request to weight 0",
            xy=(zero - start, 0), xytext=(zero - start, 60), fontsize=9, color="#d62728",
            ha="right", arrowprops={"arrowstyle": "->", "color": "#d62728"},
        )  # fmt: skip
    for axis in (error_ax, latency_ax):
        axis.legend(loc="upper left", fontsize=7)
        axis.grid(alpha=0.3)
    weight_ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
