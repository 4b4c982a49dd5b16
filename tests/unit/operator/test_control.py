from __future__ import annotations

import datetime as dt

from model_operator.control import command_patch, render_history, render_status
from model_operator.rollout.types import Command
from model_operator.spec import Verdict
from tests.unit.operator.machine_helpers import Driver, make_spec, strategy_spec


def test_command_patch_is_a_unique_annotation() -> None:
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    assert command_patch(Command.PROMOTE, now) == {
        "metadata": {"annotations": {"modelrollout.io/promote": "2026-11-23T12:00:00+00:00"}}
    }


def test_status_shows_steps_weight_and_analysis() -> None:
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    driver.start(make_spec("2.0.0"))
    driver.tick(Verdict.PASS, advance=30)
    obj = {
        "metadata": {"name": "iris", "namespace": "models"},
        "spec": driver.spec.wire(),
        "status": driver.status.wire(),
    }
    text = render_status(obj)
    assert "Phase:         Progressing" in text
    assert "Canary:        iris 2.0.0" in text
    assert "▶ 2. pause 30s" in text and "✔ 1. setWeight 5%" in text
    assert "✔" in text.split("Analysis")[1]


def render(driver: Driver) -> str:
    meta = {"name": "iris", "namespace": "models"}
    return render_status({"metadata": meta, "spec": driver.spec.wire(), "status": driver.status.wire()})


def test_status_of_a_blue_green_rollout_names_the_preview_and_its_stages() -> None:
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    driver.start(strategy_spec("2.0.0", {"type": "BlueGreen", "blueGreen": {"autoPromote": False}}))
    text = render(driver)
    assert "Strategy:      BlueGreen" in text and "Preview:       iris 2.0.0" in text and "Canary:" not in text
    assert "▶ 1. preview\n    2. preview (until promoted)\n    3. switch" in text
    for _ in range(2):
        driver.tick(Verdict.PASS, advance=30)
    text = render(driver)
    assert "Phase:         Paused" in text and "`modelrollout promote`" in text
    assert "✔ 1. preview\n  ▶ 2. preview (until promoted)\n    3. switch" in text
    assert "Weight:        0%\n" in text


def test_status_of_a_shadow_shows_the_mirrored_share() -> None:
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    driver.start(strategy_spec("2.0.0", {"type": "Shadow", "shadow": {"mirrorPercent": 30}}))
    text = render(driver)
    assert "Strategy:      Shadow" in text and "Shadow:        iris 2.0.0" in text
    assert "Weight:        0% (+30% mirrored)" in text and "▶ 1. shadow 30%" in text


def test_history_is_sorted() -> None:
    rows = [{"time": "2026-11-23T12:00:02", "type": "Normal", "reason": "B", "message": "b"},
            {"time": "2026-11-23T12:00:01", "type": "Normal", "reason": "A", "message": "a"}]  # fmt: skip
    assert render_history(rows).splitlines()[0].endswith("a")
    assert "no events" in render_history([])
