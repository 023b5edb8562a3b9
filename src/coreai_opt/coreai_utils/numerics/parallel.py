"""Chunking and a shared thread pool for numpy work (numpy releases the GIL).

Threads, never processes: once the Core AI runtime has run in a process, a forked worker
pool deadlocks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["CHUNK_ELEMENTS", "parallel_map", "row_chunks", "workers"]

T = TypeVar("T")
R = TypeVar("R")

CHUNK_ELEMENTS = 1 << 18
"""Default elements per chunk: large enough to amortize numpy call overhead, small enough
to keep per-chunk temporaries cheap."""

_pool: ThreadPoolExecutor | None = None


def workers() -> int:
    """Threads used for numpy work: the CPUs this process may run on (at most 8)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, on the shared pool when there is more than one."""
    items = list(items)
    if len(items) <= 1 or workers() == 1:
        return [fn(item) for item in items]
    global _pool  # noqa: PLW0603 - one process-wide pool, created on first use
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="coreai-opt")
    return list(_pool.map(fn, items))


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
