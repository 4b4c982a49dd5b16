"""Blue-green through the state machine: a dark preview judged by analysis, then one switch held for
``scaleDownDelay`` while the old version is still up, then promotion."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from model_operator.rollout.machine import analysis_due, decide
from model_operator.rollout.types import Command, Observation
from model_operator.spec import ModelDeploymentSpec, Phase, Verdict
from tests.unit.operator.machine_helpers import (
    Driver,
    assert_transitions_allowed,
    finish_promotion,
    make_spec,
    stable_driver,
    strategy_spec,
)


def blue_green(version: str = "2.0.0", **blue_green: Any) -> ModelDeploymentSpec:
    return strategy_spec(version, {"type": "BlueGreen", "blueGreen": blue_green})


def switched(spec: ModelDeploymentSpec) -> Driver:
    """A blue-green rollout of ``spec`` that has just switched all traffic to its preview."""
    driver = stable_driver()
    driver.start(spec)
    for _ in range(spec.strategy.blue_green.passing_analyses):
        driver.tick(Verdict.PASS, advance=30)
    status = driver.tick(advance=1)
    assert status.phase is Phase.PROGRESSING and status.canary_weight == 100 and status.step_entered
    return driver


def test_the_preview_gets_no_live_traffic_and_is_analysed() -> None:
    driver = stable_driver()
    driver.canary_available = False
    driver.spec = blue_green()
    status = driver.tick()
    assert status.phase is Phase.PROGRESSING and not status.step_entered
    assert "waiting for the preview 2.0.0 pods" in (status.message or "")
    later = driver.now + dt.timedelta(minutes=5)
    assert not analysis_due(driver.spec, status, later), "nothing to judge before the preview is up"

    driver.canary_available = True
    status = driver.tick(advance=1)
    assert status.step_entered and status.current_step == 0 and status.message == "step 1/2: preview"
    assert status.canary_weight == 0 and status.mirror_percent == 0 and status.canary_capacity == 0
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.track == "preview" and driver.last.desired.canary_weight == 0
    assert not analysis_due(driver.spec, status, driver.now)
    assert analysis_due(driver.spec, status, driver.now + dt.timedelta(seconds=30)), "judged though it is dark"


def test_the_preview_needs_its_passing_analyses_in_a_row() -> None:
    driver = stable_driver()
    driver.start(blue_green(passingAnalyses=3))
    passes = []
    for verdict in (Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.PASS, Verdict.PASS):
        status = driver.tick(verdict, advance=30)
        assert status.phase is Phase.PROGRESSING and status.current_step == 0 and status.canary_weight == 0
        passes.append(status.step_passes)
    assert passes == [1, 2, 0, 1, 2], "a failure starts the count again"
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.current_step == 1 and status.canary_weight == 0 and status.canary_capacity == 100


def test_inconclusive_analyses_do_not_count_towards_the_switch() -> None:
    driver = stable_driver()
    driver.spec = strategy_spec("2.0.0", {"type": "BlueGreen"}, inconclusiveLimit=10, onNoData="continue")
    driver.tick()
    for _ in range(6):
        status = driver.tick(Verdict.INCONCLUSIVE, advance=30)
        assert status.current_step == 0 and status.canary_weight == 0 and status.step_passes == 0


def test_the_switch_sizes_the_preview_for_all_traffic_before_sending_it() -> None:
    driver = stable_driver()
    driver.start(blue_green())
    driver.capacity_limit = 50  # the preview's pods cannot all come up yet
    driver.tick(Verdict.PASS, advance=30)
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.current_step == 1 and not status.step_entered
    for _ in range(5):
        status = driver.tick(advance=2)
        assert status.phase is Phase.PROGRESSING and status.canary_weight == 0 and status.canary_capacity == 100
        assert status.message == "waiting for the preview 2.0.0 pods to be available for 100% of requests"
        assert driver.last is not None and driver.last.desired is not None
        assert driver.last.desired.canary_capacity == 100 and driver.last.desired.canary_weight == 0
    driver.capacity_limit = 100
    status = driver.tick(advance=2)
    assert status.canary_weight == 100 and status.step_entered and status.message == "step 2/2: switch"


def test_the_switch_is_held_for_the_scale_down_delay_then_promoted() -> None:
    driver = switched(blue_green(scaleDownDelay="2m"))
    switched_at = driver.now
    assert driver.last is not None and 0 < driver.last.requeue_after <= 30
    while driver.now - switched_at < dt.timedelta(minutes=2) - dt.timedelta(seconds=30):
        status = driver.tick(Verdict.PASS, advance=30)
        assert status.phase is Phase.PROGRESSING and status.canary_weight == 100 and status.stable_version == "1.0.0"
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.phase is Phase.PROMOTING and status.canary_weight == 100
    assert status.stable_version == "2.0.0", "the old version is replaced only after the hold"
    status = finish_promotion(driver)
    assert status.phase is Phase.SUCCEEDED and status.canary is None and status.strategy is None
    assert driver.last is not None and driver.last.desired is not None and driver.last.desired.track == "canary"
    assert_transitions_allowed(driver)


def test_a_failing_analysis_extends_the_hold() -> None:
    driver = switched(blue_green(scaleDownDelay="30s"))
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.PROGRESSING and status.consecutive_failures == 1 and status.canary_weight == 100
    assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PROMOTING


def test_a_failure_during_the_hold_switches_back_at_once() -> None:
    driver = switched(strategy_spec("2.0.0", {"type": "BlueGreen"}, failureLimit=1))
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.ROLLING_BACK and status.aborted
    assert status.canary_weight == 0 and status.mirror_percent == 0
    assert status.canary_capacity == 100, "the preview keeps its pods until the router confirms it gets nothing"
    assert status.message is not None and status.message.startswith("rolling back preview 2.0.0")
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.canary_weight == 0 and driver.last.desired.track == "preview"

    # the router still routes to the preview: the rollback is not done until it says 0
    obs = Observation(1, driver.status.stable.digest if driver.status.stable else None, traffic_weight=100)
    _, still = decide(driver.spec, status, obs, driver.now)
    assert still.phase is Phase.ROLLING_BACK and still.canary_weight == 0

    status = driver.tick(advance=1)
    assert status.phase is Phase.ROLLED_BACK and status.stable_version == "1.0.0"
    assert status.canary_capacity == 0, "confirmed off traffic: now the preview shrinks"
    assert_transitions_allowed(driver)


def test_without_auto_promote_the_preview_waits_for_the_promote_command() -> None:
    driver = stable_driver()
    driver.start(blue_green(autoPromote=False))
    driver.tick(Verdict.PASS, advance=30)
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.phase is Phase.PAUSED and status.current_step == 1 and status.canary_weight == 0
    assert "`modelrollout promote`" in (status.message or "") and "switch" in (status.message or "")
    for _ in range(5):
        assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PAUSED, "passes do not switch by themselves"
    assert driver.tick(commands={Command.RESUME: "1"}, advance=1).phase is Phase.PAUSED, "only promote switches"
    assert analysis_due(driver.spec, driver.status, driver.now + dt.timedelta(seconds=30)), "still guarded"

    status = driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    assert status.phase is Phase.PROGRESSING and status.stable_version == "1.0.0"
    assert driver.last is not None and "promoted by user: switching" in [e.message for e in driver.last.events]
    assert status.current_step == 2 and status.canary_weight == 0 and status.canary_capacity == 100
    status = driver.tick(advance=1)
    assert status.canary_weight == 100 and status.step_entered and status.stable_version == "1.0.0"

    status = driver.tick(commands={Command.PROMOTE: "2"}, advance=1)
    assert status.phase is Phase.PROMOTING and status.stable_version == "2.0.0", "a second promote ends the hold"
    finish_promotion(driver)
    assert_transitions_allowed(driver)


def test_a_failing_preview_waiting_for_promotion_is_rolled_back() -> None:
    driver = stable_driver()
    driver.start(blue_green(autoPromote=False))
    driver.tick(Verdict.PASS, advance=30)
    assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PAUSED
    driver.tick(Verdict.FAIL, advance=30)
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.ROLLED_BACK and status.canary_weight == 0, "the router already sent it nothing"
    assert driver.last is not None and [e.reason for e in driver.last.events][-2:] == ["RollingBack", "RolledBack"]
    assert_transitions_allowed(driver)


def test_promote_during_the_preview_jumps_to_the_switch_not_to_the_end() -> None:
    driver = stable_driver()
    driver.start(blue_green())
    status = driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    assert status.phase is Phase.PROGRESSING and status.current_step == 1 and status.stable_version == "1.0.0"
    assert status.canary_weight == 0 and status.canary_capacity == 100
    status = driver.tick(advance=1)
    assert status.phase is Phase.PROGRESSING and status.canary_weight == 100
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.phase is Phase.PROMOTING, "then the usual hold"


def test_abort_during_the_switch_sends_everything_back_to_stable() -> None:
    driver = switched(blue_green(scaleDownDelay="10m"))
    status = driver.tick(commands={Command.ABORT: "1"}, advance=1)
    assert status.phase is Phase.ROLLING_BACK and status.canary_weight == 0 and status.message is not None
    assert "aborted by user" in status.message
    assert driver.tick(advance=1).phase is Phase.ROLLED_BACK


@pytest.mark.parametrize(
    ("strategy", "track"),
    [({"type": "BlueGreen"}, "preview"), ({"type": "Canary"}, "canary"), ({"type": "Shadow"}, "canary")],
)
def test_the_candidate_track_follows_the_strategy(strategy: dict[str, Any], track: str) -> None:
    driver = stable_driver()
    driver.start(strategy_spec("2.0.0", strategy))
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.track == track and driver.last.desired.canary is not None


def test_a_changed_strategy_restarts_the_candidate_from_its_first_stage() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    for _ in range(4):
        driver.tick(Verdict.PASS, advance=30)
    assert driver.status.current_step > 1 and driver.status.canary_weight > 5
    driver.spec = blue_green()
    status = driver.tick(advance=1)
    assert status.phase is Phase.PROGRESSING and status.strategy == "BlueGreen" and status.canary_version == "2.0.0"
    assert status.current_step == 0 and status.canary_weight == 0 and status.step_passes == 0
    assert driver.last is not None and "CanaryReplaced" in [e.reason for e in driver.last.events]
    assert driver.last.desired is not None and driver.last.desired.track == "preview"
    status = driver.tick(advance=1)
    assert status.step_entered and status.message == "step 1/2: preview" and status.canary_weight == 0

    driver.spec = strategy_spec("2.0.0", {"type": "Shadow"})
    status = driver.tick(advance=1)
    assert status.strategy == "Shadow" and status.current_step == 0 and status.canary_weight == 0


def test_a_strategy_change_to_another_track_waits_for_that_tracks_pods() -> None:
    driver = switched(blue_green(scaleDownDelay="10m"))
    # The reconciler observed the preview Deployment (status.strategy is BlueGreen): 2.0.0, sized for 100%.
    # The canary Deployment has not even been asked for, so its Service has no pods.
    driver.spec = make_spec("2.0.0")
    status = driver.tick(advance=1)
    assert status.strategy == "Canary" and status.current_step == 0
    assert status.canary_weight == 0, "live traffic sent to the canary Service before any canary pod exists"
