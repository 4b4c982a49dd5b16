"""Shadow through the state machine: the candidate first gets a mirrored copy of live requests (its answers
discarded) and goes live — by the canary steps or one blue-green switch — only if that passed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from model_operator.rollout.machine import analysis_due, role
from model_operator.rollout.types import Command
from model_operator.spec import ModelDeploymentSpec, Phase, Verdict
from tests.unit.operator.machine_helpers import (
    assert_transitions_allowed,
    finish_promotion,
    stable_driver,
    strategy_spec,
)


def shadow(version: str = "2.0.0", blue_green: dict[str, Any] | None = None, **shadow: Any) -> ModelDeploymentSpec:
    strategy = {"type": "Shadow", "shadow": shadow, "blueGreen": blue_green or {}}
    return strategy_spec(version, strategy)


def test_the_shadow_is_sized_for_its_mirror_then_gets_it_and_no_live_traffic() -> None:
    driver = stable_driver()
    driver.spec = shadow(mirrorPercent=30)
    status = driver.tick()
    assert status.phase is Phase.PROGRESSING and not status.step_entered
    assert status.canary_capacity == 30 and status.mirror_percent == 0 and status.canary_weight == 0
    assert driver.last is not None and driver.last.events[0].message == "shadow 2.0.0 started"

    status = driver.tick()
    assert status.step_entered and status.message == "step 1/8: shadow 30%"
    assert status.mirror_percent == 30 and status.canary_weight == 0 and role(status) == "shadow"
    assert driver.last is not None and driver.last.desired is not None
    desired = driver.last.desired
    assert (desired.canary_weight, desired.mirror_percent, desired.canary_capacity) == (0, 30, 30)
    assert desired.track == "canary"
    assert analysis_due(driver.spec, status, driver.now + dt.timedelta(seconds=30)), "mirrored requests are judged"


def test_the_mirror_waits_for_pods_sized_for_it() -> None:
    driver = stable_driver()
    driver.capacity_limit = 50
    driver.spec = shadow()
    for _ in range(4):
        status = driver.tick(Verdict.PASS, advance=30)
        assert status.mirror_percent == 0 and status.canary_capacity == 100 and not status.step_entered
    assert "pods to be available for 100% of requests" in (status.message or "")
    driver.capacity_limit = 100
    assert driver.tick(advance=1).mirror_percent == 100


def test_a_failing_shadow_is_rolled_back_without_ever_going_live() -> None:
    driver = stable_driver()
    driver.start(shadow())
    driver.tick(Verdict.FAIL, advance=30)
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.ROLLED_BACK and status.stable_version == "1.0.0"
    assert status.mirror_percent == 0 and status.canary_weight == 0 and status.canary_capacity == 0
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.mirror_percent == 0 and driver.last.desired.canary_weight == 0
    rolling_back = next(e for e in driver.events if e.reason == "RollingBack")
    assert rolling_back.message.startswith("rolling back shadow 2.0.0: analysis failed 2 times in a row")
    assert all(s.canary_weight == 0 for s in driver.history), "a shadow that failed never answered a user"
    for _ in range(3):
        assert driver.tick(Verdict.PASS, advance=30).phase is Phase.ROLLED_BACK
    assert_transitions_allowed(driver)


def test_a_passing_shadow_goes_live_through_the_canary_steps() -> None:
    driver = stable_driver()
    driver.start(shadow(passingAnalyses=3))
    for passes in (1, 2):
        status = driver.tick(Verdict.PASS, advance=30)
        assert status.step_passes == passes and status.current_step == 0 and status.canary_weight == 0
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.current_step == 1 and status.message == "step 2/8: setWeight 5%"
    assert status.canary_weight == 5 and status.mirror_percent == 0, "live now: the mirror is off"
    entered_live = len(driver.history)
    status = driver.run_until_settled(Verdict.PASS)
    assert status.phase is Phase.SUCCEEDED and status.stable_version == "2.0.0"
    later = driver.history[entered_live - 1 :]
    assert all(s.mirror_percent == 0 for s in later)
    # the candidate's live weights until stable runs its model (then the route moves back, and it goes)
    weights = [s.canary_weight for s in later if s.canary is not None and not s.canary.same_artifact(s.stable)]
    assert sorted(set(weights)) == [5, 25, 50, 100] and weights == sorted(weights)
    assert_transitions_allowed(driver)


def test_a_passing_shadow_then_blue_green_goes_live_by_one_switch() -> None:
    driver = stable_driver()
    driver.start(shadow(then="BlueGreen", mirrorPercent=50, blue_green={"scaleDownDelay": "1m"}))
    assert driver.status.mirror_percent == 50 and driver.status.canary_capacity == 50
    for _ in range(3):
        status = driver.tick(Verdict.PASS, advance=30)
    assert status.current_step == 1 and not status.step_entered, "pods for all traffic first"
    assert status.canary_capacity == 100 and status.canary_weight == 0
    status = driver.tick(advance=1)
    assert (status.canary_weight, status.mirror_percent, status.message) == (100, 0, "step 2/2: switch")
    assert driver.last is not None and driver.last.desired is not None and driver.last.desired.track == "canary"
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.phase is Phase.PROGRESSING, "held for blueGreen.scaleDownDelay"
    assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PROMOTING
    finish_promotion(driver)
    assert_transitions_allowed(driver)


def test_promote_during_the_shadow_jumps_to_the_switch_when_there_is_one() -> None:
    driver = stable_driver()
    driver.start(shadow(then="BlueGreen"))
    status = driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    assert status.phase is Phase.PROGRESSING and status.current_step == 1 and status.stable_version == "1.0.0"
    status = driver.tick(advance=1)
    assert status.canary_weight == 100 and status.mirror_percent == 0


def test_promote_during_a_shadow_then_canary_promotes_and_stops_the_mirror() -> None:
    driver = stable_driver()
    driver.start(shadow())
    status = driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    assert status.phase is Phase.PROMOTING and status.mirror_percent == 0
    status = driver.run_until_settled(Verdict.PASS, step=1)
    assert status.phase is Phase.SUCCEEDED and status.stable_version == "2.0.0"


def test_abort_stops_the_mirror() -> None:
    driver = stable_driver()
    driver.start(shadow())
    status = driver.tick(commands={Command.ABORT: "1"}, advance=1)
    assert status.phase is Phase.ROLLED_BACK and status.aborted
    assert status.mirror_percent == 0 and status.canary_capacity == 0


def test_a_new_model_during_the_shadow_restarts_the_shadow() -> None:
    driver = stable_driver()
    driver.start(shadow())
    driver.tick(Verdict.PASS, advance=30)
    driver.tick(Verdict.PASS, advance=30)
    driver.spec = shadow("3.0.0")
    status = driver.tick(advance=1)
    assert status.canary_version == "3.0.0" and status.current_step == 0 and status.step_passes == 0
    assert status.canary_weight == 0
