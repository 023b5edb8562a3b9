"""One BLAS thread while an OBS sweep or the thread pool runs, where numpy's OpenBLAS
allows it.

The OBS sweep (:mod:`obs`) makes thousands of mid-sized matrix products, one after the
other. With OpenBLAS's default of one thread per core, every product waits for all of its
threads; when another process holds a core, the descheduled thread stalls each product.
Measured on a 2-core machine, GPTQ on a 135M-parameter language model took 12 s idle and
245-311 s next to one busy process; with one BLAS thread 14.6 s (``OPENBLAS_NUM_THREADS=1``)
and 25.8 s (this module) next to one. The sweep therefore runs its products on one thread,
and so does the thread pool (:func:`~coreai_opt.coreai_utils.numerics.parallel.
parallel_map`), whose threads would otherwise each ask BLAS for a thread per core.

It uses ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27, the library in numpy's
wheels), which in the threaded (non-OpenMP) builds numpy ships changes the count for the
whole process: the count is lowered when the first sweep starts and restored when the last
one running ends (counted under a lock, so overlapping sweeps in several threads leave the
original count behind). Where numpy uses another BLAS (Accelerate on macOS, MKL) or the
symbol is missing, this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["one_blas_thread"]


@functools.cache
def _set_local() -> Callable[[int], int] | None:
    """OpenBLAS's ``openblas_set_num_threads_local`` from the library bundled with numpy
    (returns the previous count), or None."""
    root = Path(np.__file__).resolve().parent
    for folder in (root.parent / "numpy.libs", root / ".dylibs"):
        for path in sorted(folder.glob("lib*openblas*")):
            try:
                library = ctypes.CDLL(str(path))
                function = library.openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            function.argtypes = [ctypes.c_int]
            function.restype = ctypes.c_int
            return function
    return None


_lock = threading.Lock()
_inside = 0  # bodies running
_previous = 0  # the count before the first of them


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """The body's BLAS calls run on one thread (module docstring); the count from before
    the first overlapping body is restored when the last one ends."""
    global _inside, _previous  # noqa: PLW0603 - one count for the process's BLAS
    set_local = _set_local()
    if set_local is None:
        yield
        return
    with _lock:
        if _inside == 0:
            _previous = set_local(1)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                set_local(_previous)
