"""The rollout state machine: ``decide(spec, status, observation, now) -> (decision, status)``.

Pure and deterministic: time is passed in, nothing is read from the world, and the same inputs give
the same outputs — so a restarted operator that re-reads ``.status`` reaches the same outcome.

Rules, in the order they are applied each tick:
1. A new resource deploys its model as stable (Initializing → Succeeded), without analysis.
2. A spec model equal to stable is a no-op; if a canary was running it is discarded.
3. A spec model different from both stable and canary starts a candidate from the first stage of
   its strategy (``plan.stages``), also in the middle of a rollout (the new candidate replaces the old
   one; so does a changed ``strategy.type``). A rolled-back candidate is not retried until the spec
   changes or the ``retry`` command arrives.
4. Commands (abort, promote, pause, resume) apply before analysis.
5. Analysis: ``failureLimit`` failures in a row roll back; inconclusive results (too few requests, no
   data, Prometheus unreachable) neither pass nor fail, and after ``inconclusiveLimit`` of them in a
   row ``onNoData`` decides. A step advances only on a passing analysis taken at that step, so a
   rollout can never be promoted past a failed analysis.
6. Capacity before traffic: before a stage gives the candidate a larger share (live or mirrored), its
   pods are scaled for that share and must all be available; only then does the route change.
7. Route first, confirm, then scale down: when the candidate leaves live traffic (promotion complete,
   rollback, spec back to stable) the route moves first, and its pods shrink only once the router
   confirms they get no share; until then they keep the size they had.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from model_operator.durations import parse_duration
from model_operator.rollout.plan import UNTIL_PROMOTED, Stage, candidate_track, stages, switch_index
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
    # RolledBack straight from Progressing/Paused: a candidate without live weight (a shadow, a preview) is
    # off traffic in the tick that decides it (the status skips RollingBack; the events do not)
    Phase.PROGRESSING: {
        Phase.PAUSED,
        Phase.PROMOTING,
        Phase.ROLLING_BACK,
        Phase.ROLLED_BACK,
        Phase.SUCCEEDED,
        Phase.PROGRESSING,
    },
    Phase.PAUSED: {Phase.PROGRESSING, Phase.PROMOTING, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.SUCCEEDED},
    Phase.PROMOTING: {Phase.SUCCEEDED, Phase.PROGRESSING},
    Phase.ROLLING_BACK: {Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SUCCEEDED},
    Phase.ROLLED_BACK: {Phase.PROGRESSING, Phase.SUCCEEDED},
    Phase.FAILED: {Phase.PROGRESSING, Phase.SUCCEEDED},
}


def current_stage(plan: list[Stage], status: ModelDeploymentStatus) -> Stage:
    return plan[min(status.current_step, len(plan) - 1)]


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: dt.datetime) -> bool:
    """Whether the caller should run an analysis before calling ``decide``."""
    if status.phase not in ACTIVE or status.canary is None or not status.step_entered:
        return False
    if not current_stage(stages(spec), status).analysed:
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
            if not _route_back_to_stable(new, obs):
                new.message = "spec equals stable: traffic returns to stable before the candidate goes"
                return _done(new, events, PROMOTE_POLL)
            _discard_canary(new)
            _enter(new, Phase.SUCCEEDED, "spec equals stable: canary discarded", events)
        elif new.phase is not Phase.SUCCEEDED:
            _enter(new, Phase.SUCCEEDED, f"{new.stable.version} is stable", events)
        return _done(new, events, IDLE_REQUEUE)

    # a status written before strategies existed has none: its candidate is a canary
    restrategised = new.phase in ACTIVE and (new.strategy or "Canary") != spec.strategy.type
    if not spec.model.same_artifact(new.canary) or restrategised:
        _start_canary(new, spec, now, events)
    elif new.phase is Phase.ROLLED_BACK:
        if Command.RETRY not in commands:
            return _done(new, events, IDLE_REQUEUE)
        _start_canary(new, spec, now, events)

    if new.phase is Phase.ROLLING_BACK:
        return _finish_rollback(new, obs, events)

    # Progressing or Paused from here on.
    plan = stages(spec)
    new.current_step = min(new.current_step, len(plan) - 1)
    if Command.ABORT in commands:
        return _rollback(new, obs, now, "aborted by user", events)
    if Command.PROMOTE in commands:
        switch = switch_index(plan, new.current_step)
        if switch is None or (switch == new.current_step and new.step_entered):
            return _begin_promotion(new, obs, "promoted by user", events)
        new.current_step, new.step_entered, new.paused_by_user = switch, False, False
        _enter(new, Phase.PROGRESSING, "promoted by user: switching", events)
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
        progress = _advance(plan, new, obs, now, events)
        if progress is _Progress.PROMOTE:
            return _begin_promotion(new, obs, f"all {len(plan)} steps passed", events)
        if progress is _Progress.WAITING:
            requeue = PROMOTE_POLL
        requeue = min(requeue, _hold_remaining(plan, new, now))
    return _done(new, events, max(requeue, 0.5))


def desired_state(status: ModelDeploymentStatus) -> Desired | None:
    if status.stable is None:
        return None
    return Desired(
        stable=status.stable,
        canary=status.canary,
        canary_weight=status.canary_weight,
        mirror_percent=status.mirror_percent,
        canary_capacity=max(status.canary_capacity, status.canary_weight, status.mirror_percent),
        track=candidate_track(status.strategy),
    )


def role(status: ModelDeploymentStatus) -> str:
    """What to call the candidate in messages: preview, shadow or canary."""
    if status.strategy == "BlueGreen":
        return "preview"
    return "shadow" if status.mirror_percent else "canary"


def _done(new: ModelDeploymentStatus, events: list[Event], requeue: float) -> tuple[Decision, ModelDeploymentStatus]:
    new.stable_version = new.stable.version if new.stable else None
    new.canary_version = new.canary.version if new.canary else None
    return Decision(desired=desired_state(new), events=events, requeue_after=requeue), new


def _fresh_commands(new: ModelDeploymentStatus, obs: Observation) -> set[Command]:
    fresh = {c for c, stamp in obs.commands.items() if new.handled_commands.get(c.value) != stamp}
    for command in fresh:
        new.handled_commands[command.value] = obs.commands[command]
    return fresh


class IllegalTransition(RuntimeError):
    """The state machine tried to move between phases ``TRANSITIONS`` does not allow: a bug, refused."""


def _enter(new: ModelDeploymentStatus, phase: Phase, message: str, events: list[Event], warning: bool = False) -> None:
    if new.phase != phase:
        if phase not in TRANSITIONS[new.phase]:
            raise IllegalTransition(f"{new.phase} → {phase} is not an allowed transition ({message})")
        events.append(Event(reason=phase.value, message=message, warning=warning))
    new.phase = phase
    new.message = message


def _reset_analysis(new: ModelDeploymentStatus) -> None:
    new.consecutive_failures = 0
    new.consecutive_inconclusive = 0
    new.first_failure_at = None
    new.last_analysis_at = None
    new.step_passes = 0


def _start_canary(new: ModelDeploymentStatus, spec: ModelDeploymentSpec, now: dt.datetime, events: list[Event]) -> None:
    replaced = new.canary is not None and new.phase in ACTIVE
    _discard_canary(new)
    new.canary = spec.model
    new.strategy = spec.strategy.type
    new.step_started_at = format_time(now)
    new.rollback_started_at = None
    new.aborted = False
    new.paused_by_user = False
    note = " (replacing the previous candidate)" if replaced else ""
    what = "shadow" if spec.strategy.type == "Shadow" else role(new)
    _enter(new, Phase.PROGRESSING, f"{what} {spec.model.version} started{note}", events)
    if new.phase is Phase.PROGRESSING and replaced:
        events.append(Event(reason="CanaryReplaced", message=f"new spec: {what} {spec.model.version} restarts"))


def _discard_canary(new: ModelDeploymentStatus) -> None:
    new.canary = None
    new.strategy = None
    new.canary_weight = 0
    new.mirror_percent = 0
    new.canary_capacity = 0
    new.current_step = 0
    new.step_entered = False
    _reset_analysis(new)


def _stop_traffic(new: ModelDeploymentStatus) -> None:
    """No live share and no mirrored copy for the candidate. Its pods keep their size: they shrink only once
    the router confirms they get nothing (``_finish_rollback``), never while requests still reach them."""
    new.canary_weight = 0
    new.mirror_percent = 0


def _route_back_to_stable(new: ModelDeploymentStatus, obs: Observation) -> bool:
    """Route first, confirm, then scale down: asks for all traffic on stable and answers whether the router
    already confirms it. Until it does, the candidate keeps every pod it has."""
    _stop_traffic(new)
    return obs.traffic_weight == 0


def _rollback(
    new: ModelDeploymentStatus, obs: Observation, now: dt.datetime, reason: str, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    what = f"{role(new)} {new.canary.version if new.canary else ''}"
    _stop_traffic(new)
    new.rollback_started_at = new.first_failure_at or format_time(now)
    new.aborted = True
    _enter(new, Phase.ROLLING_BACK, f"rolling back {what}: {reason}", events, True)
    return _finish_rollback(new, obs, events)


def _finish_rollback(
    new: ModelDeploymentStatus, obs: Observation, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    """RolledBack once the router confirms the candidate's weight is 0 (the mirror goes in the same write);
    only then do the candidate's pods shrink."""
    if not _route_back_to_stable(new, obs):
        return _done(new, events, PROMOTE_POLL)
    new.canary_capacity = 0
    stable = new.stable.version if new.stable else "?"
    _enter(new, Phase.ROLLED_BACK, f"stable {stable} takes all traffic; {role(new)} gets none", events, True)
    return _done(new, events, IDLE_REQUEUE)


def _begin_promotion(
    new: ModelDeploymentStatus, obs: Observation, reason: str, events: list[Event]
) -> tuple[Decision, ModelDeploymentStatus]:
    _enter(new, Phase.PROMOTING, reason, events)
    _promote(new, obs, events)
    return _done(new, events, PROMOTE_POLL)


def _promote(new: ModelDeploymentStatus, obs: Observation, events: list[Event]) -> bool:
    """True once promotion is complete. First the candidate is sized for all traffic and takes it; then
    the stable Deployment gets its model; once stable is available with it, traffic returns to stable, and
    only once the router confirms that does the candidate go (its pods never shrink under live traffic)."""
    assert new.canary is not None
    new.mirror_percent = 0
    version = new.canary.version
    if new.canary.same_artifact(new.stable) and obs.stable_serving == new.canary.digest:
        if not _route_back_to_stable(new, obs):
            new.message = f"promoting {version}: stable runs it; traffic returns to stable"
            return False
        _discard_canary(new)
        _enter(new, Phase.SUCCEEDED, f"{version} promoted to stable", events)
        return True
    if new.canary_weight < 100:
        if _ready_for(100, new, obs):
            new.canary_weight = 100
            new.message = f"promoting {version}: the {role(new)} takes all traffic"
        return False
    if not new.canary.same_artifact(new.stable):
        if obs.traffic_weight != 100:  # stable's pods are replaced only once the router moved every request
            return False
        new.stable = new.canary
        new.message = f"promoting {version}: waiting for stable to run it"
    return False


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
        new.step_passes = 0
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
        new.step_passes += 1
        new.consecutive_failures = 0
        new.consecutive_inconclusive = 0
        new.first_failure_at = None
        if new.phase is Phase.PAUSED and not new.paused_by_user and _indefinite(spec, new) is False:
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


def _indefinite(spec: ModelDeploymentSpec, new: ModelDeploymentStatus) -> bool:
    """Whether the current stage holds until promoted (a pause no analysis can end)."""
    return current_stage(stages(spec), new).hold == UNTIL_PROMOTED


def _hold_remaining(plan: list[Stage], new: ModelDeploymentStatus, now: dt.datetime) -> float:
    hold = current_stage(plan, new).hold
    started = parse_time(new.step_started_at)
    if hold is None or hold == UNTIL_PROMOTED or started is None or not new.step_entered:
        return float("inf")
    return hold - (now - started).total_seconds()


class _Progress(StrEnum):
    MOVED = "moved"
    WAITING = "waiting"
    """For the candidate's pods: check again soon."""
    PROMOTE = "promote"


def _advance(
    plan: list[Stage], new: ModelDeploymentStatus, obs: Observation, now: dt.datetime, events: list[Event]
) -> _Progress:
    """Move through as many stages as are complete right now."""
    while new.phase is Phase.PROGRESSING:
        stage = plan[new.current_step]
        if not new.step_entered:
            if not _ready_for(stage.capacity, new, obs):
                return _Progress.WAITING
            _enter_stage(plan, new, now, events)
            continue
        if not _stage_complete(stage, new, now):
            if stage.hold == UNTIL_PROMOTED:
                how = "switch" if switch_index(plan, new.current_step) is not None else "promote"
                _enter(new, Phase.PAUSED, f"step {new.current_step + 1}: {stage.name}; {how} with "
                       "`modelrollout promote`", events)  # fmt: skip
            return _Progress.MOVED
        if new.current_step + 1 >= len(plan):
            return _Progress.PROMOTE
        new.current_step += 1
        new.step_entered = False
    return _Progress.MOVED


def _ready_for(capacity: int, new: ModelDeploymentStatus, obs: Observation) -> bool:
    """Whether the candidate's pods are all available and sized for ``capacity`` percent of requests;
    if not, asks for that size and says what it waits for."""
    assert new.canary is not None
    new.canary_capacity = max(new.canary_capacity, capacity)
    observed = obs.canary_track == candidate_track(new.strategy)
    if observed and obs.canary_serving == new.canary.digest and obs.canary_capacity >= capacity:
        return True
    new.message = f"waiting for the {role(new)} {new.canary.version} pods to be available for {capacity}% of requests"
    return False


def _enter_stage(plan: list[Stage], new: ModelDeploymentStatus, now: dt.datetime, events: list[Event]) -> None:
    stage = plan[new.current_step]
    new.canary_weight = stage.weight
    new.mirror_percent = stage.mirror
    new.step_entered = True
    new.step_passes = 0
    new.step_started_at = format_time(now)
    new.message = f"step {new.current_step + 1}/{len(plan)}: {stage.name}"
    events.append(Event("StepStarted", new.message))


def _stage_complete(stage: Stage, new: ModelDeploymentStatus, now: dt.datetime) -> bool:
    if new.consecutive_failures or new.consecutive_inconclusive or new.step_passes < stage.passes:
        return False
    if stage.hold is None:
        return True
    started = parse_time(new.step_started_at)
    return stage.hold != UNTIL_PROMOTED and started is not None and (now - started).total_seconds() >= stage.hold
