"""What the rig's session fixtures share (integration and e2e): one log directory per session, kept and
named whenever a test fails, and starting a rig piece so that a missing binary fails with the fix."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from tests.rig import Cluster, RigMissingError

LOG_DIR_KEY = pytest.StashKey[Path]()
SUMMARY_KEY = pytest.StashKey[bool]()


class _Startable(Protocol):
    def start(self) -> object: ...


S = TypeVar("S", bound=_Startable)


def start_piece(server: S) -> S:
    """Start a rig piece; a missing binary fails the test with the fix instead of a traceback."""
    try:
        server.start()
        return server
    except RigMissingError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)


def kept_logs(config: pytest.Config) -> Path | None:
    """The log directory, if anything was written to it (a missing binary leaves it empty)."""
    path = config.stash.get(LOG_DIR_KEY, None)
    return path if path is not None and path.is_dir() and any(path.iterdir()) else None


def log_dir(config: pytest.Config) -> Path:
    """One log directory per session, created on first use and remembered in the config's stash."""
    if LOG_DIR_KEY not in config.stash:
        config.stash[LOG_DIR_KEY] = Path(tempfile.mkdtemp(prefix="rig-logs-"))
    return config.stash[LOG_DIR_KEY]


def add_logs_section(item: pytest.Item, report: pytest.TestReport, fixtures: set[str]) -> None:
    """Name the kept log directory in the report of a failing test that used one of ``fixtures``."""
    uses_rig = fixtures & set(getattr(item, "fixturenames", ()))
    logs = kept_logs(item.config) if report.failed and uses_rig else None
    if logs is not None:
        report.sections.append(("rig logs", f"component logs kept in {logs}"))


def summarize_logs(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Name the kept log directory once at the end of the session (several conftests may ask)."""
    logs = kept_logs(config)
    if logs is not None and not config.stash.get(SUMMARY_KEY, False):
        config.stash[SUMMARY_KEY] = True
        terminalreporter.write_line(f"rig: component logs kept in {logs}")


@pytest.fixture(scope="session")
def rig_log_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where every rig component (and anything a test spawns next to it) writes its log; deleted after a green
    session, kept otherwise. Conftests import it to offer it."""
    path = log_dir(request.config)
    yield path
    if request.session.testsfailed == 0 or kept_logs(request.config) is None:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def namespace_for_test(
    cluster: Cluster, request: pytest.FixtureRequest, prefix: str, labels: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A fresh namespace for one test, labelled with the test's name (its default ServiceAccount ready), deleted
    afterwards without waiting."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:63].strip("-_.")
    cluster.create_namespace(name, {**(labels or {}), "modelrollout.io/test": label})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
