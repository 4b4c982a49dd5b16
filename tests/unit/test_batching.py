from __future__ import annotations

import asyncio

import numpy as np

from model_server.batching import Matrix, MicroBatcher


def test_concurrent_requests_share_one_call_and_keep_their_rows() -> None:
    calls: list[int] = []

    def predict(rows: Matrix) -> Matrix:
        calls.append(len(rows))
        return rows * 2

    async def scenario() -> list[Matrix]:
        batcher = MicroBatcher(predict, max_rows=100)
        requests = [np.full((i + 1, 2), float(i)) for i in range(5)]
        return await asyncio.gather(*(batcher.submit(r) for r in requests))

    results = asyncio.run(scenario())
    assert calls == [15]
    for i, result in enumerate(results):
        assert result.shape == (i + 1, 2) and np.all(result == 2 * i)


def test_batches_are_bounded_and_a_lone_request_is_served_at_once() -> None:
    calls: list[int] = []

    def predict(rows: Matrix) -> Matrix:
        calls.append(len(rows))
        return rows

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_rows=4)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(10)))
        await batcher.submit(np.zeros((1, 1)))

    asyncio.run(scenario())
    assert calls == [4, 4, 2, 1]


def test_engine_errors_reach_every_request_of_the_batch() -> None:
    def predict(rows: Matrix) -> Matrix:
        raise ValueError("engine broke")

    async def scenario() -> list[BaseException | Matrix]:
        batcher = MicroBatcher(predict, max_rows=10)
        return await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in results)


def test_on_batch_sees_rows_and_results() -> None:
    seen: list[tuple[int, int]] = []

    async def scenario() -> None:
        batcher = MicroBatcher(lambda rows: rows + 1, max_rows=10, on_batch=lambda r, p: seen.append((len(r), len(p))))
        await asyncio.gather(batcher.submit(np.zeros((2, 1))), batcher.submit(np.zeros((3, 1))))

    asyncio.run(scenario())
    assert seen == [(5, 5)]


def test_results_are_independent_arrays() -> None:
    """Requests merged into one engine call get results that share no memory: one caller writing into its
    answer cannot change another's."""

    async def scenario() -> list[Matrix]:
        batcher = MicroBatcher(lambda m: m * 1.0, max_rows=10)
        return await asyncio.gather(batcher.submit(np.full((2, 3), 1.0)), batcher.submit(np.full((3, 3), 2.0)))

    first, second = asyncio.run(scenario())
    assert first.shape == (2, 3) and second.shape == (3, 3)
    assert not np.shares_memory(first, second)
    first[:] = -1.0
    assert np.all(second == 2.0)
