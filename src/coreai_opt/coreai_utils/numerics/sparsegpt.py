"""SparseGPT (Frantar & Alistarh 2023): prune and update the kept weights, pure numpy.

For a 2-D weight ``W [rows, columns]`` used as ``y = W x`` and the inputs' Gram matrix
``H = X^T X`` (columns x columns), the columns are swept left to right; pruning a column
spreads its error onto the columns not yet visited (optimal-brain-surgeon updates through
the upper Cholesky factor of ``H^-1``), so the kept weights compensate for the pruned ones.

Details, as in the paper's reference implementation:

* dampening: ``H += 0.01 * mean(diag(H)) * I``; a dead column (zero diagonal: the input is
  always zero) gets ``H_dd = 1`` and its weights are set to zero first (they have no effect
  on the calibration outputs, so they are pruned before anything else);
* columns are processed in blocks of (up to) 128 that hold whole n:m groups;
* unstructured: the mask of each block is chosen when the sweep reaches it:
  ``floor(rows * block_columns * sparsity)`` elements with the lowest ``w^2 / U_jj^2``
  (ties by position, column-major within the block); n:m: the mask of each group is chosen
  when the sweep reaches the group, the ``n`` lowest ``w^2 / U_jj^2`` per row;
* everything is computed in float64; the caller rounds the result once.

Pruned positions are exact zeros; kept values change.
"""

from __future__ import annotations

import itertools

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.masks import all_finite, prune_count, select_lowest
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse

__all__ = ["DAMPENING", "inverse_cholesky_upper", "sparsegpt", "sparsegpt_weight"]

DAMPENING = 0.01
BLOCK = 128
_SUB_BLOCK = 16
_DIRECT_INVERSE = 256


def _lower_inverse(lower: np.ndarray, out: np.ndarray) -> None:
    """``out = lower^-1`` for a lower-triangular ``lower`` by recursive blocking (the work
    is in matmuls); ``out`` is zero above the diagonal on entry and stays so."""
    size = lower.shape[0]
    if size <= _DIRECT_INVERSE:
        out[:] = np.tril(np.linalg.inv(lower))
        return
    half = size // 2
    _lower_inverse(lower[:half, :half], out[:half, :half])
    _lower_inverse(lower[half:, half:], out[half:, half:])
    out[half:, :half] = -(out[half:, half:] @ lower[half:, :half]) @ out[:half, :half]


def inverse_cholesky_upper(gram: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``U`` upper triangular with ``U^T U = gram^-1`` (``gram`` symmetric positive definite),
    as a contiguous array of ``dtype``; the factorization runs in float64.

    With ``J`` the reversal, ``cholesky(J H J) = L`` gives ``H = R R^T`` for the upper
    ``R = J L J``, so ``H^-1 = R^-T R^-1`` and ``U = R^-1 = J L^-1 J``.
    """
    lower = np.linalg.cholesky(np.asarray(gram, dtype=np.float64)[::-1, ::-1])
    inverse = np.zeros_like(lower)
    _lower_inverse(lower, inverse)
    del lower
    return np.ascontiguousarray(inverse[::-1, ::-1], dtype=dtype)


def _blocks(bounds: list[int], limit: int) -> list[tuple[int, int]]:
    """Split ``[bounds[0], bounds[-1])`` at the group ``bounds`` into runs of at most
    ``limit`` columns (a single group longer than ``limit`` is its own run)."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(bounds) - 1:
        j = i + 1
        while j + 1 < len(bounds) and bounds[j + 1] - bounds[i] <= limit:
            j += 1
        runs.append((bounds[i], bounds[j]))
        i = j
    return runs


def _group_bounds(columns: int, m: int | None, segment: int) -> list[int]:
    """Group boundaries: groups of ``m`` restarting at every ``segment`` columns (or every
    column when ``m`` is None)."""
    if m is None:
        return list(range(columns + 1))
    bounds: list[int] = []
    for seg_start in range(0, columns, segment):
        seg_end = min(seg_start + segment, columns)
        bounds.extend(range(seg_start, seg_end, m))
    bounds.append(columns)
    return bounds


def sparsegpt(
    weight: np.ndarray,
    gram: np.ndarray,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    segment: int | None = None,
    dampening: float = DAMPENING,
    precision: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Prune ``weight [rows, columns]`` against ``gram [columns, columns]``.

    Exactly one of ``sparsity`` (unstructured) and ``n_m`` is given. For n:m, groups of
    ``m`` consecutive columns restart every ``segment`` columns (default: all columns form
    one segment); a trailing partial group of ``r`` columns drops ``max(0, n - (m - r))``
    per row, as in :func:`masks.nm_mask`.

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
    hessian = np.array(gram, dtype=np.float64)
    diagonal = np.diagonal(hessian).copy()
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += dampening * float(np.mean(diagonal))
    hessian[np.diag_indices(columns)] = diagonal
    upper = inverse_cholesky_upper(hessian, precision)
    del hessian
    scale = np.diagonal(upper).copy()
    work: np.ndarray = np.ascontiguousarray(weight.T, dtype=precision)  # [columns, rows]
    work[dead] = 0.0

    m = n_m[1] if n_m is not None else None
    bounds = _group_bounds(columns, m, segment or columns)
    group_end = dict(itertools.pairwise(bounds)) if n_m is not None else {}
    keep = np.ones((columns, rows), dtype=bool)
    for start, end in _blocks(bounds, BLOCK):
        if sparsity is not None:
            scores = work[start:end] ** 2 / scale[start:end, None] ** 2
            keep[start:end] = ~select_lowest(scores, prune_count(scores.size, sparsity))
        errors: np.ndarray = np.zeros((end - start, rows), dtype=precision)
        inner = [b for b in bounds if start <= b <= end]
        for sub_start, sub_end in _blocks(inner, _SUB_BLOCK):
            _sweep(work, upper, scale, keep, errors, start, sub_start, sub_end, group_end, n_m)
            if sub_end < end:
                work[sub_end:end] -= (
                    upper[sub_start:sub_end, sub_end:end].T
                    @ errors[sub_start - start : sub_end - start]
                )
        if end < columns:
            work[end:] -= upper[start:end, end:].T @ errors
    return work.T, keep.T


def _sweep(
    work: np.ndarray,
    upper: np.ndarray,
    scale: np.ndarray,
    keep: np.ndarray,
    errors: np.ndarray,
    block_start: int,
    start: int,
    end: int,
    group_end: dict[int, int],
    n_m: tuple[int, int] | None,
) -> None:
    """One sub-block of columns (whole n:m groups), updated eagerly within it; n:m masks
    are chosen when the sweep reaches a group's first column."""
    for column in range(start, end):
        if n_m is not None and column in group_end:
            stop = group_end[column]
            width = stop - column
            drop = max(0, n_m[0] - (n_m[1] - width))
            scores = work[column:stop] ** 2 / scale[column:stop, None] ** 2
            order = np.argsort(scores, axis=0, kind="stable")
            chosen = np.ones(scores.shape, dtype=bool)
            np.put_along_axis(chosen, order[:drop], values=False, axis=0)
            keep[column:stop] = chosen
        values = work[column]
        pruned = np.where(keep[column], values, values.dtype.type(0))
        error = (values - pruned) / scale[column]
        work[column] = pruned
        errors[column - block_start] = error
        if column + 1 < end:
            work[column + 1 : end] -= np.outer(upper[column, column + 1 : end], error)


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
                matrix[band][:, order], gram, sparsity=sparsity, n_m=n_m, segment=per_group
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
