from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server.bundle import Histogram
from model_server.drift import RollingDrift, psi
from model_server.training import reference_histogram


def test_psi_is_zero_for_identical_and_large_for_shifted() -> None:
    rng = np.random.default_rng(1)
    reference = reference_histogram(rng.normal(0, 1, 5000))
    drift = RollingDrift(["x"], {"x": reference}, window=2000)
    drift.update(rng.normal(0, 1, (2000, 1)))
    assert drift.scores()["x"] < 0.05
    drift.update(rng.normal(2, 1, (2000, 1)))
    assert drift.scores()["x"] > 1.0
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(1, 40),
    batches=st.lists(st.lists(st.floats(-5, 5), min_size=1, max_size=30), min_size=1, max_size=12),
)
def test_rolling_window_matches_recount_of_the_last_rows(window: int, batches: list[list[float]]) -> None:
    histogram = Histogram(edges=[-1.0, 0.0, 1.0], fractions=[0.25, 0.25, 0.25, 0.25])
    drift = RollingDrift(["x"], {"x": histogram}, window=window)
    seen: list[float] = []
    for batch in batches:
        drift.update(np.array(batch, dtype=np.float64).reshape(-1, 1))
        seen.extend(batch)
    last = np.array(seen[-window:])
    counts = np.bincount(np.searchsorted(histogram.edges, last, side="right"), minlength=4)
    assert drift.rows_seen == len(last)
    assert drift.scores()["x"] == psi(np.array(histogram.fractions), counts / len(last))


def test_psi_matches_its_closed_form() -> None:
    """Oracles worked out by hand from PSI = Σ (a - e)·ln(a / e), not from the code under test."""
    # (0.25 - 0.5)·ln(0.5) + (0.75 - 0.5)·ln(1.5) = 0.25·ln 2 + 0.25·ln 1.5 = 0.25·ln 3
    assert math.isclose(psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])), 0.25 * math.log(3), rel_tol=1e-12)
    # every live row in the first of four equal bins; the empty bins count as EPSILON = 1e-4
    histogram = Histogram(edges=[-1.0, 0.0, 1.0], fractions=[0.25, 0.25, 0.25, 0.25])
    drift = RollingDrift(["x"], {"x": histogram}, window=100)
    drift.update(np.full((100, 1), -2.0))
    expected = 0.75 * math.log(4) + 3 * (1e-4 - 0.25) * math.log(1e-4 / 0.25)
    assert math.isclose(drift.scores()["x"], expected, rel_tol=1e-12)
