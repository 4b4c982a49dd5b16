"""The time budget of one tick, so a slow or hung dependency cannot hold a ModelDeployment's daemon forever.

The deadline is cooperative: a blocking call cannot be interrupted from outside its thread, so the tick
checks it between its stages and before every metric query, and the Prometheus provider bounds each request's
timeout by what is left. The clock is injected (monotonic by default), which keeps this pure and testable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class DeadlineExceeded(Exception):
    """The tick ran past its deadline. Not a ``ProviderError``: the analysis must not count it as a verdict;
    the tick fails as a whole and whatever it left undone is redone by the next one (every step is idempotent)."""


@dataclass(frozen=True)
class Deadline:
    """``seconds`` from ``started`` on ``clock``; ``math.inf`` seconds: none."""

    seconds: float
    started: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def start(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(seconds, clock(), clock)

    @classmethod
    def unlimited(cls) -> Deadline:
        return cls(math.inf, 0.0)

    def remaining(self) -> float:
        """Seconds left (negative once past)."""
        return self.seconds - (self.clock() - self.started)

    def check(self, doing: str) -> None:
        """Raise ``DeadlineExceeded`` when no time is left; ``doing`` says where the tick was."""
        if self.remaining() <= 0:
            raise self.exceeded(doing)

    def exceeded(self, doing: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"the tick ran past its {self.seconds:g}s deadline {doing}")
