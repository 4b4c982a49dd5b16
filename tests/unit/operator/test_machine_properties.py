"""Invariants of the state machine over random rollouts (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from model_operator.rollout.machine import decide
from model_operator.rollout.types import Command, Observation
from model_operator.spec import Phase, Verdict
from tests.unit.operator.machine_helpers import Driver, make_spec, outcome, strategy_spec

ticks = st.lists(
    st.tuples(
        st.sampled_from([None, *Verdict]),
        st.one_of(st.none(), st.sampled_from(list(Command))),
        st.floats(0, 90),
        st.sampled_from(["2.0.0", "2.0.0", "2.0.0", "3.0.0", "1.0.0"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)
strategies = st.sampled_from(
    [
        {"type": "Canary"},
        {"type": "BlueGreen"},
        {"type": "BlueGreen", "blueGreen": {"autoPromote": False, "passingAnalyses": 1}},
        {"type": "Shadow"},
        {"type": "Shadow", "shadow": {"mirrorPercent": 30, "passingAnalyses": 1, "then": "BlueGreen"}},
    ]
)


def rollout(
    driver: Driver,
    plan: list[tuple[Verdict | None, Command | None, float, str, bool]],
    strategy: dict[str, object] | None = None,
) -> None:
    promoted = False  # by the user, since the current candidate started
    for i, (verdict, command, advance, version, available) in enumerate(plan):
        driver.spec = strategy_spec(version, strategy or {}, onNoData="continue" if i % 2 else "pause")
        driver.stable_available = available
        before = driver.status.model_copy(deep=True)
        status = driver.tick(verdict, {command: str(i)} if command else None, advance)
        same_attempt = status.canary == before.canary and status.phase is not Phase.ROLLED_BACK
        promoted = (promoted and same_attempt) or command is Command.PROMOTE
        check_invariants(before, status, promoted, driver.spec.model.same_artifact(status.stable))


def check_invariants(before, status, promoted, spec_is_stable=False) -> None:  # type: ignore[no-untyped-def]
    assert 0 <= status.canary_weight <= 100
    assert status.canary_capacity >= max(status.canary_weight, status.mirror_percent), "pods sized before traffic"
    if status.canary_weight > before.canary_weight:  # the Driver observes the capacity asked for last tick
        assert before.canary_capacity >= status.canary_weight, "traffic rose before the pods were sized for it"
    assert status.mirror_percent == 0 or status.canary_weight == 0, "a shadow is never live at the same time"
    if status.strategy == "BlueGreen":
        assert status.canary_weight in (0, 100), "a preview is dark until the switch"
    if status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        assert status.canary_weight == 0 and status.mirror_percent == 0
    same_canary = before.canary is not None and status.canary is not None and before.canary == status.canary
    leaving = (
        status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK)
        or spec_is_stable  # the spec went back to stable: the candidate is discarded
        or (status.canary is not None and status.canary.same_artifact(status.stable))  # promoted: traffic goes home
    )
    if same_canary and not leaving:
        assert status.canary_weight >= before.canary_weight, "weight only rises except on the way out"
    routed = before.canary_weight  # the Driver's router applied last tick's weight: this tick it still sends it
    if before.canary is not None and routed:
        assert status.canary is not None, "the candidate was discarded while the router still sent it requests"
        if status.canary == before.canary:
            assert status.canary_capacity >= routed, "the candidate's pods shrank below the share it still gets"
    if status.phase is Phase.PROMOTING and before.phase is not Phase.PROMOTING and not promoted:
        assert status.consecutive_failures == 0
        assert status.analysis and status.analysis[-1].verdict is Verdict.PASS, "never promote past a failed analysis"
    if status.phase is Phase.SUCCEEDED:
        assert status.canary is None and status.canary_weight == 0 and status.mirror_percent == 0


@settings(max_examples=300, deadline=None)
@given(plan=ticks, strategy=strategies)
def test_invariants_hold_over_random_rollouts(plan, strategy) -> None:  # type: ignore[no-untyped-def]
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    rollout(driver, plan, strategy)


@settings(max_examples=300, deadline=None)
@given(
    plan=ticks, verdict=st.sampled_from(list(Verdict)), command=st.sampled_from([None, *Command]), strategy=strategies
)
def test_applying_the_same_observation_twice_changes_nothing(plan, verdict, command, strategy) -> None:  # type: ignore[no-untyped-def]
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    rollout(driver, plan, strategy)
    serving = driver.status.stable.digest if driver.status.stable else None
    obs = Observation(
        1,
        serving,
        driver.status.canary_weight,
        {command: "same"} if command else {},
        outcome(verdict, driver.now),
        driver.status.canary.digest if driver.status.canary else None,
    )
    _, once = decide(driver.spec, driver.status, obs, driver.now)
    decision, twice = decide(driver.spec, once, obs, driver.now)
    assert twice.model_dump() == once.model_dump(), {
        k: (v, twice.model_dump()[k]) for k, v in once.model_dump().items() if twice.model_dump()[k] != v
    }
    assert decision.events == []
