"""Shared by the operator unit tests: a tiny driver for the pure state machine (one call is one operator
tick), spec builders, and a fake Kubernetes API for the routers and the reconciler."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

from model_operator.rollout.machine import TRANSITIONS, analysis_due, decide
from model_operator.rollout.plan import candidate_track
from model_operator.rollout.types import AnalysisOutcome, Command, Decision, Event, Observation
from model_operator.spec import CheckResult, ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, Phase, Verdict

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def model(version: str, digit: str = "") -> ModelRef:
    digest = "sha256:" + ((digit or version.replace(".", ""))[:1] * 64)
    return ModelRef(name="iris", version=version, uri=f"http://models/iris-{version}/", digest=digest)


def make_spec(version: str = "1.0.0", **analysis: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": model(version).wire(),
            "image": "server@sha256:" + "f" * 64,
            "analysis": {"interval": "30s", "failureLimit": 2, "inconclusiveLimit": 3, **analysis},
        }
    )


def strategy_spec(version: str, strategy: dict[str, Any], **analysis: Any) -> ModelDeploymentSpec:
    """``make_spec`` with ``strategy`` (wire form, e.g. ``{"type": "BlueGreen", "blueGreen": {...}}``)."""
    return ModelDeploymentSpec.model_validate({**make_spec(version, **analysis).wire(), "strategy": strategy})


def outcome(verdict: Verdict, at: dt.datetime) -> AnalysisOutcome:
    return AnalysisOutcome(verdict, [CheckResult(time=at.isoformat(), check="slo", verdict=verdict)], at)


@dataclass
class Driver:
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: dt.datetime = T0
    stable_available: bool = True
    canary_available: bool = True
    capacity_limit: int = 100
    """The largest share of requests the candidate's pods come up sized for (less: the cluster is full)."""
    last: Decision | None = None
    history: list[ModelDeploymentStatus] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def tick(
        self, verdict: Verdict | None = None, commands: dict[Command, str] | None = None, advance: float = 0
    ) -> ModelDeploymentStatus:
        self.now += dt.timedelta(seconds=advance)
        analysis = None
        if verdict is not None and analysis_due(self.spec, self.status, self.now):
            analysis = outcome(verdict, self.now)
        serving = self.status.stable.digest if self.stable_available and self.status.stable else None
        # pods of the spec's model come up at once unless a test says otherwise
        canary = self.spec.model.digest if self.canary_available else None
        capacity = min(self.status.canary_capacity, self.capacity_limit) if self.canary_available else 0
        track = candidate_track(self.status.strategy)  # what the reconciler read: the running candidate's track
        obs = Observation(1, serving, self.status.canary_weight, commands or {}, analysis, canary, capacity, track)
        self.last, self.status = decide(self.spec, self.status, obs, self.now)
        self.history.append(self.status)
        self.events.extend(self.last.events)
        return self.status

    def start(self, spec: ModelDeploymentSpec) -> ModelDeploymentStatus:
        """A new candidate, without time passing: its pods are asked for first, and once they are up (the
        next tick, or this one when the first stage needs none) the first stage gets its traffic."""
        self.spec = spec
        for _ in range(2):
            if self.tick().step_entered:
                break
        return self.status

    def run_until_settled(self, verdict: Verdict, limit: int = 200, step: float = 30) -> ModelDeploymentStatus:
        for _ in range(limit):
            self.tick(verdict, advance=step)
            if self.status.phase is not None and self.status.phase.value in ("Succeeded", "RolledBack", "Paused"):
                return self.status
        return self.status


def finish_promotion(driver: Driver, advance: float = 2) -> ModelDeploymentStatus:
    """The last two ticks of a promotion whose stable already runs the candidate's model: the route moves
    every request back to stable while the candidate keeps all its pods; only once the router confirms it
    (the next tick) is the candidate discarded and scaled away."""
    status = driver.tick(advance=advance)
    assert status.phase is Phase.PROMOTING and status.canary is not None, "the candidate stays until confirmed"
    assert status.canary_weight == 0 and status.canary_capacity == 100, "route first, pods kept"
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.canary is not None and driver.last.desired.canary_capacity == 100
    status = driver.tick(advance=advance)
    assert status.phase is Phase.SUCCEEDED and status.canary is None
    return status


def assert_transitions_allowed(driver: Driver) -> None:
    """Every phase the driver's rollout entered is allowed by ``TRANSITIONS``, also those entered and left
    within one tick (each entry is an event named after the phase)."""
    phases = {phase.value for phase in Phase}
    entered = [None, *(Phase(e.reason) for e in driver.events if e.reason in phases)]
    for before, after in itertools.pairwise(entered):
        assert after in TRANSITIONS[before], (before, after)


class FakeKube:
    """Records applies and answers gets from what was applied (enough for the routers and ``apply``); every
    call in order in ``calls`` as (verb, kind, name). Objects get a uid when first applied, as on a server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def apply(self, obj: dict[str, Any]) -> None:
        key = (obj["kind"], obj["metadata"]["name"])
        self.calls.append(("apply", *key))
        before = self.objects.get(key)
        uid = before["metadata"]["uid"] if before else f"uid-{key[0]}-{key[1]}-{len(self.calls)}"
        self.objects[key] = {**obj, "metadata": {**obj["metadata"], "uid": uid}}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        return self.objects.get((kind, name))

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Only while it is still the object with ``uid`` (the API server's precondition)."""
        self.calls.append(("delete", kind, name))
        found = self.objects.get((kind, name))
        if found is not None and found["metadata"]["uid"] == uid:
            del self.objects[(kind, name)]

    def patch_status(self, *args: Any) -> None: ...

    def patch_metadata(self, *args: Any) -> None: ...

    def create_event(self, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        self.calls.append(("event", reason, message))


def stable_driver(version: str = "1.0.0") -> Driver:
    """A Driver whose first model is stable and settled."""
    driver = Driver(make_spec(version))
    driver.tick()
    driver.tick(advance=1)
    assert driver.status.phase is Phase.SUCCEEDED
    return driver
