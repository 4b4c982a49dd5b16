"""Fixtures shared by unit and integration tests: trained example bundles, model-server processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_server.bundle import ModelManifest
from model_server.training import load_config, train
from tests.support.servers import REPO, ServerProcess

EXAMPLES = REPO / "examples"
# The rig tiers' shared session fixture (rig_log_dir) and helpers; only the root conftest may name plugins.
pytest_plugins = ["tests.support.rig_session"]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every example config trained once per session: name (file stem) → bundle directory."""
    root = tmp_path_factory.mktemp("bundles")
    out: dict[str, Path] = {}
    for config in sorted(EXAMPLES.glob("*.yaml")):
        train(load_config(config), root / config.stem)
        out[config.stem] = root / config.stem
    return out


@pytest.fixture(scope="session")
def manifests(bundles: dict[str, Path]) -> dict[str, ModelManifest]:
    return {
        name: ModelManifest.model_validate_json((path / "model.json").read_bytes()) for name, path in bundles.items()
    }


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(bundle_uri, *args)`` → a ready server; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(bundle_uri: str, *args: str) -> ServerProcess:
        server = ServerProcess(bundle_uri, tmp_path / f"server-{len(started)}.log", args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for server in started:
            print(f"--- {server.log_path}\n{server.log()[-4000:]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{call.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what tests measured (``user_properties`` named "measured"), e.g. rollback latency."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name == "measured":
                terminalreporter.write_line(f"measured: {value}")
