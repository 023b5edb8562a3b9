"""Statistics larger than the memory they may take: rows spilled to disk while the runtime
runs, reduced afterwards one activation at a time, and finished statistics parked in files
that the passes read through a mapping.

Both kinds of file are anonymous (``tempfile.TemporaryFile``: unlinked at birth, gone when
closed or unmapped), in the temporary directory (``TMPDIR``), so nothing is left behind
by a crash and no clean-up is owed.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from coreai_opt.coreai_utils.assets import rough_size
from coreai_opt.coreai_utils.ir.capture import Tap
from coreai_opt.coreai_utils.numerics.activations import (
    ActivationStats,
    RowBuffer,
    StatsLayout,
    empty_stats,
)

__all__ = ["RowSpill", "check_disk", "park", "spill_plan", "with_gram"]


def with_gram(tap: Tap, max_gram_channels: int) -> bool:
    """Whether ``tap`` gets ``X^T X``: unless per-channel only or wider than
    ``max_gram_channels`` columns."""
    return tap.layout is not StatsLayout.CHANNELS and tap.columns <= max_gram_channels


def _tap_stats_bytes(tap: Tap, max_gram_channels: int) -> int:
    gram = with_gram(tap, max_gram_channels)
    return 8 * tap.groups * tap.columns * (1 + (tap.columns if gram else 0))


def _row_bytes(tap: Tap) -> int:
    """About the bytes of one sample's rows of ``tap`` (a convolution's unfolded patches
    repeat each input value once per kernel tap that reads it)."""
    if tap.layout is StatsLayout.CONV:
        return tap.nbytes * math.prod(tap.kernel) // max(1, math.prod(tap.stride))
    return tap.nbytes


def spill_plan(taps: list[Tap], max_gram_channels: int, budget: int | None) -> list[bool]:
    """Which of one run's distinct taps spill their rows to disk: in IR order, a tap's
    statistics are held in memory while they fit in what is left of ``budget`` bytes;
    statistics without ``X^T X`` (8 bytes per column) always are. None: nothing spills."""
    if budget is None:
        return [False] * len(taps)
    room = budget
    spilled = []
    for tap in taps:
        size = _tap_stats_bytes(tap, max_gram_channels)
        spill = with_gram(tap, max_gram_channels) and size > room
        if not spill:
            room -= size
        spilled.append(spill)
    return spilled


def check_disk(
    runs: list[tuple[list[Tap], list[bool]]],
    samples: int,
    max_gram_channels: int,
    budget: int | None,
    program_bytes: int,
) -> None:
    """``ValueError`` before anything runs when the temporary directory lacks the room a
    capture writes there (``runs``: each run's distinct taps and their :func:`spill_plan`):
    two copies of the program (``program_bytes`` each: the asset the runtime runs and the
    runtime's compiled form of it) and, within ``budget``, the spilled rows of ``samples``
    samples and every ``X^T X``."""
    spilled = 0
    for taps, plan in runs if budget is not None else []:
        for tap, spill in zip(taps, plan, strict=True):
            if with_gram(tap, max_gram_channels):
                spilled += _tap_stats_bytes(tap, max_gram_channels)
            if spill:
                spilled += samples * _row_bytes(tap)
    directory = Path(tempfile.gettempdir())
    free = shutil.disk_usage(directory).free
    needed = 2 * program_bytes + spilled
    if needed > free:
        parts = f"two copies of the program's {rough_size(program_bytes)} of weights"
        if budget is not None:
            beyond = f"beyond max_stats_bytes ({rough_size(budget)})"
            parts += f" and {rough_size(spilled)} of statistics {beyond}"
        msg = (
            f"calibrating needs about {rough_size(needed)} of disk in the temporary directory "
            f"{directory} ({parts}), which has {rough_size(free)} free: point TMPDIR at a disk "
            "with more room"
            + (", or raise max_stats_bytes" if budget is not None and spilled else "")
        )
        raise ValueError(msg)


class RowSpill:
    """Stands in for one activation's :class:`ActivationStats` during a capture: the rows
    go to ``file`` (shared by every spill of a run: one descriptor however many there
    are), in the very blocks the statistics would have reduced them in (the same
    :class:`RowBuffer` decides), so that :meth:`replay` sums them bit for bit as a capture
    held in memory would have. Disk: the rows in the activation's own type."""

    def __init__(self, layout: StatsLayout, groups: int, columns: int, file: BinaryIO) -> None:
        self.layout = layout
        self.groups = groups
        self.columns = columns
        self._buffer = RowBuffer(groups, columns, keep_dtype=True)
        self._file = file
        self._blocks: list[tuple[int, int, np.dtype]] = []  # offset, rows, type
        self.written = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of rows buffered, counted as the statistics would (float64)."""
        return self._buffer.pending_bytes

    def add(self, rows: np.ndarray) -> None:
        """Buffer ``rows`` (``[groups, n, columns]``); a complete block goes to the file."""
        if self._buffer.push(rows):
            self.flush()

    def flush(self) -> None:
        """Append the buffered rows to the file as one block."""
        wide = self._buffer.take()
        if wide is None:
            return
        offset = self._file.seek(0, io.SEEK_END)
        wide.tofile(self._file)
        self._blocks.append((offset, int(wide.shape[1]), wide.dtype))
        self.written += wide.nbytes

    def replay(self) -> ActivationStats:
        """The statistics of every row written (with ``X^T X``). Holds one block of rows
        (float64) at a time besides the statistics."""
        self.flush()
        stats = empty_stats(self.layout, self.groups, self.columns, with_gram=True)
        for offset, rows, dtype in self._blocks:
            self._file.seek(offset)
            count = self.groups * rows * self.columns
            block = np.fromfile(self._file, dtype=dtype, count=count)
            wide = block.reshape(self.groups, rows, self.columns).astype(np.float64)
            del block
            stats.reduce(wide)
        self._blocks.clear()
        return stats


def park(stats: ActivationStats) -> ActivationStats:
    """``stats`` with its ``X^T X`` moved to an anonymous file, mapped read-only.

    The mapping's pages are resident only while read; :func:`~coreai_opt.coreai_utils.
    memory.drop_array_pages` gives them back (the passes do after each weight). Statistics
    without a Gram, or parked already, are returned as they are."""
    stats.flush()
    if stats.gram is None or isinstance(stats.gram, np.memmap):
        return stats
    with tempfile.TemporaryFile() as file:
        stats.gram.tofile(file)
        file.flush()
        gram = np.memmap(file, dtype=stats.gram.dtype, mode="r", shape=stats.gram.shape)
    return ActivationStats(stats.layout, stats.sq_sum, stats.count, gram)
