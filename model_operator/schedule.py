"""When a ModelDeployment's next tick runs, and what a failed tick does: the one error policy, as data and
pure functions. ``tick.run_once`` applies it; kopf's daemon, the demo and the test fakes all call that.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model_operator.settings import OperatorSettings

MIN_WAIT_SECONDS = 0.2
"""No tick follows the last sooner than this, whatever the state machine asks."""


class Failure(StrEnum):
    """Why a tick did not complete; the value is the reason of the Event that reports it."""

    API = "KubernetesAPIError"
    """The Kubernetes API failed or timed out: logged, retried with backoff; nothing is written or posted, since
    talking to the API is what fails."""
    PROVIDER = "MetricProviderFailed"
    """The metric provider failed outside a check — a ``ProviderError`` no check caught (no provider for the
    address), or a ``ProviderFault`` (anything else it raised): ``.status.reconcileError`` and a Warning Event
    say why; retried with backoff. A ``ProviderError`` inside a check is not this: the check records an Error
    verdict and the tick completes."""
    DEADLINE = "TickDeadlineExceeded"
    """The analysis ran past ``tick_deadline_seconds``: its outcome is dropped (it counts as nothing), reported
    and retried like ``PROVIDER``."""
    INVALID_SPEC = "InvalidSpec"
    """The spec does not validate: phase Failed with the problems as message and reason; looked at again after
    the idle interval (a fixed spec is picked up then)."""


REPORTED = frozenset({Failure.PROVIDER, Failure.DEADLINE, Failure.INVALID_SPEC})
"""Failures written to ``.status`` and posted as an Event (once per distinct reason, not every retry)."""


@dataclass(frozen=True)
class TickTimings:
    active: float
    """Longest wait between ticks of an active rollout (``max_tick_seconds``): bounds spec-change latency."""
    idle: float
    """Wait between ticks of a settled ModelDeployment (``idle_tick_seconds``)."""
    deadline: float
    """What one tick's analysis may take (``tick_deadline_seconds``), so a hung provider cannot hold the
    ModelDeployment's daemon."""
    backoff_limit: float = 60.0
    """Longest wait after failed ticks in a row: the first failure waits ``active``, each next one twice as
    long, up to this — a thousand daemons must not hammer an API server or a Prometheus that is struggling."""

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> TickTimings:
        return cls(settings.max_tick_seconds, settings.idle_tick_seconds, settings.tick_deadline_seconds)


def next_tick(timings: TickTimings, requeue_after: float, settled: bool) -> float:
    """Seconds until the tick after one that completed: when the state machine wants it (``requeue_after``),
    but never later than the active or idle interval, never sooner than ``MIN_WAIT_SECONDS``."""
    ceiling = timings.idle if settled else timings.active
    return max(min(requeue_after, ceiling), MIN_WAIT_SECONDS)


def after_failure(timings: TickTimings, failure: Failure, failures: int) -> float:
    """Seconds until the tick after a failed one; ``failures``: failed ticks in a row, this one included."""
    if failure is Failure.INVALID_SPEC:
        return timings.idle
    limit = max(timings.backoff_limit, timings.active)
    return float(min(timings.active * 2 ** min(max(failures - 1, 0), 30), limit))
