"""The canary state machine: ``decide(spec, status, observation, now) -> (decision, status)``.

Pure and deterministic: time is passed in, nothing is read from the world, and the same inputs give
the same outputs — so a restarted operator that re-reads ``.status`` reaches the same outcome.

Rules, in the order they are applied each tick:
1. A new resource deploys its model as stable (Initializing → Succeeded), without analysis.
2. A spec model equal to stable is a no-op; if a canary was running it is discarded.
3. A spec model different from both stable and canary starts a canary from the first step, also in
   the middle of a rollout (the new canary replaces the old one). A rolled-back canary is not retried
   until the spec changes or the ``retry`` command arrives.
4. Commands (abort, promote, pause, resume) apply before analysis.
5. Analysis: ``failureLimit`` failures in a row roll back; inconclusive results (too few requests, no
   data, Prometheus unreachable) neither pass nor fail, and after ``inconclusiveLimit`` of them in a
   row ``onNoData`` decides. A step advances only on a passing analysis taken at that step, so a
   rollout can never be promoted past a failed analysis.
"""

from __future__ import annotations

import datetime as dt

from model_operator.durations import parse_duration
from model_operator.rollout.types import (
    AnalysisOutcome,
    Command,
    Decision,
    Desired,
    Event,
    Observation,
    format_time,
    parse_time,
)
from model_operator.spec import (
    RECENT_ANALYSIS_LIMIT,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelRef,
    Phase,
    Verdict,
)

ACTIVE = {Phase.PROGRESSING, Phase.PAUSED}
IDLE_REQUEUE = 300.0
PROMOTE_POLL = 2.0

TRANSITIONS: dict[Phase | None, set[Phase]] = {
    None: {Phase.INITIALIZING},
    Phase.INITIALIZING: {Phase.SUCCEEDED, Phase.PROGRESSING},
    Phase.SUCCEEDED: {Phase.PROGRESSING},
    Phase.PROGRESSING: {Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK, Phase.SUCCEEDED, Phase.PROGRESSING},
    Phase.PAUSED: {Phase.PROGRESSING, Phase.PROMOTING, Phase.ROLLING_BACK, Phase.SUCCEEDED},
    Phase.PROMOTING: {Phase.SUCCEEDED, Phase.PROGRESSING},
    Phase.ROLLING_BACK: {Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SUCCEEDED},
    Phase.ROLLED_BACK: {Phase.PROGRESSING, Phase.SUCCEEDED},
    Phase.FAILED: {Phase.PROGRESSING, Phase.SUCCEEDED},
}


def step_weight(spec: ModelDeploymentSpec, step: int) -> int:
    """Canary weight at ``step``: the last setWeight at or before it (0 before the first)."""
    weight = 0
    for s in spec.strategy.canary.steps[: step + 1]:
        if s.set_weight is not None:
            weight = s.set_weight
    return weight


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: dt.datetime) -> bool:
    """Whether the caller should run an analysis before calling ``decide``."""
    if status.phase not in ACTIVE or status.canary_weight == 0:
        return False
    last = parse_time(status.last_analysis_at) or parse_time(status.step_started_at)
    return last is None or (now - last).total_seconds() >= parse_duration(spec.analysis.interval)


def decide(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, obs: Observation, now: dt.datetime
) -> tuple[Decision, ModelDeploymentStatus]:
    new = status.model_copy(deep=True)
    events: list[Event] = []
    new.observed_generation = obs.generation
    commands = _fresh_commands(new, obs)
    interval = parse_duration(spec.analysis.interval)
    requeue = interval

    if new.stable is None:
        new.stable = spec.model
        _enter(new, Phase.INITIALIZING, f"deploying {spec.model.version} as the first stable model", events)
        return _done(new, events, PROMOTE_POLL)
    if new.phase is Phase.INITIALIZING:
        if obs.stable_serving != new.stable.digest:
            return _done(new, events, PROMOTE_POLL)
        _enter(new, Phase.SUCCEEDED, f"{new.stable.version} is stable", events)
    if new.phase is Phase.PROMOTING and not _promote(new, obs, events):
        return _done(new, events, PROMOTE_POLL)

    if spec.model.same_artifact(new.stable):
        if new.canary is not None:
            _discard_canary(new)
            _enter(new, Phase.SUCCEEDED, "spec equals stable: canary discarded", events)
        elif new.phase is not Phase.SUCCEEDED:
            _enter(new, Phase.SUCCEEDED, f"{new.stable.version} is stable", events)
        return _done(new, events, IDLE_REQUEUE)

    if not spec.model.same_artifact(new.canary):
        _start_canary(new, spec.model, now, events)
    elif new.phase is Phase.ROLLED_BACK:
        if Command.RETRY not in commands:
            return _done(new, events, IDLE_REQUEUE)
        _start_canary(new, spec.model, now, events)

    if new.phase is Phase.ROLLING_BACK:
        return _finish_rollback(new, obs, events)

    # Progressing or Paused from here on.
    if Command.ABORT in commands:
        return _rollback(new, obs, now, "aborted by user", events)
    if Command.PROMOTE in commands:
        return _begin_promotion(new, obs, "promoted by user", events)
    if Command.PAUSE in commands:
        new.paused_by_user = True
        _enter(new, Phase.PAUSED, "paused by user", events)
    if Command.RESUME in commands and new.phase is Phase.PAUSED:
        new.paused_by_user = False
        new.step_started_at = format_time(now)
        _enter(new, Phase.PROGRESSING, "resumed by user", events)

    last_analysis = parse_time(new.last_analysis_at)
    if obs.analysis is not None and (last_analysis is None or obs.analysis.taken_at > last_analysis):
        outcome = _judge(spec, new, obs, obs.analysis, events)
        if outcome is not None:
            return outcome

    if new.phase is Phase.PROGRESSING:
        if _advance(spec, new, obs, now, events):
            return _begin_promotion(new, obs, f"all {len(spec.strategy.canary.steps)} steps passed", events)
        requeue = min(requeue, _pause_remaining(spec, new, now))
    return _done(new, events, max(requeue, 0.5))


def desired_state(status: ModelDeploymentStatus) -> Desired | None:
    if status.stable is None:
        return None
    return Desired(stable=status.stable, canary=status.canary, canary_weight=status.canary_weight)


def _done(new: ModelDeploymentStatus, events: list[Event], requeue: float) -> tuple[Decision, ModelDeploymentStatus]:
    new.stable_version = new.stable.version if new.stable else None
    new.canary_version = new.canary.version if new.canary else None
    return Decision(desired=desired_state(new), events=events, requeue_after=requeue), new


def _fresh_commands(new: ModelDeploymentStatus, obs: Observation) -> set[Command]:
    fresh = {c for c, stamp in obs.commands.items() if new.handled_commands.get(c.value) != stamp}
    for command in fresh:
        new.handled_commands[command.value] = obs.commands[command]
    return fresh


def _enter(new: ModelDeploymentStatus, phase: Phase, message: str, events: list[Event], warning: bool = False) -> None:
    if new.phase != phase:
        events.append(Event(reason=phase.value, message=message, warning=warning))
    new.phase = phase
    new.message = message


def _reset_analysis(new: ModelDeploymentStatus) -> None:
    new.consecutive_failures = 0
    new.consecutive_inconclusive = 0
    new.first_failure_at = None
    new.last_analysis_at = None


def _start_canary(new: ModelDeploymentStatus, model: ModelRef, now: dt.datetime, events: list[Event]) -> None:
    replaced = new.canary is not None and new.phase in ACTIVE
    new.canary = model
    new.current_step = 0
    new.canary_weight = 0
    new.step_started_at = format_time(now)
    new.rollback_started_at = None
    new.aborted = False
    new.paused_by_user = False
    _reset_analysis(new)
    note = " (replacing the previous canary)" if replaced else ""
    _enter(new, Phase.PROGRESSING, f"canary {model.version} started{note}", events)
    if new.phase is Phase.PROGRESSING and replaced:
        events.append(Event(reason="CanaryReplaced", message=f"new spec: canary {model.version} restarts"))


def _discard_canary(new: ModelDeploymentStatus) -> None:
    new.canary = None
    new.canary_weight = 0
    new.current_step = 0
    _reset_analysis(new)


def _rollback(
    new: ModelDeploymentStatus, obs: Observation, now: dt.datetime, reason: str, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    new.canary_weight = 0
    new.rollback_started_at = new.first_failure_at or format_time(now)
    new.aborted = True
    _enter(new, Phase.ROLLING_BACK, f"rolling back {new.canary.version if new.canary else ''}: {reason}", events, True)
    return _finish_rollback(new, obs, events)


def _finish_rollback(
    new: ModelDeploymentStatus, obs: Observation, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    """RolledBack once the router confirms the canary's weight is 0."""
    new.canary_weight = 0
    if obs.traffic_weight != 0:
        return _done(new, events, PROMOTE_POLL)
    stable = new.stable.version if new.stable else "?"
    _enter(new, Phase.ROLLED_BACK, f"stable {stable} takes all traffic; canary stays down", events, True)
    return _done(new, events, IDLE_REQUEUE)


def _begin_promotion(
    new: ModelDeploymentStatus, obs: Observation, reason: str, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    new.canary_weight = 100
    _enter(new, Phase.PROMOTING, reason, events)
    _promote(new, obs, events)
    return _done(new, events, PROMOTE_POLL)


def _promote(new: ModelDeploymentStatus, obs: Observation, events: list[Event]) -> bool:
    """True once promotion is complete. First the stable Deployment gets the canary's model while the
    canary holds 100%; once stable is available with it, traffic returns to stable and the canary goes."""
    assert new.canary is not None
    if not new.canary.same_artifact(new.stable):
        new.stable = new.canary
        new.canary_weight = 100
        return False
    if obs.stable_serving != new.canary.digest:
        return False
    version = new.canary.version
    _discard_canary(new)
    _enter(new, Phase.SUCCEEDED, f"{version} promoted to stable", events)
    return True


def _judge(
    spec: ModelDeploymentSpec,
    new: ModelDeploymentStatus,
    obs: Observation,
    outcome: AnalysisOutcome,
    events: list[Event],
) -> tuple[Decision, ModelDeploymentStatus] | None:
    now = outcome.taken_at
    new.last_analysis_at = format_time(now)
    new.analysis = (new.analysis + outcome.results)[-RECENT_ANALYSIS_LIMIT:]
    analysis = spec.analysis
    if outcome.verdict is Verdict.FAIL:
        new.consecutive_failures += 1
        new.consecutive_inconclusive = 0
        new.first_failure_at = new.first_failure_at or format_time(now)
        failed = "; ".join(r.message or r.check for r in outcome.results if r.verdict is Verdict.FAIL)
        events.append(
            Event("AnalysisFailed", f"{new.consecutive_failures}/{analysis.failure_limit}: {failed}", warning=True)
        )
        if new.consecutive_failures >= analysis.failure_limit:
            return _rollback(
                new, obs, now, f"analysis failed {new.consecutive_failures} times in a row: {failed}", events
            )
        return None
    if outcome.verdict is Verdict.PASS:
        new.consecutive_failures = 0
        new.consecutive_inconclusive = 0
        new.first_failure_at = None
        if new.phase is Phase.PAUSED and not new.paused_by_user and _pause_step(spec, new) is None:
            _enter(new, Phase.PROGRESSING, "metrics are back", events)
        return None
    new.consecutive_inconclusive += 1
    if new.consecutive_inconclusive < analysis.inconclusive_limit:
        return None
    why = f"{new.consecutive_inconclusive} inconclusive analyses in a row (no data or too few requests)"
    if analysis.on_no_data == "rollback":
        return _rollback(new, obs, now, why, events)
    if analysis.on_no_data == "pause":
        _enter(new, Phase.PAUSED, f"paused: {why}", events, True)
    return None


def _pause_step(spec: ModelDeploymentSpec, new: ModelDeploymentStatus) -> float | None:
    """Duration of the current pause step in seconds; inf for an indefinite pause; None if not a pause."""
    step = spec.strategy.canary.steps[new.current_step]
    if step.pause is None:
        return None
    return parse_duration(step.pause.duration) if step.pause.duration else float("inf")


def _pause_remaining(spec: ModelDeploymentSpec, new: ModelDeploymentStatus, now: dt.datetime) -> float:
    pause = _pause_step(spec, new)
    started = parse_time(new.step_started_at)
    if pause is None or pause == float("inf") or started is None:
        return float("inf")
    return pause - (now - started).total_seconds()


def _advance(
    spec: ModelDeploymentSpec, new: ModelDeploymentStatus, obs: Observation, now: dt.datetime, events: list[Event]
) -> bool:
    """Move through as many steps as are complete right now; True when promotion begins."""
    steps = spec.strategy.canary.steps
    while new.phase is Phase.PROGRESSING:
        if new.canary_weight != step_weight(spec, new.current_step):
            if new.canary is not None and obs.canary_serving != new.canary.digest:
                new.message = f"waiting for the canary {new.canary.version} pods to be available"
                return False
            new.canary_weight = step_weight(spec, new.current_step)
            new.step_started_at = format_time(now)
            events.append(
                Event("StepStarted", f"step {new.current_step + 1}/{len(steps)}: weight {new.canary_weight}%")
            )
            return False
        if not _step_complete(spec, new, now):
            if _pause_step(spec, new) == float("inf"):
                _enter(new, Phase.PAUSED, f"step {new.current_step + 1}: paused until promoted", events)
            return False
        if new.current_step + 1 >= len(steps):
            return True
        new.current_step += 1
        new.step_started_at = format_time(now)
        if steps[new.current_step].pause is not None:
            events.append(Event("StepStarted", f"step {new.current_step + 1}/{len(steps)}: pause"))
    return False


def _step_complete(spec: ModelDeploymentSpec, new: ModelDeploymentStatus, now: dt.datetime) -> bool:
    if new.consecutive_failures or new.consecutive_inconclusive:
        return False
    started = parse_time(new.step_started_at)
    passed_here = (
        new.last_analysis_at is not None
        and started is not None
        and parse_time(new.last_analysis_at) > started  # type: ignore[operator]
        and new.analysis
        and new.analysis[-1].verdict is Verdict.PASS
    )
    pause = _pause_step(spec, new)
    if pause is None:
        return bool(passed_here)
    if pause == float("inf"):
        return False
    return started is not None and (now - started).total_seconds() >= pause
