"""``make demo-cluster`` (``python -m tests.rig.demo_cluster``) as a user runs it: the whole story on the rig's
real node behind Traefik, told through ``kubectl get md -w``, and a clear stop when the rig is missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.rig import paths
from tests.rig.demo_cluster import PREFIX_MD
from tests.support.servers import REPO, processes_mentioning

pytestmark = pytest.mark.e2e
PHASES = {"Initializing", "Progressing", "Paused", "Promoting", "Succeeded", "RollingBack", "RolledBack"}
DEMO = [sys.executable, "-m", "tests.rig.demo_cluster"]


def run_demo(*args: str, rig_dir: Path, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [*DEMO, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "RIG_DIR": str(rig_dir), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    return result, time.monotonic() - started


def watch_rows(stdout: str) -> list[tuple[str, list[str]]]:
    """``kubectl get md -w`` rows as (PHASE, the other cells); rows whose PHASE is still empty are skipped."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith(PREFIX_MD):
            cells = line.removeprefix(PREFIX_MD).split()
            if len(cells) > 1 and cells[1] in PHASES:
                rows.append((cells[1], cells[2:]))
    return rows


def first(rows: list[tuple[str, list[str]]], start: int, phase: str, *versions: str) -> int:
    """Index of the first row from ``start`` in ``phase`` whose cells hold every one of ``versions``."""
    for index in range(start, len(rows)):
        row_phase, cells = rows[index]
        if row_phase == phase and all(version in cells for version in versions):
            return index
    raise AssertionError(f"no {phase} row with {versions} after row {start}: {rows[start:]}")


def test_the_story_on_the_real_node(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    paths.binary("kube-apiserver")  # fails with the fix (`make rig`) when the rig is not built
    out = tmp_path / "demo-cluster"
    result, seconds = run_demo("--out", str(out), rig_dir=paths.rig_dir(), timeout=720)
    record_property("demo_cluster_seconds", round(seconds, 1))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Traceback" not in output

    rows = watch_rows(result.stdout)
    assert rows, result.stdout[-4000:]
    settled = first(rows, 0, "Succeeded", "1.0.0")
    canary = first(rows, settled, "Progressing", "1.0.0", "2.0.0")
    promoted = first(rows, canary, "Succeeded", "2.0.0")
    bad = first(rows, promoted, "Progressing", "2.0.0", "3.0.0")
    rolled_back = first(rows, bad, "RolledBack", "2.0.0", "3.0.0")
    assert "RolledBack" not in {phase for phase, _ in rows[:bad]}, "2.0.0 was never rolled back"
    assert "Succeeded" not in {phase for phase, _ in rows[bad:rolled_back]}, "3.0.0 was never promoted"
    weights = {cells[-2] for phase, cells in rows[canary:promoted] if phase == "Progressing"}
    assert {"10", "50"} <= weights, rows[canary:promoted]

    assert re.search(r"^\[event\]\s+Warning\s+RolledBack\s", result.stdout, re.M), "the operator's Events streamed"
    assert "[status] Phase:         RolledBack" in result.stdout, "modelrollout status after each rollout"
    summary = re.search(
        r"^summary: 2\.0\.0 Succeeded, 3\.0\.0 RolledBack, rollback latency (\d+\.\d)s, failed requests (\d+), "
        r"total (\d+)s$", result.stdout, re.M,
    )  # fmt: skip
    assert summary, result.stdout[-3000:]
    assert summary[2] == "0", "no request failed at the gateway"
    record_property("rollback_latency_seconds", float(summary[1]))
    assert float(summary[1]) < 60, "the bad canary is off traffic within a minute"
    assert processes_mentioning(str(out)) == [], "every process the demo started is stopped"


def test_a_missing_rig_says_how_to_build_it(tmp_path: Path) -> None:
    result, _ = run_demo("--out", str(tmp_path / "out"), rig_dir=tmp_path / "no-rig", timeout=120)
    assert result.returncode == 2
    assert "run `make rig` first" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists(), "nothing was started or written"
