"""What happened during the demo, with monotonic timestamps: the one record the live view, the
timeline PNG and the JSON summary are all drawn from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from model_operator.spec import ModelDeploymentStatus


@dataclass(frozen=True)
class Happening:
    """An operator Event (reason, message) as the Reconciler returned it."""

    at: float
    version: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Verdict:
    """One analysis check of one tick."""

    at: float
    version: str
    check: str
    verdict: str
    value: float | None
    limit: str | None
    message: str | None


@dataclass
class Chapter:
    title: str
    version: str
    started: float
    ended: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Tick:
    """The state after one operator tick; ``weight`` is the canary weight in the HTTPRoute."""

    at: float
    phase: str
    weight: int
    step: int
    canary: str | None
    stable: str | None


@dataclass
class Journal:
    started: float = field(default_factory=time.monotonic)
    metrics: str = ""
    notes: list[tuple[float, str]] = field(default_factory=list)
    chapters: list[Chapter] = field(default_factory=list)
    events: list[Happening] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    status: ModelDeploymentStatus | None = None

    def since(self, at: float) -> float:
        """Seconds from the start of the demo to ``at`` (a ``time.monotonic`` value)."""
        return at - self.started

    def note(self, text: str) -> None:
        self.notes.append((time.monotonic(), text))

    def chapter(self) -> Chapter | None:
        return self.chapters[-1] if self.chapters else None

    def ticks_of(self, chapter: Chapter) -> list[Tick]:
        end = chapter.ended if chapter.ended is not None else float("inf")
        return [t for t in self.ticks if chapter.started <= t.at <= end]
