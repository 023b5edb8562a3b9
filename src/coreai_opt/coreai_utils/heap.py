"""Hand the C heap's free memory back to the system once a pass is done (glibc only).

A pass frees its temporaries (weights read, masks, codes, k-means tables) when it ends,
but glibc's ``malloc`` keeps much of what was freed in its heaps for reuse: freed blocks
below its mmap threshold, which it raises each time a large block is freed. The process
then looks as if it had grown by that much after the first call (measured: +24 MiB after the
first 4-bit palettization of a 4096x4096 fp32 linear, +23 MiB after the first 50 %
sparsification of all-MiniLM-L6-v2, none of it growing further with later calls).
``malloc_trim(0)`` returns those pages. Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

__all__ = ["return_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def return_free_memory() -> None:
    """Give the free pages of the C heap back to the system (module docstring)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
