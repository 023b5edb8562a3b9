"""The thread-pool helpers: tiles, per-row extremes and the stage pipeline."""

import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreai_opt.coreai_utils.numerics.blas import _set_local
from coreai_opt.coreai_utils.numerics.parallel import (
    parallel_map,
    pipeline,
    row_extremes,
    tiles,
    workers,
)
from tests.numerics.test_blas import count as blas_threads

parallel = sys.modules["coreai_opt.coreai_utils.numerics.parallel"]


@given(rows=st.integers(1, 6), n=st.integers(1, 50), size=st.integers(1, 64))
def test_tiles_cover_every_element_once(rows: int, n: int, size: int) -> None:
    seen = np.zeros((rows, n), dtype=int)
    for r0, r1, c0, c1 in tiles(rows, n, size):
        seen[r0:r1, c0:c1] += 1
        assert (c0, c1) == (0, n) or r1 - r0 == 1  # whole rows, or pieces of one row
    assert (seen == 1).all()


@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
)
def test_row_extremes_are_numpy_min_and_max(shape: tuple[int, int], seed: int) -> None:
    rows = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    low, high = row_extremes(rows)
    assert low.dtype == rows.dtype and high.dtype == rows.dtype
    assert np.array_equal(low, rows.min(axis=1)) and np.array_equal(high, rows.max(axis=1))


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_row_extremes_of_rows_split_into_tiles(poison: float) -> None:
    # rows longer than a tile are reduced piece by piece; NaN and Inf still reach the result
    rows = np.random.default_rng(1).standard_normal((2, 600_000)).astype(np.float32)
    rows[1, 400_000] = poison  # in the second tile of the second row
    low, high = row_extremes(rows)
    assert len(tiles(*rows.shape)) > rows.shape[0]
    assert low[0] == rows[0].min() and high[0] == rows[0].max()
    np.testing.assert_array_equal([low[1], high[1]], [rows[1].min(), rows[1].max()])


def _recording_stages(
    events: list[tuple[int, int]], serial: int, overlaps: list[int], sleep: float
) -> list[Callable[[int], None]]:
    lock = threading.Lock()
    inside = [0]

    def stage(index: int) -> Callable[[int], None]:
        def run(item: int) -> None:
            if index == serial:
                with lock:
                    inside[0] += 1
                    overlaps.append(inside[0])
            time.sleep(sleep)
            with lock:
                events.append((item, index))
                if index == serial:
                    inside[0] -= 1

        return run

    return [stage(index) for index in range(4)]


@pytest.mark.parametrize("items", [1, 2, 5])
def test_pipeline_runs_each_items_stages_in_order_and_the_serial_one_alone(items: int) -> None:
    events: list[tuple[int, int]] = []
    overlaps: list[int] = []
    pipeline(items, _recording_stages(events, 1, overlaps, 0.002), serial=1)
    assert sorted(events) == [(i, s) for i in range(items) for s in range(4)]
    for item in range(items):
        assert [s for i, s in events if i == item] == [0, 1, 2, 3]
    assert overlaps and max(overlaps) == 1  # the serial stage never ran for two items at once


def test_pipeline_with_one_worker_runs_items_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "workers", lambda: 1)
    events: list[tuple[int, int]] = []
    pipeline(3, _recording_stages(events, 1, [], 0.0), serial=1)
    assert events == [(i, s) for i in range(3) for s in range(4)]


def test_pipeline_reraises_the_first_error_and_starts_nothing_after_it() -> None:
    started: list[tuple[int, int]] = []

    def stage(index: int) -> Callable[[int], None]:
        def run(item: int) -> None:
            started.append((item, index))
            if (item, index) == (1, 2):
                raise ZeroDivisionError("stage 2 of item 1")
            time.sleep(0.001)

        return run

    with pytest.raises(ZeroDivisionError, match="stage 2 of item 1"):
        pipeline(6, [stage(i) for i in range(4)], serial=1)
    failed_at = started.index((1, 2))
    # only tasks already running when it failed may have started after it: one per thread
    assert len(started) - failed_at - 1 < parallel.workers()


def test_parallel_map_inside_the_pool_runs_in_turn() -> None:
    # a stage (or any pool task) that maps again must not wait on the pool it occupies
    results: dict[int, list[int]] = {}

    def stage(item: int) -> None:
        results[item] = parallel.parallel_map(lambda x: x * item, range(50))

    pipeline(4, [stage, stage], serial=0)
    assert results == {i: [x * i for x in range(50)] for i in range(4)}
    nested = parallel.parallel_map(
        lambda i: sum(parallel.parallel_map(abs, range(-i, i))), range(8)
    )
    assert nested == [i * i for i in range(8)]


@pytest.mark.skipif(_set_local() is None, reason="numpy's BLAS is not OpenBLAS")
@pytest.mark.skipif(workers() == 1, reason="one CPU: the pool is not used")
def test_the_pool_asks_blas_for_one_thread_each() -> None:
    # pool threads times BLAS threads must not exceed the cores
    before = blas_threads()
    seen = parallel_map(lambda _: blas_threads(), range(4 * workers()))
    assert seen == [1] * len(seen)
    assert blas_threads() == before
