"""What the state machine reads (Observation) and what it returns (Decision)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from model_operator.spec import CheckResult, ModelRef, Verdict


class Command(StrEnum):
    """Manual control, sent as the annotation ``modelrollout.io/<command>: <unique stamp>``."""

    PROMOTE = "promote"
    """Blue-green (and shadow then blue-green): switch now. Canary: skip the remaining steps, promote now."""
    ABORT = "abort"
    """Roll back to stable now."""
    PAUSE = "pause"
    """Hold at the current step (analysis keeps guarding it)."""
    RESUME = "resume"
    """Continue after a pause."""
    RETRY = "retry"
    """Start the rolled-back canary again from the first step."""


@dataclass(frozen=True)
class AnalysisOutcome:
    """One analysis run: the overall verdict and every check behind it."""

    verdict: Verdict
    results: list[CheckResult]
    taken_at: dt.datetime
    """When it ran; an outcome not newer than ``status.lastAnalysisAt`` was already counted."""


@dataclass(frozen=True)
class Observation:
    """Everything observed before deciding (observe first, then decide)."""

    generation: int
    stable_serving: str | None
    """Digest the stable Deployment is rolled out to and available with; None while it is not ready."""
    traffic_weight: int | None = None
    """Canary weight the traffic router has applied right now (None: unknown)."""
    commands: dict[Command, str] = field(default_factory=dict)
    """Pending commands and their stamps; a stamp already in status is ignored (idempotent)."""
    analysis: AnalysisOutcome | None = None
    """Present only when an analysis was due and ran."""
    canary_serving: str | None = None
    """Digest the canary Deployment is rolled out to and available with; traffic only rises when it
    equals the canary's (no weight is ever sent to pods that cannot answer)."""
    canary_capacity: int = 0
    """Share of requests the candidate's rolled-out, available pods are sized for (0 while not rolled
    out); a stage that gives the candidate more waits for it."""
    canary_track: str = "canary"
    """The track ``canary_serving`` and ``canary_capacity`` were read from; a candidate restarted on another
    track (a changed ``strategy.type``) waits for that track's pods, never trusting the old track's."""


@dataclass(frozen=True)
class Desired:
    """The state the kube adapter must make true; applying it twice is the same as once."""

    stable: ModelRef
    canary: ModelRef | None
    canary_weight: int
    mirror_percent: int = 0
    """Share of live requests also copied to the candidate (shadow), percent."""
    canary_capacity: int = 0
    """Share of requests the candidate's pods must be ready for; at least ``canary_weight``."""
    track: str = "canary"
    """The candidate's track: ``canary`` (canary and shadow) or ``preview`` (blue-green)."""


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    desired: Desired | None
    events: list[Event]
    requeue_after: float
    """Seconds until the next tick is needed."""


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
