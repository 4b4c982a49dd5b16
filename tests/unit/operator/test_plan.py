"""Every strategy as one list of stages (``rollout.plan``), and the strategy section of the spec."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from model_operator.crdgen import render
from model_operator.rollout.plan import UNTIL_PROMOTED, Stage, candidate_track, stages, switch_index
from model_operator.spec import ROUTED_STRATEGIES_MESSAGE, ROUTED_STRATEGIES_RULE, ModelDeploymentSpec
from tests.unit.operator.machine_helpers import make_spec, strategy_spec

STEPS = [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 60}, {"pause": {}}, {"setWeight": 100}]


def test_default_canary_stages_are_its_steps() -> None:
    assert stages(make_spec()) == [
        Stage("setWeight 5%", 5, passes=1),
        Stage("pause 30s", 5, hold=30.0),
        Stage("setWeight 25%", 25, passes=1),
        Stage("pause 30s", 25, hold=30.0),
        Stage("setWeight 50%", 50, passes=1),
        Stage("pause 30s", 50, hold=30.0),
        Stage("setWeight 100%", 100, passes=1),
    ]


def test_canary_stages_follow_the_steps_one_to_one() -> None:
    plan = stages(strategy_spec("1.0.0", {"canary": {"steps": STEPS}}))
    assert len(plan) == len(STEPS)
    assert [(s.name, s.weight, s.passes, s.hold) for s in plan] == [
        ("setWeight 10%", 10, 1, None),
        ("pause 1m", 10, 0, 60.0),
        ("setWeight 60%", 60, 1, None),
        ("pause (until promoted)", 60, 0, UNTIL_PROMOTED),
        ("setWeight 100%", 100, 1, None),
    ]
    assert all(s.mirror == 0 and s.analysed and s.capacity == s.weight for s in plan)


def test_a_pause_before_any_weight_is_not_analysed() -> None:
    plan = stages(strategy_spec("1.0.0", {"canary": {"steps": [{"pause": {"duration": "10s"}}, {"setWeight": 100}]}}))
    assert plan[0] == Stage("pause 10s", 0, hold=10.0, analysed=False), "no requests reach the canary yet"


def test_blue_green_previews_then_switches_and_holds() -> None:
    plan = stages(strategy_spec("1.0.0", {"type": "BlueGreen", "blueGreen": {"passingAnalyses": 3}}))
    assert plan == [Stage("preview", 0, passes=3), Stage("switch", 100, hold=30.0)]
    assert [s.capacity for s in plan] == [0, 100], "the preview's size is its own; the switch needs all of it"


def test_blue_green_without_auto_promote_waits_for_the_promote_command() -> None:
    spec = strategy_spec("1.0.0", {"type": "BlueGreen", "blueGreen": {"autoPromote": False, "scaleDownDelay": "5m"}})
    plan = stages(spec)
    assert plan == [
        Stage("preview", 0, passes=2),
        Stage("preview (until promoted)", 0, hold=UNTIL_PROMOTED),
        Stage("switch", 100, hold=300.0),
    ]
    assert plan[1].analysed, "analysis keeps guarding a preview waiting for its promotion"


@pytest.mark.parametrize(("mirror", "passes"), [(100, 3), (30, 5)])
def test_shadow_then_canary_mirrors_first_then_walks_the_canary_steps(mirror: int, passes: int) -> None:
    shadow = {"mirrorPercent": mirror, "passingAnalyses": passes}
    plan = stages(strategy_spec("1.0.0", {"type": "Shadow", "shadow": shadow, "canary": {"steps": STEPS}}))
    assert plan[0] == Stage(f"shadow {mirror}%", 0, mirror=mirror, passes=passes)
    assert plan[0].capacity == mirror, "pods sized for the mirrored requests"
    assert plan[1:] == stages(strategy_spec("1.0.0", {"canary": {"steps": STEPS}}))
    assert all(s.mirror == 0 for s in plan[1:]), "the mirror stops once the candidate is live"


def test_shadow_then_blue_green_mirrors_then_switches() -> None:
    strategy = {"type": "Shadow", "shadow": {"then": "BlueGreen"}, "blueGreen": {"scaleDownDelay": "2m"}}
    plan = stages(strategy_spec("1.0.0", strategy))
    assert plan == [Stage("shadow 100%", 0, mirror=100, passes=3), Stage("switch", 100, hold=120.0)]


def test_switch_index_finds_the_switch_at_or_after_a_stage() -> None:
    plan = stages(strategy_spec("1.0.0", {"type": "BlueGreen", "blueGreen": {"autoPromote": False}}))
    assert [switch_index(plan, i) for i in range(len(plan))] == [2, 2, 2]
    assert switch_index(stages(make_spec()), 0) is None, "a canary has no switch: promote goes all the way"


@pytest.mark.parametrize(
    ("strategy", "track"), [("BlueGreen", "preview"), ("Canary", "canary"), ("Shadow", "canary"), (None, "canary")]
)
def test_candidate_track(strategy: str | None, track: str) -> None:
    assert candidate_track(strategy) == track


# --- the strategy section of the spec -----------------------------------------------------------------------


def test_strategy_defaults() -> None:
    strategy = make_spec().strategy
    assert strategy.type == "Canary"
    assert strategy.blue_green.wire() == {"autoPromote": True, "passingAnalyses": 2, "scaleDownDelay": "30s"}
    assert strategy.blue_green.preview_replicas is None
    assert strategy.shadow.wire() == {"mirrorPercent": 100, "passingAnalyses": 3, "then": "Canary"}


@pytest.mark.parametrize("strategy", ["BlueGreen", "Shadow"])
def test_blue_green_and_shadow_need_a_request_router(strategy: str) -> None:
    wire = {**make_spec().wire(), "strategy": {"type": strategy}}
    with pytest.raises(ValidationError, match="gatewayAPI or istio"):
        ModelDeploymentSpec.model_validate({**wire, "traffic": {"provider": "replicas"}})
    for provider in ("gatewayAPI", "istio"):
        assert ModelDeploymentSpec.model_validate({**wire, "traffic": {"provider": provider}}).strategy.type == strategy
    canary = {**wire, "strategy": {"type": "Canary"}, "traffic": {"provider": "replicas"}}
    assert ModelDeploymentSpec.model_validate(canary).traffic.provider == "replicas"


def test_the_crd_refuses_routed_strategies_with_the_replicas_provider_too() -> None:
    crd = yaml.safe_load(render())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": ROUTED_STRATEGIES_RULE, "message": ROUTED_STRATEGIES_MESSAGE} in schema["x-kubernetes-validations"]
    assert "gatewayAPI or istio" in ROUTED_STRATEGIES_MESSAGE


@pytest.mark.parametrize(
    ("strategy", "field"),
    [
        pytest.param({"type": "Linear"}, ("type",), id="unknown-type"),
        pytest.param({"shadow": {"mirrorPercent": 0}}, ("shadow", "mirrorPercent"), id="mirror-0"),
        pytest.param({"shadow": {"mirrorPercent": 101}}, ("shadow", "mirrorPercent"), id="mirror-101"),
        pytest.param({"shadow": {"then": "Shadow"}}, ("shadow", "then"), id="shadow-then-shadow"),
        pytest.param({"blueGreen": {"passingAnalyses": 0}}, ("blueGreen", "passingAnalyses"), id="no-passes"),
        pytest.param({"blueGreen": {"scaleDownDelay": "soon"}}, ("blueGreen", "scaleDownDelay"), id="bad-delay"),
        pytest.param({"blueGreen": {"previewReplicas": 0}}, ("blueGreen", "previewReplicas"), id="no-preview-pods"),
        pytest.param({"blueGreen": {"autoPromot": False}}, ("blueGreen", "autoPromot"), id="typo"),
    ],
)
def test_bad_strategies_are_refused(strategy: dict[str, Any], field: tuple[str, ...]) -> None:
    """Refused for the field at fault, not for anything else that might be wrong with the spec."""
    with pytest.raises(ValidationError) as refused:
        strategy_spec("1.0.0", strategy)
    assert [error["loc"] for error in refused.value.errors()] == [("strategy", *field)]
