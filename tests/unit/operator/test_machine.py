from __future__ import annotations

import itertools

import pytest

from model_operator.rollout.machine import TRANSITIONS, IllegalTransition, analysis_due, decide
from model_operator.rollout.plan import stages
from model_operator.rollout.types import Command, Observation
from model_operator.spec import Phase, Verdict
from tests.unit.operator.machine_helpers import Driver, finish_promotion, make_spec, model, stable_driver


def test_first_model_becomes_stable_without_analysis() -> None:
    driver = Driver(make_spec("1.0.0"), stable_available=False)
    assert driver.tick().phase is Phase.INITIALIZING
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.canary is None and driver.last.desired.stable.version == "1.0.0"
    assert driver.tick(advance=1).phase is Phase.INITIALIZING
    driver.stable_available = True
    status = driver.tick(advance=1)
    assert status.phase is Phase.SUCCEEDED and status.stable_version == "1.0.0"


def test_good_canary_walks_every_step_and_becomes_stable() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    status = driver.tick()
    assert status.phase is Phase.PROGRESSING and status.canary_version == "2.0.0"
    assert status.canary_weight == 0 and status.canary_capacity == 5, "pods for the first step before its traffic"
    status = driver.tick()
    assert status.phase is Phase.PROGRESSING and status.canary_weight == 5 and status.step_entered
    weights = []
    for _ in range(40):
        status = driver.tick(Verdict.PASS, advance=30)
        weights.append(status.canary_weight)
        if status.phase is Phase.SUCCEEDED:
            break
    assert status.phase is Phase.SUCCEEDED
    assert status.stable_version == "2.0.0" and status.canary is None and status.canary_weight == 0
    assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]][:4] == [5, 25, 50, 100]
    for before, after in itertools.pairwise(driver.history):
        if after.canary_weight > before.canary_weight:  # the Driver observes the capacity asked for last tick
            assert before.canary_capacity >= after.canary_weight, "traffic rose before the pods were sized for it"
    phases = [s.phase for s in driver.history]
    assert Phase.PROMOTING in phases
    reasons = [e.reason for e in driver.last.events] if driver.last else []
    assert "Succeeded" in reasons


def test_promotion_waits_for_stable_to_run_the_new_model() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    driver.tick()
    driver.stable_available = False
    for _ in range(20):
        driver.tick(Verdict.PASS, advance=30)
    assert driver.status.phase is Phase.PROMOTING and driver.status.canary_weight == 100
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.stable.version == "2.0.0" and driver.last.desired.canary is not None
    driver.stable_available = True
    finish_promotion(driver)


def test_no_traffic_reaches_a_canary_whose_pods_are_not_available() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    driver.canary_available = False
    for _ in range(5):
        status = driver.tick(Verdict.PASS, advance=30)
        assert status.phase is Phase.PROGRESSING and status.canary_weight == 0
    assert "waiting for the canary 2.0.0 pods" in (status.message or "")
    driver.canary_available = True
    assert driver.tick(advance=1).canary_weight == 5


def test_failure_limit_rolls_back_to_weight_zero() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.PROGRESSING and status.consecutive_failures == 1 and status.canary_weight == 5
    status = driver.tick(Verdict.FAIL, advance=30)
    assert status.phase is Phase.ROLLING_BACK and status.canary_weight == 0
    assert status.rollback_started_at == status.first_failure_at
    status = driver.tick(advance=1)
    assert status.phase is Phase.ROLLED_BACK and status.canary_weight == 0
    assert status.stable_version == "1.0.0"
    # it stays rolled back: the spec still names the bad model, which is not retried by itself
    for _ in range(5):
        assert driver.tick(Verdict.PASS, advance=30).phase is Phase.ROLLED_BACK


def test_a_pass_between_failures_resets_the_streak() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    driver.tick()
    driver.tick(Verdict.FAIL, advance=30)
    status = driver.tick(Verdict.PASS, advance=30)
    assert status.consecutive_failures == 0 and status.first_failure_at is None
    assert driver.tick(Verdict.FAIL, advance=30).phase is Phase.PROGRESSING


@pytest.mark.parametrize(
    ("on_no_data", "phase"),
    [("pause", Phase.PAUSED), ("rollback", Phase.ROLLING_BACK), ("continue", Phase.PROGRESSING)],
)
def test_inconclusive_neither_passes_nor_fails_then_on_no_data_decides(on_no_data: str, phase: Phase) -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0", onNoData=on_no_data))
    for _ in range(2):
        status = driver.tick(Verdict.INCONCLUSIVE, advance=30)
        assert status.phase is Phase.PROGRESSING and status.canary_weight == 5 and status.current_step == 0
    assert driver.tick(Verdict.INCONCLUSIVE, advance=30).phase is phase
    assert driver.status.current_step == 0 and driver.status.canary_weight in (0, 5)


def test_prometheus_errors_never_promote() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0", onNoData="continue")
    driver.tick()
    for _ in range(50):
        status = driver.tick(Verdict.ERROR, advance=30)
        assert status.phase is Phase.PROGRESSING and status.canary_weight == 5


def test_data_coming_back_resumes_a_no_data_pause() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0", onNoData="pause"))
    for _ in range(3):
        driver.tick(Verdict.INCONCLUSIVE, advance=30)
    assert driver.status.phase is Phase.PAUSED
    assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PROGRESSING


def test_new_spec_mid_rollout_restarts_from_the_new_canary() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    driver.tick()
    for _ in range(4):
        driver.tick(Verdict.PASS, advance=30)
    assert driver.status.canary_weight > 5
    driver.spec = make_spec("3.0.0")
    status = driver.tick(advance=1)
    assert status.canary_version == "3.0.0" and status.canary_weight == 5 and status.current_step == 0
    assert driver.last is not None and "CanaryReplaced" in [e.reason for e in driver.last.events]


def test_spec_back_to_stable_discards_the_canary() -> None:
    driver = stable_driver()
    driver.spec = make_spec("2.0.0")
    driver.tick()
    driver.tick(Verdict.PASS, advance=30)
    driver.spec = make_spec("1.0.0")
    status = driver.tick(advance=1)
    assert status.canary is not None and status.canary_weight == 0, "the route moves back first"
    assert driver.last is not None and driver.last.desired is not None
    assert driver.last.desired.canary is not None and driver.last.desired.canary_capacity >= 5, "pods kept meanwhile"
    status = driver.tick(advance=1)
    assert status.phase is Phase.SUCCEEDED and status.canary is None and status.canary_weight == 0


def test_spec_equal_to_stable_is_a_no_op() -> None:
    driver = stable_driver()
    before = driver.status.model_copy(deep=True)
    status = driver.tick(Verdict.PASS, advance=30)
    assert status == before
    assert driver.last is not None and driver.last.events == []


def test_retry_restarts_a_rolled_back_canary_once_per_stamp() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    driver.tick(Verdict.FAIL, advance=30)
    driver.tick(Verdict.FAIL, advance=30)
    driver.tick(advance=1)
    assert driver.status.phase is Phase.ROLLED_BACK and driver.status.canary_capacity == 0
    status = driver.tick(commands={Command.RETRY: "a"}, advance=1)
    assert status.phase is Phase.PROGRESSING and status.current_step == 0 and status.canary_weight == 0
    assert status.canary_capacity == 5, "the rolled-back canary shrank: its pods are asked for again first"
    assert driver.tick(advance=1).canary_weight == 5
    driver.tick(Verdict.FAIL, advance=30)
    driver.tick(Verdict.FAIL, advance=30)
    driver.tick(advance=1)
    assert driver.tick(commands={Command.RETRY: "a"}, advance=1).phase is Phase.ROLLED_BACK
    assert driver.tick(commands={Command.RETRY: "b"}, advance=1).phase is Phase.PROGRESSING


def test_manual_abort_promote_pause_resume() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    assert driver.tick(commands={Command.PAUSE: "1"}, advance=1).phase is Phase.PAUSED
    assert driver.tick(Verdict.PASS, advance=30).phase is Phase.PAUSED  # a user pause holds through passes
    assert driver.status.canary_weight == 5
    assert driver.tick(commands={Command.RESUME: "1"}, advance=1).phase is Phase.PROGRESSING
    assert driver.tick(commands={Command.PROMOTE: "1"}, advance=1).phase is Phase.PROMOTING
    # the canary is sized for all traffic, takes it, then stable takes the model
    assert [driver.tick(advance=1).phase for _ in range(2)] == [Phase.PROMOTING, Phase.PROMOTING]
    finish_promotion(driver, advance=1)
    assert driver.status.stable_version == "2.0.0"

    driver.start(make_spec("3.0.0"))
    assert driver.status.canary_weight == 5
    status = driver.tick(commands={Command.ABORT: "1"}, advance=1)
    assert status.phase is Phase.ROLLING_BACK and status.canary_weight == 0 and status.aborted


def test_a_promote_sizes_the_canary_for_all_traffic_before_sending_it() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    driver.capacity_limit = 5  # one pod, and no room for more yet
    status = driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    assert status.phase is Phase.PROMOTING and status.canary_capacity == 100 and status.canary_weight == 5
    assert driver.last is not None and driver.last.desired is not None
    assert (driver.last.desired.canary_capacity, driver.last.desired.canary_weight) == (100, 5)
    for _ in range(5):
        status = driver.tick(advance=2)
        assert status.phase is Phase.PROMOTING and status.canary_weight == 5 and status.stable_version == "1.0.0"
    assert "waiting for the canary 2.0.0 pods to be available for 100% of requests" in (status.message or "")
    driver.capacity_limit = 100
    status = driver.tick(advance=2)
    assert status.canary_weight == 100 and status.stable_version == "1.0.0", "the canary takes all, then stable..."
    status = driver.tick(advance=2)
    assert status.phase is Phase.PROMOTING and status.stable_version == "2.0.0", "...gets the model"
    finish_promotion(driver)


def test_stable_takes_the_model_only_once_the_router_sends_everything_to_the_canary() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    status = driver.tick(advance=2)
    assert status.phase is Phase.PROMOTING and status.canary_weight == 100 and status.stable_version == "1.0.0"
    digest = driver.spec.model.digest
    # the same observation as the tick that raised the weight: the router still reports 5%
    obs = Observation(1, model("1.0.0").digest, traffic_weight=5, canary_serving=digest, canary_capacity=100)
    _, again = decide(driver.spec, status, obs, driver.now)
    assert again.stable_version == "1.0.0", "stable rolled to the new model while it still takes 95% of requests"


def test_a_promotion_waiting_for_stable_does_not_say_it_waits_for_the_canary() -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    driver.stable_available = False
    driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
    for _ in range(3):
        status = driver.tick(advance=2)
    assert status.phase is Phase.PROMOTING and status.canary_weight == 100 and status.stable_version == "2.0.0"
    assert "waiting for the canary" not in (status.message or ""), "the canary is ready: stable is rolling out"


def test_indefinite_pause_step_waits_for_promotion() -> None:
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]
    driver.spec = make_spec("2.0.0").model_copy(
        update={"strategy": make_spec().strategy.model_validate({"canary": {"steps": steps}})}
    )
    driver.tick()
    status = driver.run_until_settled(Verdict.PASS)
    assert status.phase is Phase.PAUSED and status.current_step == 1 and status.canary_weight == 10
    assert driver.tick(commands={Command.RESUME: "go"}, advance=1).phase is Phase.PAUSED  # still an unbounded pause
    assert driver.tick(commands={Command.PROMOTE: "go"}, advance=1).phase is Phase.PROMOTING


def test_analysis_is_due_once_per_interval_only_with_canary_traffic() -> None:
    driver = stable_driver()
    assert not analysis_due(driver.spec, driver.status, driver.now)
    driver.spec = make_spec("2.0.0")
    driver.tick()
    assert not analysis_due(driver.spec, driver.status, driver.now)
    driver.tick(Verdict.PASS, advance=30)
    assert not analysis_due(driver.spec, driver.status, driver.now)
    assert analysis_due(driver.spec, driver.status, driver.now + __import__("datetime").timedelta(seconds=30))


def test_step_weight_is_the_last_set_weight() -> None:
    spec = make_spec()
    assert [stage.weight for stage in stages(spec)] == [5, 5, 25, 25, 50, 50, 100]


def test_every_observed_transition_is_allowed() -> None:
    driver = stable_driver()
    for version, verdict in (("2.0.0", Verdict.PASS), ("3.0.0", Verdict.FAIL)):
        driver.spec = make_spec(version)
        driver.run_until_settled(verdict)
    phases = [None, *[s.phase for s in driver.history]]
    for before, after in itertools.pairwise(phases):
        if before != after:
            assert after in TRANSITIONS[before], (before, after)


def test_models_compare_by_artifact() -> None:
    assert model("1.0.0").same_artifact(model("1.0.0"))
    assert not model("1.0.0").same_artifact(model("1.0.0", digit="9"))


def test_a_canary_running_under_a_status_without_strategy_carries_on() -> None:
    """An operator upgraded mid-rollout reads a status written before strategies existed: no restart."""
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    status = driver.tick(Verdict.PASS, advance=30)
    before = status.model_copy(deep=True)
    driver.status = status.model_copy(update={"strategy": None})
    after = driver.tick(advance=1)
    assert after.canary_version == "2.0.0" and after.current_step >= before.current_step
    assert after.canary_weight >= before.canary_weight, "the canary kept its traffic"
    assert driver.last is not None and "CanaryReplaced" not in [e.reason for e in driver.last.events]


def test_the_state_machine_refuses_a_transition_the_table_does_not_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = stable_driver()
    driver.start(make_spec("2.0.0"))
    allowed = {**TRANSITIONS, Phase.PROGRESSING: TRANSITIONS[Phase.PROGRESSING] - {Phase.PROMOTING}}
    monkeypatch.setattr("model_operator.rollout.machine.TRANSITIONS", allowed)
    with pytest.raises(IllegalTransition, match="Progressing → Promoting"):
        driver.tick(commands={Command.PROMOTE: "1"}, advance=1)
