"""Activation statistics of one weight, reduced sample by sample (pure numpy).

A weight's inputs are viewed as rows of *columns*: the values one output element is a dot
product with. Three layouts:

* ``linear``: a matmul weight; columns are its input channels (``C``); ``rows`` are every
  activation vector along the matmul's contraction axis (all batch/broadcast positions);
* ``conv``: a convolution weight ``[C_out, C_in/g, k...]``; columns are one group's unfolded
  input patch, ``C_in/g * prod(k)`` of them in the weight's own order (channel, then
  kernel positions row-major); one set of statistics per group ``g``;
* ``channels``: per input channel only (transposed convolutions): sums of squares, no Gram.

:class:`ActivationStats` holds, per group, the sum of squares per column and the row count
(for Wanda), and optionally ``X^T X`` (float64, for SparseGPT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "FLUSH_BYTES",
    "ActivationStats",
    "RowBuffer",
    "StatsLayout",
    "conv_patches",
    "empty_stats",
    "input_norms",
    "linear_rows",
]


FLUSH_BYTES = 4 << 20
"""At most this many bytes of buffered rows (float64) per statistics object."""


class StatsLayout(StrEnum):
    """How the columns of :class:`ActivationStats` map onto a weight's axes."""

    LINEAR = "linear"
    CONV = "conv"
    CHANNELS = "channels"


class RowBuffer:
    """Rows waiting to be reduced, in blocks: :meth:`push` says when a block is complete
    (``columns`` rows or more, or :data:`FLUSH_BYTES` of float64 rows), :meth:`take` hands
    it over. Rows are copied as float64 (what the reduction reads), or in their own type
    with ``keep_dtype`` (a spill to disk: the conversion is exact, done when read back).
    ``pending_bytes`` counts float64 bytes either way, so that whoever bounds the sum over
    many buffers decides the same way for both."""

    def __init__(self, groups: int, columns: int, *, keep_dtype: bool = False) -> None:
        self.groups = groups
        self.columns = columns
        self.dtype = None if keep_dtype else np.dtype(np.float64)
        self._blocks: list[np.ndarray] = []
        self._rows = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of the rows held, as float64."""
        return self._rows * self.groups * self.columns * 8

    def push(self, rows: np.ndarray) -> bool:
        """Hold a copy of ``rows`` (``[groups, n, columns]``); True when the block is due."""
        if rows.ndim != 3 or rows.shape[0] != self.groups or rows.shape[2] != self.columns:
            msg = f"rows of shape {rows.shape} do not fit stats [{self.groups}, n, {self.columns}]"
            raise ValueError(msg)
        self._blocks.append(np.array(rows, dtype=self.dtype))
        self._rows += int(rows.shape[1])
        return self._rows >= self.columns or self.pending_bytes >= FLUSH_BYTES

    def take(self) -> np.ndarray | None:
        """The rows held, as one ``[groups, n, columns]`` block (None when empty)."""
        if not self._blocks:
            return None
        wide = np.concatenate(self._blocks, axis=1)
        self._blocks.clear()
        self._rows = 0
        return wide


@dataclass
class ActivationStats:
    """Reduced activations of one weight.

    ``sq_sum`` is float64 ``[groups, columns]``: the sum over rows of each column squared.
    ``count`` is the number of rows reduced (per group). ``gram`` is float64
    ``[groups, columns, columns]`` (``X^T X``) or None when not collected.

    :meth:`add` buffers small batches of rows (until there are ``columns`` of them, or
    :data:`FLUSH_BYTES`) so the Gram update runs on large blocks; call :meth:`flush`
    before reading the sums.
    """

    layout: StatsLayout
    sq_sum: np.ndarray
    count: int
    gram: np.ndarray | None
    _buffer: RowBuffer | None = field(default=None, repr=False, compare=False)

    @property
    def groups(self) -> int:
        return int(self.sq_sum.shape[0])

    @property
    def columns(self) -> int:
        return int(self.sq_sum.shape[1])

    def add(self, rows: np.ndarray) -> None:
        """Reduce ``rows`` (``[groups, n, columns]``, any float type) into the statistics."""
        if self._buffer is None:
            self._buffer = RowBuffer(self.groups, self.columns)
        if self._buffer.push(rows):
            self.flush()

    @property
    def pending_bytes(self) -> int:
        """Bytes of rows buffered and not yet reduced."""
        return 0 if self._buffer is None else self._buffer.pending_bytes

    def flush(self) -> None:
        """Reduce the buffered rows into ``sq_sum``, ``count`` and ``gram``."""
        wide = None if self._buffer is None else self._buffer.take()
        if wide is not None:
            self.reduce(wide)

    def reduce(self, wide: np.ndarray) -> None:
        """Reduce one block of float64 rows ``[groups, n, columns]`` now, unbuffered."""
        self.sq_sum += np.einsum("gnc,gnc->gc", wide, wide)
        if self.gram is not None:
            for group in range(self.groups):
                rows = wide[group]
                self.gram[group] += rows.T @ rows  # numpy uses a symmetric rank-k update
        self.count += int(wide.shape[1])

    def merged(self, other: ActivationStats) -> ActivationStats:
        """The statistics of both (same layout and shape); a Gram only if both have one."""
        self.flush()
        other.flush()
        if (self.layout, self.sq_sum.shape) != (other.layout, other.sq_sum.shape):
            msg = "cannot merge statistics of different layouts or shapes"
            raise ValueError(msg)
        gram = None if self.gram is None or other.gram is None else self.gram + other.gram
        return ActivationStats(
            self.layout, self.sq_sum + other.sq_sum, self.count + other.count, gram
        )


def empty_stats(
    layout: StatsLayout, groups: int, columns: int, *, with_gram: bool
) -> ActivationStats:
    """Zeroed statistics for ``groups`` x ``columns``."""
    gram = np.zeros((groups, columns, columns)) if with_gram else None
    return ActivationStats(layout, np.zeros((groups, columns)), 0, gram)


def linear_rows(activation: np.ndarray, axis: int) -> np.ndarray:
    """``[1, n, C]``: every vector of ``activation`` along ``axis`` (the contraction axis)."""
    moved = np.moveaxis(activation, axis, -1)
    return moved.reshape(1, -1, moved.shape[-1])


def conv_patches(
    activation: np.ndarray,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> np.ndarray:
    """``[groups, n, C_in/groups * prod(kernel)]``: the input patches of a convolution.

    ``activation`` is ``[N, C_in, spatial...]`` (already padded, as the Core AI convolution
    sees it). Row order: batch, then output positions row-major; column order: channel within
    the group, then kernel positions row-major (the weight's own layout).
    """
    batch, channels = activation.shape[:2]
    spatial = len(kernel)
    per_group = channels // groups
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
    axes = tuple(range(2, 2 + spatial))
    windows = sliding_window_view(activation, extent, axis=axes)
    # windows: [N, C, out_pos..., extent...]; take strides of positions, dilation of taps
    positions = tuple(slice(None, None, s) for s in stride)
    taps = tuple(slice(None, None, d) for d in dilation)
    windows = windows[(slice(None), slice(None), *positions, *taps)]
    out_shape = windows.shape[2 : 2 + spatial]
    n_pos = math.prod(out_shape)
    # -> [groups, N, out_pos..., C/g, kernel...]
    grouped = windows.reshape(batch, groups, per_group, *out_shape, *kernel)
    order = (1, 0, *range(3, 3 + spatial), 2, *range(3 + spatial, 3 + 2 * spatial))
    patches = grouped.transpose(order)
    return patches.reshape(groups, batch * n_pos, per_group * math.prod(kernel))


def input_norms(
    stats: ActivationStats, shape: tuple[int, ...], out_axis: int, in_axis: int
) -> np.ndarray:
    """``||X_j||_2`` for every element of a weight of ``shape``: broadcastable to it.

    ``linear``: one norm per input channel, along ``in_axis``. ``conv``: one per unfolded
    column, repeated over the output channels of each group (``out_axis`` 0, ``in_axis`` 1).
    ``channels``: one per input channel along ``in_axis``.
    """
    norms: np.ndarray = np.sqrt(stats.sq_sum)
    if stats.layout is StatsLayout.CONV:
        out_channels = shape[out_axis]
        per_group = out_channels // stats.groups
        expanded: np.ndarray = np.repeat(norms, per_group, axis=0)  # [C_out, columns]
        return expanded.reshape(shape)
    view = [1] * len(shape)
    view[in_axis] = shape[in_axis]
    return norms.reshape(-1).reshape(view)
