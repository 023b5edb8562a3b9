"""Process memory the passes hand back: the C heap's free pages, and the pages of a mapped
input file once its weights have been read.

* The C heap (glibc only): a pass frees its temporaries (weights read, masks, codes,
  k-means tables) when it ends, but glibc's ``malloc`` keeps much of what was freed in its
  heaps for reuse: freed blocks below its mmap threshold, which it raises each time a large
  block is freed. The process then looks as if it had grown by that much after the first
  call (measured: +24 MiB after the first 4-bit palettization of a 4096x4096 fp32 linear,
  +23 MiB after the first 50 % sparsification of all-MiniLM-L6-v2, none of it growing
  further with later calls). ``malloc_trim(0)`` returns those pages.
* A mapped input (Linux only): the Core AI loader maps an asset's bytecode read-only
  rather than reading it, and every weight the pass reads becomes resident in the process
  (clean file pages: the kernel may reclaim them, but they count in its RSS, one copy of
  the model by the end). The passes drop them (``madvise(MADV_DONTNEED)``) each time
  :data:`DROP_EVERY` bytes of weights were read (:class:`BytecodePages`), which keeps about
  that much plus one weight resident; a later read of the same bytes faults them in again
  from the file, which must stay unchanged while the program lives (the CLI writes its
  output to a new file and renames it into place, so an input it replaces keeps its
  data). The
  calibration capture does the same for every bytecode mapping (the input, its own copy)
  before the runtime runs.
* Parked statistics: calibration statistics larger than their memory budget live in files
  mapped read-only (:mod:`~coreai_opt.coreai_utils.calibration.spill`); the passes give a
  weight's pages back once it is done.

Elsewhere (macOS, musl) none of this does anything.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "DROP_EVERY",
    "BytecodePages",
    "drop_array_pages",
    "drop_bytecode_pages",
    "drop_mapped_pages",
    "dropping_bytecode_pages",
    "return_free_memory",
]

_MADV_DONTNEED = 4
_BYTECODE = (".mlirb", ".mlirbc")
DROP_EVERY = 64 << 20
""":class:`BytecodePages` gives the pages back once this many bytes of weights were read.
After every weight instead, the conv net of ``make bench`` (10 weights, 20 MiB) took 80 ms
a sparsify call against 70 (dropping, then faulting the shared pages in again)."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    if libc is None:
        return None
    try:
        function = libc.malloc_trim
    except AttributeError:  # not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def return_free_memory() -> None:
    """Give the free pages of the C heap back to the system (module docstring)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def drop_mapped_pages(files: list[Path]) -> int:
    """Drop this process's resident pages of read-only private mappings of ``files``
    (module docstring); returns the bytes of mapping advised (0 where unsupported)."""
    if not files:
        return 0
    names = {str(path.resolve()) for path in files}
    return _drop_where(lambda name: name in names)


def drop_bytecode_pages() -> int:
    """:func:`drop_mapped_pages` for every MLIR bytecode file this process maps (``.mlirb``,
    ``.mlirbc``; unlinked ones too): the program copies the calibration maps and the input
    asset, whoever opened it."""
    return _drop_where(lambda name: name.removesuffix(" (deleted)").endswith(_BYTECODE))


@contextmanager
def dropping_bytecode_pages(interval: float = 0.1) -> Iterator[None]:
    """:func:`drop_bytecode_pages` every ``interval`` seconds, from a thread, while the
    block runs: for a long call that streams through mapped weights once (writing a copy of
    a program, ``save_asset``), so that the pages it has read do not pile up into one more
    copy of the model (the bindings release the GIL while they work)."""
    stop = threading.Event()

    def drop() -> None:
        while not stop.wait(interval):
            drop_bytecode_pages()

    thread = threading.Thread(target=drop, name="drop-bytecode-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        drop_bytecode_pages()


class BytecodePages:
    """Gives back the pages of mapped bytecode (:func:`drop_bytecode_pages`) as a pass reads
    its weights: once :data:`DROP_EVERY` bytes were read since the last time, so that about
    that much, plus one weight, stays resident, and small models pay nothing."""

    def __init__(self) -> None:
        self._read = 0

    def read(self, nbytes: int) -> None:
        """Count ``nbytes`` of weight just read; give the pages back when due."""
        self._read += nbytes
        if self._read >= DROP_EVERY:
            drop_bytecode_pages()
            self._read = 0


def drop_array_pages(*arrays: np.ndarray | None) -> int:
    """Drop the resident pages of read-only file-backed arrays (``np.memmap`` opened with
    mode ``"r"``): they are read again from the file when next touched. Other arrays are
    left alone (dropping the pages of anonymous or writable memory would lose data)."""
    libc = _libc()
    if libc is None:
        return 0
    advised = 0
    for array in arrays:
        if not isinstance(array, np.memmap) or array.flags.writeable or not array.nbytes:
            continue
        page = mmap.PAGESIZE
        start = array.ctypes.data // page * page
        end = -(-(array.ctypes.data + array.nbytes) // page) * page
        if not libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED):
            advised += end - start
    return advised


def _drop_where(wanted: Callable[[str], bool]) -> int:
    libc = _libc()
    if libc is None:
        return 0
    advised = 0
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1] != "r--p" or not wanted(fields[5]):
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED):
            continue  # refused: the pages stay, nothing is lost
        advised += end - start
    return advised
