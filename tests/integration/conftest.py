"""Session fixtures for the real rig: one Kubernetes control plane and one Prometheus per test session.

Both start once (a control plane takes seconds, not milliseconds) and are shared; tests isolate themselves
with their own namespaces, jobs and names. Component logs go to one directory that is kept, and named in
the report, whenever a test fails; a fully green session deletes it. A missing rig binary fails the
session with the fix (``make rig``) instead of skipping: a test that cannot run is not a test that passed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.rig import Cluster, Prometheus
from tests.support.rig_session import add_logs_section, namespace_for_test, start_piece, summarize_logs
from tests.support.servers import ServerProcess


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Cluster]:
    """A started control plane with Gateway API and Prometheus Operator CRDs and 3 ready kwok nodes."""
    rig = start_piece(Cluster(work_dir=tmp_path_factory.mktemp("cluster"), log_dir=rig_log_dir))
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in rig.startup_phases.items())
    print(f"\nrig: control plane ready in {rig.startup_seconds:.1f}s ({phases}) at {rig.server}")
    yield rig
    rig.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (its default ServiceAccount ready), deleted afterwards."""
    with namespace_for_test(cluster, request, "t") as name:
        yield name


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, rig_log_dir: Path) -> Iterator[Prometheus]:
    """A started Prometheus scraping and evaluating every second; targets via ``add_target``."""
    server = start_piece(Prometheus(work_dir=tmp_path_factory.mktemp("prometheus"), log_dir=rig_log_dir))
    yield server
    server.stop()


RIG_FIXTURES = {"cluster", "prometheus", "rig_log_dir"}


@pytest.fixture(scope="module")
def iris(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One stable iris server for the read-mostly tests of a module."""
    log = tmp_path_factory.mktemp("iris-server") / "server.log"
    server = ServerProcess(f"file://{bundles['iris-v1']}", log, ("--max-batch-rows", "50")).start()
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Name the kept log directory in the report of every failing test that used the rig."""
    report = yield
    add_logs_section(item, report, RIG_FIXTURES)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    summarize_logs(terminalreporter, config)
