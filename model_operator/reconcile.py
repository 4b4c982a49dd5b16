"""One operator tick for one ModelDeployment: observe → (analyse) → decide → apply → record.

Everything the state machine needs is read first; the decision is pure; applying it is idempotent
(server-side apply of desired objects), so a tick can be repeated or resumed after a crash. What happens
when a tick fails, and when the next one runs, is ``tick.run_once``'s business (the one error policy).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model_operator.analysis.base import MetricProvider
from model_operator.analysis.checks import Scope, run_analysis
from model_operator.analysis.guard import Guarded
from model_operator.deadline import Deadline
from model_operator.kube import manifests
from model_operator.kube.client import Kube
from model_operator.metrics import OperatorMetrics
from model_operator.rollout.machine import analysis_due, current_stage, decide
from model_operator.rollout.plan import candidate_track, stages
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
    GROUP,
    KIND,
    VERSION,
    Condition,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
)
from model_operator.traffic import ROUTERS, TrafficRouter, router_for

API_VERSION = f"{GROUP}/{VERSION}"
COMMAND_PREFIX = f"{GROUP}/"
log = logging.getLogger(__name__)

ProviderFor = Callable[[ModelDeploymentSpec, Deadline], MetricProvider]
"""The metric provider for a spec's analysis, bound to the tick's deadline (a provider that can bound its
requests by it should; the reconciler checks it before every query anyway)."""


@dataclass
class TickResult:
    status: ModelDeploymentStatus
    decision: Decision
    events: list[Event] = field(default_factory=list)
    analysis: AnalysisOutcome | None = None
    """This tick's own analysis, when one ran: what it found, whether or not the status keeps all of it."""


def _replicas(deployment: Mapping[str, Any] | None) -> int:
    return 0 if deployment is None else int(deployment.get("spec", {}).get("replicas", 0))


def commands_from(annotations: dict[str, str]) -> dict[Command, str]:
    return {c: annotations[COMMAND_PREFIX + c.value] for c in Command if COMMAND_PREFIX + c.value in annotations}


def conditions(status: ModelDeploymentStatus, generation: int, now: dt.datetime) -> list[Condition]:
    """Available / Progressing / Degraded per API conventions; lastTransitionTime kept while status holds."""
    phase = status.phase
    wanted = {
        "Available": (status.stable is not None and phase is not Phase.INITIALIZING, "StableServing"),
        "Progressing": (phase in (Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING), phase or ""),
        "Degraded": (phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED), phase or ""),
    }
    previous = {c.type: c for c in status.conditions}
    out = []
    for kind, (true, reason) in wanted.items():
        value = "True" if true else "False"
        before = previous.get(kind)
        since = before.last_transition_time if before and before.status == value else format_time(now)
        out.append(
            Condition(
                type=kind,
                status=value,
                reason=str(reason) or "None",
                message=status.message or "",
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        provider_for: ProviderFor,
        metrics: OperatorMetrics,
    ) -> None:
        self.kube = kube
        self.provider_for = provider_for
        self.metrics = metrics

    def tick(self, body: dict[str, Any], now: dt.datetime, deadline: Deadline | None = None) -> TickResult:
        """Observe, analyse when due, decide, apply, write status. ``deadline`` bounds the analysis: checked
        before every query and once it ends (``DeadlineExceeded``: nothing of it is counted). Raises what the
        Kubernetes client, the spec's validation and the provider raise; ``run_once`` says what each means."""
        deadline = deadline or Deadline.unlimited()
        meta = body["metadata"]
        owner = manifests.Owner(meta["namespace"], meta["name"], meta["uid"])
        spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        router = router_for(spec.traffic.provider, self.kube)

        track = candidate_track(status.strategy)
        found = {
            name: self.kube.get("apps/v1", "Deployment", owner.namespace, owner.object_name(name))
            for name in ("stable", *manifests.CANDIDATE_TRACKS)
        }
        stable_obj, canary_obj = found["stable"], found[track]
        analysis = None
        if status.canary is not None and analysis_due(spec, status, now):
            live = current_stage(stages(spec), status).weight
            provider = Guarded(self.provider_for(spec, deadline), deadline)
            scope = Scope(owner.namespace, owner.name)
            analysis = run_analysis(spec, scope, status.canary, status.stable, provider, now, track, compare=live < 100)
            deadline.check("during the analysis")
        obs = Observation(
            generation=meta.get("generation", 0),
            stable_serving=manifests.deployment_serving(stable_obj),
            traffic_weight=router.current_weight(owner),
            commands=commands_from(meta.get("annotations") or {}),
            analysis=analysis,
            canary_serving=manifests.deployment_serving(canary_obj),
            canary_capacity=manifests.deployment_capacity(canary_obj),
            canary_track=track,
        )
        decision, new = decide(spec, status, obs, now)
        events = list(decision.events)
        if decision.desired is not None:
            carrying = status.traffic_provider
            new.traffic_provider = self.apply(owner, spec, decision.desired, new.phase, router, found, carrying)
            if carrying is not None and new.traffic_provider != carrying:
                message = f"{new.traffic_provider}'s route carries the traffic; {carrying}'s objects are removed"
                events.append(Event("TrafficProviderChanged", message))
        new.traffic_note = router.note()
        new.reconcile_error = None  # this tick completed
        new.conditions = conditions(new, obs.generation, now)
        # a merge patch: cleared fields must be sent as null to be removed, so None is kept here
        self.kube.patch_status(
            API_VERSION, KIND, owner.namespace, owner.name, new.model_dump(mode="json", by_alias=True)
        )
        self.record(owner, status, new, analysis, now)
        return TickResult(new, decision, events, analysis)

    def apply(
        self,
        owner: manifests.Owner,
        spec: ModelDeploymentSpec,
        desired: Desired,
        phase: Phase | None,
        router: TrafficRouter,
        found: Mapping[str, dict[str, Any] | None],
        carrying: str | None = None,
    ) -> str:
        """Make ``desired`` true; ``found``: each track's Deployment as this tick read it (a candidate track no
        longer in use is scaled away, never created just to be empty); ``carrying``: the provider whose route
        carried the traffic before (``status.trafficProvider``). Returns the one carrying it now.

        Order: Deployments that keep or gain pods, the Services, the route, the previous provider's objects
        once the route is confirmed (``hand_over``), and only then Deployments that lose pods — so pods never
        go before the route stops sending them requests, nor a route before its successor carries them."""
        stable_replicas, canary_replicas = router.replicas(
            spec.replicas, desired.canary_weight, desired.canary_capacity, desired.canary is not None
        )
        if phase is Phase.PROMOTING and desired.canary is not None and desired.stable.same_artifact(desired.canary):
            stable_replicas = spec.replicas  # the new stable must be fully up before traffic returns to it
        if desired.track == "preview" and desired.canary_capacity < 100:
            canary_replicas = spec.strategy.blue_green.preview_replicas or spec.replicas
        deployments = {"stable": manifests.deployment(owner, spec, desired.stable, "stable", stable_replicas)}
        for track in manifests.CANDIDATE_TRACKS:
            if desired.canary is not None and track == desired.track:
                deployments[track] = manifests.deployment(
                    owner, spec, desired.canary, track, canary_replicas, desired.canary_capacity
                )
            elif found.get(track) is not None:  # scaled away, kept
                deployments[track] = manifests.deployment(owner, spec, desired.stable, track, 0, 0)
        shrinking = {track for track, obj in deployments.items() if _replicas(obj) < _replicas(found.get(track))}
        kube = self.kube
        for track, obj in deployments.items():
            if track not in shrinking:
                kube.apply(obj)
        # the canary Service always (routes written before a rollout name it), the preview's while it runs
        preview = ("preview",) if desired.canary is not None and desired.track == "preview" else ()
        for service in (None, "stable", "canary", *preview):
            kube.apply(manifests.service(owner, spec, service))
        router.set_weight(owner, spec, desired.canary_weight, desired.mirror_percent, desired.track)
        carrying = self.hand_over(owner, router, desired.canary_weight, carrying)
        for track in shrinking:
            kube.apply(deployments[track])
        return carrying

    def hand_over(self, owner: manifests.Owner, router: TrafficRouter, weight: int, carrying: str | None) -> str:
        """After ``router`` wrote its route: which provider carries the traffic now. When that moves from
        another provider, the others' objects are removed, and only once ``router``'s route reads back with
        ``weight`` (where it has one to read): until then the old route stays and the next tick tries again.
        No API call when the provider did not change (the idle case), nor when none was recorded yet (a new
        resource, or a status written before the field existed: adopted as is)."""
        if carrying is None or carrying == router.name:
            return router.name
        if router.verify_weight(owner, weight) is False:
            return carrying
        # every other provider, not only ``carrying``: one switched to and away again before its route was
        # confirmed may have left objects too
        for name in sorted(ROUTERS.keys() - {router.name}):
            router_for(name, self.kube).remove(owner)
        return router.name

    def record(
        self,
        owner: manifests.Owner,
        before: ModelDeploymentStatus,
        after: ModelDeploymentStatus,
        analysis: AnalysisOutcome | None,
        now: dt.datetime,
    ) -> None:
        """The operator's metrics; ``analysis``: this tick's own, every check of it counted once."""
        m = self.metrics
        m.ensure_series(owner.namespace, owner.name)
        m.set_phase(owner.namespace, owner.name, after.phase)
        m.weight.labels(owner.namespace, owner.name).set(after.canary_weight)
        m.mirror.labels(owner.namespace, owner.name).set(after.mirror_percent)
        if after.phase is not None and after.phase != before.phase:
            m.transitions.labels(owner.namespace, owner.name, after.phase.value).inc()
        for result in analysis.results if analysis is not None else ():
            m.analysis.labels(owner.namespace, owner.name, result.check, result.verdict.value).inc()
        started = parse_time(after.rollback_started_at)
        if after.phase is Phase.ROLLED_BACK and before.phase is not Phase.ROLLED_BACK and started is not None:
            m.rollback_seconds.labels(owner.namespace, owner.name).observe((now - started).total_seconds())
