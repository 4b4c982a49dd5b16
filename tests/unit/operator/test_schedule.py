"""The one error policy's timing, as pure functions: when the next tick runs after one that completed and after
one that failed; and the settings it comes from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model_operator.schedule import MIN_WAIT_SECONDS, Failure, TickTimings, after_failure, next_tick
from model_operator.settings import OperatorSettings

TABLE = TickTimings(active=5.0, idle=15.0, deadline=10.0, backoff_limit=60.0)


@pytest.mark.parametrize(
    ("requeue_after", "settled", "expected"),
    [(300.0, True, 15.0), (300.0, False, 5.0), (2.0, False, 2.0), (0.01, False, MIN_WAIT_SECONDS), (3, True, 3.0)],
)
def test_after_a_completed_tick(requeue_after: float, settled: bool, expected: float) -> None:
    assert next_tick(TABLE, requeue_after, settled) == expected


@pytest.mark.parametrize(
    ("failure", "failures", "expected"),
    [
        (Failure.API, 1, 5.0),
        (Failure.API, 2, 10.0),
        (Failure.PROVIDER, 3, 20.0),
        (Failure.DEADLINE, 4, 40.0),
        (Failure.DEADLINE, 5, 60.0),
        (Failure.API, 10_000, 60.0),
        (Failure.INVALID_SPEC, 7, 15.0),
    ],
)
def test_after_a_failed_tick(failure: Failure, failures: int, expected: float) -> None:
    assert after_failure(TABLE, failure, failures) == expected


def test_the_backoff_never_waits_less_than_the_active_interval() -> None:
    assert after_failure(TickTimings(active=90.0, idle=90.0, deadline=10.0), Failure.API, 1) == 90.0


def test_settings_give_the_timings_and_a_query_must_fit_in_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = OperatorSettings()
    assert (settings.prometheus_timeout_seconds, settings.tick_deadline_seconds) == (5.0, 10.0)
    assert TickTimings.from_settings(settings) == TickTimings(5.0, 15.0, 10.0)
    monkeypatch.setenv("MODELROLLOUT_PROMETHEUS_TIMEOUT_SECONDS", "10")
    with pytest.raises(ValidationError, match=r"prometheus_timeout_seconds \(10.0\) must be less than tick_dead"):
        OperatorSettings()
