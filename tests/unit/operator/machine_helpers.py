"""A tiny driver for the pure state machine: one call is one operator tick."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from model_operator.rollout.machine import analysis_due, decide
from model_operator.rollout.types import AnalysisOutcome, Command, Decision, Observation
from model_operator.spec import CheckResult, ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, Verdict

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


def outcome(verdict: Verdict, at: dt.datetime) -> AnalysisOutcome:
    return AnalysisOutcome(verdict, [CheckResult(time=at.isoformat(), check="slo", verdict=verdict)], at)


@dataclass
class Driver:
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: dt.datetime = T0
    stable_available: bool = True
    canary_available: bool = True
    last: Decision | None = None
    history: list[ModelDeploymentStatus] = field(default_factory=list)

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
        capacity = self.status.canary_capacity if self.canary_available else 0
        obs = Observation(1, serving, self.status.canary_weight, commands or {}, analysis, canary, capacity)
        self.last, self.status = decide(self.spec, self.status, obs, self.now)
        self.history.append(self.status)
        return self.status

    def run_until_settled(self, verdict: Verdict, limit: int = 200, step: float = 30) -> ModelDeploymentStatus:
        for _ in range(limit):
            self.tick(verdict, advance=step)
            if self.status.phase is not None and self.status.phase.value in ("Succeeded", "RolledBack", "Paused"):
                return self.status
        return self.status
