from __future__ import annotations

import datetime as dt

from model_operator.control import command_patch, render_history, render_status
from model_operator.rollout.types import Command
from model_operator.spec import Verdict
from tests.unit.operator.machine_helpers import Driver, make_spec


def test_command_patch_is_a_unique_annotation() -> None:
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    assert command_patch(Command.PROMOTE, now) == {
        "metadata": {"annotations": {"modelrollout.io/promote": "2026-11-23T12:00:00+00:00"}}
    }


def test_status_shows_steps_weight_and_analysis() -> None:
    driver = Driver(make_spec("1.0.0"))
    driver.tick()
    driver.tick(advance=1)
    driver.spec = make_spec("2.0.0")
    driver.tick()
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


def test_history_is_sorted() -> None:
    rows = [{"time": "2026-11-23T12:00:02", "type": "Normal", "reason": "B", "message": "b"},
            {"time": "2026-11-23T12:00:01", "type": "Normal", "reason": "A", "message": "a"}]  # fmt: skip
    assert render_history(rows).splitlines()[0].endswith("a")
    assert "no events" in render_history([])
