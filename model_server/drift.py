"""Rolling input drift: the Population Stability Index of recent inputs against the training reference.

Pure numpy, no I/O. Bins are the manifest's reference edges (quantiles of the training data), so each
reference bin holds data and PSI is well defined; empty live bins are smoothed by ``EPSILON``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from model_server.bundle import Histogram

EPSILON = 1e-4


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    """PSI = Σ (a - e) · ln(a / e) over bins, both given as fractions."""
    e = np.clip(expected, EPSILON, None)
    a = np.clip(actual, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


class RollingDrift:
    """Bin counts of the last ``window`` rows per feature; ``update`` is O(batch), ``scores`` O(bins)."""

    def __init__(self, names: list[str], reference: dict[str, Histogram], window: int) -> None:
        self.names = names
        self._edges = [np.asarray(reference[n].edges, dtype=np.float64) for n in names]
        self._expected = [np.asarray(reference[n].fractions, dtype=np.float64) for n in names]
        self._window = window
        self._ring = np.zeros((window, len(names)), dtype=np.int64)
        self._counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in self._edges]
        self._next = 0
        self._filled = 0

    def update(self, rows: NDArray[np.float64]) -> None:
        rows = rows[-self._window :]
        bins = np.column_stack(
            [np.searchsorted(edges, rows[:, j], side="right") for j, edges in enumerate(self._edges)]
        )
        slots = (self._next + np.arange(len(rows))) % self._window
        occupied = slots if self._filled == self._window else slots[slots < self._filled]
        for j, counts in enumerate(self._counts):
            np.subtract.at(counts, self._ring[occupied, j], 1)
        self._ring[slots] = bins
        for j, counts in enumerate(self._counts):
            np.add.at(counts, bins[:, j], 1)
        self._next = int((self._next + len(rows)) % self._window)
        self._filled = min(self._window, self._filled + len(rows))

    @property
    def rows_seen(self) -> int:
        return self._filled

    def scores(self) -> dict[str, float]:
        if self._filled == 0:
            return {}
        return {
            name: psi(expected, counts / self._filled)
            for name, expected, counts in zip(self.names, self._expected, self._counts, strict=True)
        }
