"""The demo's resource and its failure modes: one clear error, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from model_operator.spec import ModelDeploymentSpec, ModelRef
from modelrollout.demo import story
from modelrollout.demo.settings import FAST, NORMAL, DemoOptions, Profile
from modelrollout.demo.view import PlainView

MODEL = ModelRef(name="iris", version="2.0.0", uri="file:///b/iris-2.0.0/", digest="sha256:" + "2" * 64)


@pytest.mark.parametrize("profile", [NORMAL, FAST], ids=lambda p: p.name)
def test_the_demo_applies_a_valid_model_deployment(profile: Profile) -> None:
    spec = ModelDeploymentSpec.model_validate(story.model_deployment(MODEL, profile, "http://127.0.0.1:9090")["spec"])
    assert spec.strategy.canary.weights == [5, 25, 50, 100]
    assert spec.analysis.interval == profile.interval and spec.analysis.window == profile.window
    assert spec.analysis.prometheus.address == "http://127.0.0.1:9090"
    assert spec.traffic.provider == "gatewayAPI"


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (RuntimeError("boom"), story.DemoError, "demo failed: RuntimeError: boom"),
        (KeyboardInterrupt(), story.DemoInterrupted, "demo interrupted: every process it started is stopped"),
        (story.DemoError("clear"), story.DemoError, "clear"),
    ],
)
def test_failures_become_one_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    expected: type[Exception],
    message: str,
) -> None:
    stopped: list[str] = []

    def run(self: story.Story) -> None:
        self.stack.callback(stopped.append, "cleanup ran")
        raise raised

    monkeypatch.setattr(story.Story, "run", run)
    monkeypatch.setattr(story, "make_view", lambda live: PlainView(io.StringIO()))
    with pytest.raises(expected, match=message):
        story.run_demo(DemoOptions(out=tmp_path / "out"))
    assert stopped == ["cleanup ran"]
    if isinstance(raised, RuntimeError):
        assert "Traceback" in (tmp_path / "out" / "demo.log").read_text(), "the details are in the log"


def test_an_unusable_out_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(story.DemoError, match="cannot use --out"):
        story.run_demo(DemoOptions(out=tmp_path / "file"))
