"""Adaptive micro-batching: concurrent requests share one engine call, idle requests wait for nothing.

A request appends its rows and schedules a flush with ``loop.call_soon``. Every request whose handler
runs in the same event-loop iteration lands in the same batch, so under load batches grow by
themselves and at low load a lone request is computed at once — no timer, no added latency.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float64]


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[Matrix], Matrix],
        max_rows: int,
        on_batch: Callable[[Matrix, Matrix], None] | None = None,
    ) -> None:
        self._predict = predict
        self._max_rows = max_rows
        self._on_batch = on_batch
        self._pending: deque[tuple[Matrix, asyncio.Future[Matrix]]] = deque()
        self._scheduled = False

    async def submit(self, rows: Matrix) -> Matrix:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Matrix] = loop.create_future()
        self._pending.append((rows, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _take(self) -> list[tuple[Matrix, asyncio.Future[Matrix]]]:
        batch = [self._pending.popleft()]
        rows = len(batch[0][0])
        while self._pending and rows + len(self._pending[0][0]) <= self._max_rows:
            item = self._pending.popleft()
            rows += len(item[0])
            batch.append(item)
        return batch

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch = self._take()
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        live = [(rows, future) for rows, future in batch if not future.cancelled()]
        if not live:
            return
        matrix = live[0][0] if len(live) == 1 else np.concatenate([rows for rows, _ in live])
        try:
            probabilities = self._predict(matrix)
        except Exception as exc:
            for _, future in live:
                future.set_exception(exc)
            return
        start = 0
        for rows, future in live:
            future.set_result(probabilities[start : start + len(rows)])
            start += len(rows)
        if self._on_batch is not None:
            self._on_batch(matrix, probabilities)
