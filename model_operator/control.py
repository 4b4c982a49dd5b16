"""What the ``modelrollout`` CLI does to a ModelDeployment: command annotations and a readable status.

Pure functions; the CLI does the API calls. ``render_status`` is shaped after
``kubectl argo rollouts get``: the rollout, its steps with a marker on the current one, the analysis.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from model_operator.rollout.machine import role
from model_operator.rollout.plan import stages
from model_operator.rollout.types import Command
from model_operator.spec import GROUP, ModelDeploymentSpec, ModelDeploymentStatus

SYMBOLS = {"Pass": "✔", "Fail": "✖", "Inconclusive": "…", "Error": "⚠"}


def command_patch(command: Command, now: dt.datetime) -> dict[str, Any]:
    """A merge patch that asks the operator to run ``command`` once (the stamp makes it unique)."""
    return {"metadata": {"annotations": {f"{GROUP}/{command.value}": now.astimezone(dt.UTC).isoformat()}}}


def render_status(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
    status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
    plan = stages(spec)
    lines = [
        f"Name:          {meta['name']}",
        f"Namespace:     {meta['namespace']}",
        f"Strategy:      {spec.strategy.type}",
        f"Phase:         {status.phase.value if status.phase else 'Pending'}",
        f"Message:       {status.message or ''}",
        *([f"Error:         {status.reconcile_error}"] if status.reconcile_error else []),
        f"Stable:        {_model(status.stable)}",
        f"{role(status).capitalize() + ':':<15}{_model(status.canary)}",
        f"Weight:        {status.canary_weight}%"
        + (f" (+{status.mirror_percent}% mirrored)" if status.mirror_percent else ""),
        f"Traffic:       {spec.traffic.provider}" + (f" ({status.traffic_note})" if status.traffic_note else ""),
        "",
        "Steps:",
    ]
    running = status.canary is not None
    for index, stage in enumerate(plan):
        marker = (
            "▶"
            if running and index == status.current_step
            else ("✔" if running and index < status.current_step else " ")
        )
        lines.append(f"  {marker} {index + 1}. {stage.name}")
    lines += ["", f"Analysis (every {spec.analysis.interval}, failureLimit {spec.analysis.failure_limit}):"]
    if not status.analysis:
        lines.append("  (none yet)")
    for result in status.analysis:
        lines.append(f"  {SYMBOLS.get(result.verdict.value, '?')} {result.time[11:19]}  {result.check:<14} "
                     f"{result.verdict.value:<12} {result.message or ''}")  # fmt: skip
    return "\n".join(lines)


def render_history(events: list[dict[str, Any]]) -> str:
    if not events:
        return "no events (events expire after an hour by default)"
    rows = sorted(events, key=lambda e: e.get("time") or "")
    return "\n".join(
        f"{e.get('time', '')[:19]}  {e.get('type', ''):<8} {e.get('reason', ''):<14} {e.get('message', '')}"
        for e in rows
    )


def _model(ref: Any) -> str:
    return "-" if ref is None else f"{ref.name} {ref.version} ({ref.digest[:19]}…)"
