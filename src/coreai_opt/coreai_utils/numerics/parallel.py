"""Chunking and a shared thread pool for numpy work (numpy releases the GIL).

Threads, never processes: once the Core AI runtime has run in a process, a forked worker
pool deadlocks.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from coreai_opt.coreai_utils.numerics.blas import one_blas_thread

__all__ = [
    "CHUNK_ELEMENTS",
    "parallel_map",
    "pipeline",
    "row_absmax",
    "row_chunks",
    "row_extremes",
    "tiles",
    "workers",
]

T = TypeVar("T")
R = TypeVar("R")

CHUNK_ELEMENTS = 1 << 18
"""Default elements per chunk: large enough to amortize numpy call overhead, small enough
to keep per-chunk temporaries cheap."""

_pool: ThreadPoolExecutor | None = None
_PREFIX = "coreai-opt"  # the pool's thread names


def workers() -> int:
    """Threads used for numpy work: the CPUs this process may run on (at most 8)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, on the shared pool when there is more than one (in
    turn when called from one of the pool's own threads: waiting on the pool from inside it
    could wait forever).

    While the pool works, BLAS runs on one thread (:func:`~coreai_opt.coreai_utils.numerics.
    blas.one_blas_thread`): a thread per core, each asking BLAS for a thread per core, would
    ask for cores squared, and every product then waits for its slowest thread.
    """
    items = list(items)
    if len(items) <= 1 or workers() == 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(item) for item in items]
    global _pool  # noqa: PLW0603 - one process-wide pool, created on first use
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix=_PREFIX)
    with one_blas_thread():
        return list(_pool.map(fn, items))


def pipeline(items: int, stages: Sequence[Callable[[int], None]], *, serial: int) -> None:
    """Run ``stages[0](i)``, ``stages[1](i)``, ... in that order for every item ``i`` of
    ``range(items)``, on the shared pool (a stage's own :func:`parallel_map` runs in turn).

    Stages of different items run at the same time, except stage ``serial``, which runs
    for one item at a time: it is meant for work that holds the GIL (``np.bincount``),
    which then overlaps with the other threads' GIL-free numpy work instead of with
    itself. A free thread takes the serial stage when an item is ready for it; else the
    earliest stage of the first item not yet ready for it, when no item waits for it
    (keeping it fed); else the next stage of the most advanced item (lowest index first).
    The first exception a stage raises is re-raised here once every thread has stopped.
    """
    total = len(stages)
    if items <= 1 or workers() == 1:
        for item in range(items):
            for stage in stages:
                stage(item)
        return
    done = [0] * items  # stages finished, per item
    running = [False] * items
    serial_running = False
    failures: list[BaseException] = []
    changed = threading.Condition()

    def choose() -> tuple[int, int] | None:
        free = [i for i in range(items) if not running[i] and done[i] < total]
        at_serial = [i for i in free if done[i] == serial]
        if at_serial and not serial_running:
            return at_serial[0], serial
        if not at_serial:
            before = [i for i in free if done[i] < serial]
            if before:
                return before[0], done[before[0]]
        others = [i for i in free if done[i] != serial]
        if not others:
            return None
        item = max(others, key=lambda i: (done[i], -i))
        return item, done[item]

    def worker(_: int) -> None:
        nonlocal serial_running
        while True:
            with changed:
                task = None
                while task is None:
                    if failures or all(d == total for d in done):
                        return
                    task = choose()
                    if task is None:
                        changed.wait()
                item, stage = task
                running[item] = True
                serial_running |= stage == serial
            try:
                stages[stage](item)
            except BaseException as error:
                with changed:
                    failures.append(error)
                    changed.notify_all()
                return
            with changed:
                running[item] = False
                done[item] += 1
                serial_running &= stage != serial
                changed.notify_all()

    parallel_map(worker, range(min(workers(), items)))
    if failures:
        raise failures[0]


def row_chunks(
    rows: int, row_size: int, chunk_elements: int = CHUNK_ELEMENTS, multiple: int = 1
) -> list[tuple[int, int]]:
    """Split ``rows`` rows of ``row_size`` elements into ``(start, stop)`` row ranges.

    Every chunk but the last starts at an element offset that is a multiple of 8 (so packed
    bit masks of consecutive chunks concatenate) and holds a multiple of ``multiple`` rows.
    """
    if rows == 0:
        return []
    step = math.lcm(multiple, 8 // math.gcd(row_size, 8))
    per_chunk = max(step, chunk_elements // max(row_size, 1) // step * step)
    return [(start, min(start + per_chunk, rows)) for start in range(0, rows, per_chunk)]


def tiles(rows: int, n: int, size: int = CHUNK_ELEMENTS) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, c0, c1)`` tiles of about ``size`` elements of a ``[rows, n]`` array: whole
    rows (:func:`row_chunks`), or pieces of one row when a row holds ``size`` or more."""
    if n >= size:
        return [(r, r + 1, c, min(c + size, n)) for r in range(rows) for c in range(0, n, size)]
    return [(r0, r1, 0, n) for r0, r1 in row_chunks(rows, n, size)]


def row_extremes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(min, max)`` of each row of a ``[R, n]`` array (``n > 0``; NaN propagates), one read
    of each tile on the thread pool."""
    bounds = tiles(*rows.shape)
    if not bounds:  # no rows
        return np.empty(0, dtype=rows.dtype), np.empty(0, dtype=rows.dtype)

    def extremes(b: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        part = rows[b[0] : b[1], b[2] : b[3]]
        return part.min(axis=1), part.max(axis=1)

    parts = parallel_map(extremes, bounds)
    if len(bounds) <= rows.shape[0]:  # whole rows, in order
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    low = np.empty(rows.shape[0], dtype=rows.dtype)
    high = np.empty(rows.shape[0], dtype=rows.dtype)
    for (r0, _, c0, _), (part_low, part_high) in zip(bounds, parts, strict=True):
        low[r0] = part_low[0] if c0 == 0 else np.minimum(low[r0], part_low[0])
        high[r0] = part_high[0] if c0 == 0 else np.maximum(high[r0], part_high[0])
    return low, high


def row_absmax(rows: np.ndarray) -> np.ndarray:
    """Each row's largest magnitude (float64; NaN if the row holds one), from
    :func:`row_extremes` (no full-size ``abs`` temporary)."""
    low, high = row_extremes(rows)
    largest: np.ndarray = np.maximum(high, -low).astype(np.float64)
    return largest
