"""Session fixtures for the real rig: one Kubernetes control plane and one Prometheus per test session.

Both start once (a control plane takes seconds, not milliseconds) and are shared; tests isolate themselves
with their own namespaces, jobs and names. Component logs go to one directory that is kept, and named in
the report, whenever a test fails; a fully green session deletes it. A missing rig binary fails the
session with the fix (``make rig``) instead of skipping: a test that cannot run is not a test that passed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from tests.rig import Cluster, Prometheus, RigMissingError

LOG_DIR_KEY = pytest.StashKey[Path]()


class _Startable(Protocol):
    def start(self) -> object: ...


S = TypeVar("S", bound=_Startable)


def _start(server: S) -> S:
    """Start a rig piece; a missing binary fails the test with the fix instead of a traceback."""
    try:
        server.start()
        return server
    except RigMissingError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)


def _kept_logs(config: pytest.Config) -> Path | None:
    """The log directory, if anything was written to it (a missing binary leaves it empty)."""
    path = config.stash.get(LOG_DIR_KEY, None)
    return path if path is not None and path.is_dir() and any(path.iterdir()) else None


def _log_dir(config: pytest.Config) -> Path:
    """One log directory per session, created on first use and remembered in the config's stash."""
    if LOG_DIR_KEY not in config.stash:
        config.stash[LOG_DIR_KEY] = Path(tempfile.mkdtemp(prefix="rig-logs-"))
    return config.stash[LOG_DIR_KEY]


@pytest.fixture(scope="session")
def rig_log_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where every rig component (and anything a test spawns next to it) writes its log."""
    path = _log_dir(request.config)
    yield path
    if request.session.testsfailed == 0 or _kept_logs(request.config) is None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Cluster]:
    """A started control plane with Gateway API and Prometheus Operator CRDs and 3 ready kwok nodes."""
    rig = _start(Cluster(work_dir=tmp_path_factory.mktemp("cluster"), log_dir=rig_log_dir))
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in rig.startup_phases.items())
    print(f"\nrig: control plane ready in {rig.startup_seconds:.1f}s ({phases}) at {rig.server}")
    yield rig
    rig.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (its default ServiceAccount ready), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:63].strip("-_.")
    cluster.create_namespace(name, {"modelrollout.io/test": label})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Prometheus]:
    """A started Prometheus scraping and evaluating every second; targets via ``add_target``."""
    server = _start(Prometheus(work_dir=tmp_path_factory.mktemp("prometheus"), log_dir=rig_log_dir))
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Name the kept log directory in the report of every failing test that used the rig."""
    report = yield
    uses_rig = {"cluster", "prometheus", "rig_log_dir"} & set(getattr(item, "fixturenames", ()))
    logs = _kept_logs(item.config) if report.failed and uses_rig else None
    if logs is not None:
        report.sections.append(("rig logs", f"component logs kept in {logs}"))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    logs = _kept_logs(config)
    if logs is not None:
        terminalreporter.write_line(f"rig: component logs kept in {logs}")
