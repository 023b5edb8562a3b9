"""SparseGPT (Frantar & Alistarh 2023): prune and update the kept weights, pure numpy.

The column sweep of :mod:`obs` with the :class:`Prune` projection: pruning a column spreads
its error onto the columns not yet visited, so the kept weights compensate for the pruned
ones. As in the paper's reference implementation (the shared details are in :mod:`obs`):

* a dead column's weights are set to zero first (they have no effect on the calibration
  outputs, so they are pruned before anything else);
* unstructured: the mask of each block of 128 columns is chosen when the sweep reaches it:
  ``floor(rows * block_columns * sparsity)`` elements with the lowest ``w^2 / U_jj^2``
  (ties by position, column-major within the block); n:m: the mask of each group is chosen
  when the sweep reaches the group, the ``n`` lowest ``w^2 / U_jj^2`` per row;
* with a ``rounding`` projection the kept values are also rounded in the sweep (joint
  compression, as the paper does for 50 % + 4 bits);
* the caller rounds the result once to the weight's dtype.

Pruned positions are exact zeros; kept values change.
"""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.masks import all_finite, prune_count, select_lowest
from coreai_opt.coreai_utils.numerics.obs import (
    DAMPENING,
    Joint,
    Projection,
    factor,
    sweep,
)
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse

__all__ = ["Prune", "sparsegpt", "sparsegpt_weight"]


def _group_bounds(columns: int, m: int | None, segment: int) -> list[int] | None:
    """n:m group boundaries: groups of ``m`` restarting at every ``segment`` columns (None
    when ``m`` is None: unstructured masks are chosen per block)."""
    if m is None:
        return None
    bounds: list[int] = []
    for seg_start in range(0, columns, segment):
        seg_end = min(seg_start + segment, columns)
        bounds.extend(range(seg_start, seg_end, m))
    bounds.append(columns)
    return bounds


class Prune(Projection):
    """SparseGPT's projection: zero the pruned entries. Unstructured: the mask of a block
    is chosen when the sweep enters it (``floor(rows * block_columns * sparsity)`` lowest
    ``w^2 / U_cc^2``, ties by position, column-major within the block); n:m: the mask of a
    group when the sweep enters it, the ``n`` lowest scores per row (a trailing partial
    group of ``r`` drops ``max(0, n - (m - r))``). ``keep`` (``[columns, rows]``) is the
    mask so far."""

    def __init__(
        self,
        rows: int,
        columns: int,
        *,
        sparsity: float | None,
        n_m: tuple[int, int] | None,
        segment: int | None = None,
    ) -> None:
        self.sparsity = sparsity
        self.n_m = n_m
        self.segment = segment or columns
        self.keep = np.ones((columns, rows), dtype=bool)

    def groups(self, columns: int) -> list[int] | None:
        return _group_bounds(columns, self.n_m[1] if self.n_m else None, self.segment)

    def enter_block(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        if self.sparsity is None:
            return
        scores = values**2 / scale[:, None] ** 2
        end = start + values.shape[0]
        self.keep[start:end] = ~select_lowest(scores, prune_count(scores.size, self.sparsity))

    def enter_group(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        if self.n_m is None:
            return
        n, m = self.n_m
        width = values.shape[0]
        drop = max(0, n - (m - width))
        scores = values**2 / scale[:, None] ** 2
        order = np.argsort(scores, axis=0, kind="stable")
        chosen = np.ones(scores.shape, dtype=bool)
        np.put_along_axis(chosen, order[:drop], values=False, axis=0)
        self.keep[start : start + width] = chosen

    def project(self, column: int, values: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.where(self.keep[column], values, values.dtype.type(0))
        return result


def sparsegpt(
    weight: np.ndarray,
    gram: np.ndarray,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    segment: int | None = None,
    dampening: float = DAMPENING,
    precision: type = np.float32,
    rounding: Projection | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prune ``weight [rows, columns]`` against ``gram [columns, columns]``.

    Exactly one of ``sparsity`` (unstructured) and ``n_m`` is given. For n:m, groups of
    ``m`` consecutive columns restart every ``segment`` columns (default: all columns form
    one segment); a trailing partial group of ``r`` columns drops ``max(0, n - (m - r))``
    per row, as in :func:`masks.nm_mask`. ``rounding`` (a projection without groups, e.g. a
    quantization grid) also rounds the kept values inside the sweep, so that later columns
    compensate the rounding too.

    The Hessian is factorized in float64; the sweep runs in ``precision`` (float32 by
    default, as in the paper; float64 for an exact comparison with a reference).

    Returns ``(updated weight in ``precision`` with zeros where pruned, keep mask)``, both
    ``[rows, columns]`` (transposed views of column-major work arrays).
    """
    if (sparsity is None) == (n_m is None):
        msg = "give exactly one of sparsity and n_m"
        raise ValueError(msg)
    rows, columns = weight.shape
    if gram.shape != (columns, columns):
        msg = f"gram of shape {gram.shape} does not match {columns} columns"
        raise ValueError(msg)
    prune = Prune(rows, columns, sparsity=sparsity, n_m=n_m, segment=segment)
    projection = prune if rounding is None else Joint(prune, rounding)
    factored = factor(gram, dampening=dampening, precision=precision)
    result = sweep(weight, factored, projection, zero_dead=True, precision=precision)
    return result, prune.keep.T


def sparsegpt_weight(
    weight: np.ndarray,
    stats: ActivationStats,
    out_axis: int,
    in_axis: int,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
) -> SparseWeight:
    """:func:`sparsegpt` on a weight in its own layout, rounded once to its dtype.

    ``linear`` statistics: a rank-2 weight with output axis ``out_axis``; ``conv``: a
    ``[C_out, C_in/g, k...]`` weight, each group of output channels against its group's
    Gram, columns in the weight's order (n:m groups run along the input channels at each
    kernel position). Pruned positions are exact zeros; a kept value that rounds to zero is
    not stored either.
    """
    if stats.gram is None:
        msg = "sparsegpt needs X^T X statistics"
        raise ValueError(msg)
    if stats.layout is StatsLayout.LINEAR:
        matrix = np.moveaxis(weight, (out_axis, in_axis), (0, 1))
        updated, keep = sparsegpt(matrix, stats.gram[0], sparsity=sparsity, n_m=n_m)
        result = np.moveaxis(updated, (0, 1), (out_axis, in_axis))
        mask = np.moveaxis(keep, (0, 1), (out_axis, in_axis))
    elif stats.layout is StatsLayout.CONV:
        out_channels, per_group = weight.shape[0], weight.shape[1]
        taps = int(np.prod(weight.shape[2:]))
        matrix = weight.reshape(out_channels, -1)
        # n:m runs along input channels: put them last, one segment per kernel position
        order = np.arange(matrix.shape[1]).reshape(per_group, taps).T.reshape(-1)
        if n_m is None:
            order = np.arange(matrix.shape[1])
        rows = out_channels // stats.groups
        result = np.empty(matrix.shape, dtype=np.float32)
        mask = np.empty(matrix.shape, dtype=bool)
        for group in range(stats.groups):
            band = slice(group * rows, (group + 1) * rows)
            gram = stats.gram[group][np.ix_(order, order)]
            updated, keep = sparsegpt(
                matrix[band][:, order],
                gram,
                sparsity=sparsity,
                n_m=n_m,
                segment=per_group,
            )
            result[band][:, order] = updated
            mask[band][:, order] = keep
        result = result.reshape(weight.shape)
        mask = mask.reshape(weight.shape)
    else:
        msg = f"sparsegpt does not support {stats.layout.value} statistics"
        raise ValueError(msg)
    rounded = np.ascontiguousarray(result).astype(weight.dtype)
    if not all_finite(rounded):
        msg = "sparsegpt produced non-finite values"
        raise ArithmeticError(msg)
    return to_sparse(rounded, mask)
