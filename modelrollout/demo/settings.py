"""The demo's knobs: which metrics backend, and the timings of a normal and a ``--fast`` run.

Light on imports on purpose: the CLI imports this module when it starts, the rest only on ``demo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class MetricsBackend(StrEnum):
    """Where the analysis' PromQL is answered."""

    AUTO = "auto"
    """A real Prometheus when one is installed (PATH or $RIG_DIR/bin), else in-process scraping."""
    PROMETHEUS = "prometheus"
    """A real Prometheus, or stop with an error."""
    SCRAPE = "scrape"
    """In-process scraping of the servers' /metrics, evaluating the analysis' PromQL shapes."""


@dataclass(frozen=True)
class Profile:
    """Timings of one run. The shipped operator defaults are interval 20s, window 1m: the demo runs the
    same state machine ten times faster so the story fits in minutes."""

    name: str
    interval: str
    """analysis.interval: time between analyses."""
    window: str
    """analysis.window: the PromQL rate window."""
    pause: str
    """Duration of the pause steps between the setWeight steps 5 → 25 → 50 → 100."""
    min_requests: int
    """analysis.minRequests: fewer canary requests in the window is inconclusive."""
    rate: float
    """Requests per second the load generator sends, in total (bounded, loopback only)."""
    tick: float
    """Seconds between operator ticks (the operator's own ceiling is 5 s)."""
    chapter_timeout: float
    """A chapter (v1 stable, v2 canary, v3 canary) that takes longer than this fails the demo."""
    settle: float
    """Seconds of traffic after the rollback, so the timeline shows stable taking everything back."""


NORMAL = Profile("normal", interval="2s", window="8s", pause="3s", min_requests=8, rate=50.0, tick=0.5,
                 chapter_timeout=120.0, settle=4.0)  # fmt: skip
FAST = Profile("fast", interval="1s", window="5s", pause="1s", min_requests=5, rate=50.0, tick=0.25,
               chapter_timeout=90.0, settle=2.0)  # fmt: skip
DEFAULT_OUT = Path("build/demo")


@dataclass(frozen=True)
class DemoOptions:
    out: Path = DEFAULT_OUT
    fast: bool = False
    metrics: MetricsBackend = MetricsBackend.AUTO
    live: bool | None = None
    """Rich live view; None: when stdout is a terminal (CI gets plain progress lines)."""

    @property
    def profile(self) -> Profile:
        return FAST if self.fast else NORMAL
