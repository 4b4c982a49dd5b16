"""Every strategy as one list of stages the state machine walks: what the candidate gets at each stage
(live weight, mirrored share) and what completes the stage (passing analyses, a hold).

- Canary: each ``setWeight`` is a stage that needs one passing analysis at its weight; each ``pause``
  holds the previous weight for its duration (or until promoted).
- BlueGreen: ``preview`` (no live traffic, ``passingAnalyses`` passes) → ``awaiting promotion`` when
  ``autoPromote`` is false → ``switch`` (100% at once, held for ``scaleDownDelay`` while the old version
  is still up).
- Shadow: ``shadow`` (a mirrored copy of live requests, ``passingAnalyses`` passes) → the canary's
  stages or the blue-green switch (``shadow.then``).

After the last stage the candidate is promoted: stable takes its model, then its traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_operator.durations import parse_duration
from model_operator.spec import ModelDeploymentSpec

UNTIL_PROMOTED = math.inf
SWITCH = "switch"


@dataclass(frozen=True)
class Stage:
    name: str
    """How the CLI and events name it: ``setWeight 25%``, ``pause 30s``, ``preview``, ``shadow 100%``…"""
    weight: int
    """The candidate's share of live traffic, percent."""
    mirror: int = 0
    """The share of live requests also copied to the candidate, percent (responses discarded)."""
    passes: int = 0
    """Passing analyses in a row needed at this stage."""
    hold: float | None = None
    """Seconds to stay (``UNTIL_PROMOTED``: until the promote command); None: no hold."""
    analysed: bool = True
    """Whether analysis runs here (not while the candidate gets no requests at all)."""

    @property
    def capacity(self) -> int:
        """The share of all requests the candidate's pods must be ready for before the stage starts."""
        return max(self.weight, self.mirror)


def candidate_track(strategy: str | None) -> str:
    """The candidate's Deployment/Service suffix and metrics ``track`` label under ``strategy``."""
    return "preview" if strategy == "BlueGreen" else "canary"


def stages(spec: ModelDeploymentSpec) -> list[Stage]:
    strategy = spec.strategy
    if strategy.type == "BlueGreen":
        return _blue_green(spec)
    if strategy.type == "Shadow":
        shadow = strategy.shadow
        mirrored = Stage(
            f"shadow {shadow.mirror_percent}%", 0, mirror=shadow.mirror_percent, passes=shadow.passing_analyses
        )
        return [mirrored, *(_canary(spec) if shadow.then == "Canary" else [_switch(spec)])]
    return _canary(spec)


def _canary(spec: ModelDeploymentSpec) -> list[Stage]:
    out: list[Stage] = []
    weight = 0
    for step in spec.strategy.canary.steps:
        if step.set_weight is not None:
            weight = step.set_weight
            out.append(Stage(f"setWeight {weight}%", weight, passes=1))
        else:
            assert step.pause is not None
            duration = step.pause.duration
            hold = parse_duration(duration) if duration else UNTIL_PROMOTED
            name = f"pause {duration}" if duration else "pause (until promoted)"
            out.append(Stage(name, weight, hold=hold, analysed=weight > 0))
    return out


def _blue_green(spec: ModelDeploymentSpec) -> list[Stage]:
    blue_green = spec.strategy.blue_green
    out = [Stage("preview", 0, passes=blue_green.passing_analyses)]
    if not blue_green.auto_promote:
        out.append(Stage("preview (until promoted)", 0, hold=UNTIL_PROMOTED))
    return [*out, _switch(spec)]


def _switch(spec: ModelDeploymentSpec) -> Stage:
    delay = spec.strategy.blue_green.scale_down_delay
    return Stage(SWITCH, 100, hold=parse_duration(delay))


def switch_index(plan: list[Stage], after: int) -> int | None:
    """The switch stage at or after ``after``, where a manual promote of a blue-green candidate jumps."""
    return next((i for i, stage in enumerate(plan) if i >= after and stage.name == SWITCH), None)
