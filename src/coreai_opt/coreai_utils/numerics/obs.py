"""One optimal-brain-surgeon column sweep for SparseGPT, GPTQ and rounding to a LUT, pure numpy.

A weight ``W [rows, columns]`` is used as ``y = W x``; ``H = X^T X`` is the Gram matrix of its
inputs (columns x columns). The sweep visits the columns left to right, turns each into its
stored form with a *projection* (zero the pruned entries, round to a quantization grid, round
to a LUT, or prune and round), and pushes the error onto the columns not yet visited through
the upper Cholesky factor ``U`` of ``H^-1`` (``U^T U = H^-1``)::

    e = (w_c - p(w_c)) / U_cc,    w_j -= U_cj * e   for every j > c,

which keeps ``||(W - W') X||^2`` low given the columns already fixed (Frantar & Alistarh,
SparseGPT 2023; Frantar et al., GPTQ 2022). What the algorithms share is here, written once:

* dampening: ``H += 0.01 * mean(diag(H)) * I``; a dead column (zero diagonal: its input is
  always zero in the calibration data) gets ``H_dd = 1`` first, so its error never reaches
  another column (its row of ``U`` is zero off the diagonal);
* lazy updates: blocks of up to 128 columns and sub-blocks of up to 16 inside them, both
  made of whole groups of the projection (a group wider than the limit is a block or
  sub-block of its own); within a sub-block the updates are eager, the rest are applied a
  sub-block and a block at a time as matrix products;
* a projection's *groups* (n:m groups, quantization blocks, the vectors of a vector LUT) are
  entered when the sweep reaches their first column, with every column of the group up to
  date (all earlier columns' errors already pushed onto it); so are the blocks;
* the factorization in float64, the sweep in ``precision`` (float32 by default, as in the
  papers; float64 to compare with a reference);
* the sweep's matrix products on one BLAS thread (:mod:`blas`: with a thread per core they
  stall whenever another process holds a core);
* optionally the columns in decreasing order of ``H``'s diagonal ("act-order", GPTQ): the
  columns whose inputs carry the most energy are fixed first, while every other column can
  still compensate for them. The order belongs to the factorization (``factor(order=True)``);
  the projection is still told each column's own index, and the result comes back in the
  weight's order. Only for projections without groups (a group is a run of consecutive
  columns).

A projection is a small object (:class:`Projection`): ``groups`` (its boundaries),
``enter_block`` and ``enter_group`` (to fix a block's mask or a group's scale from the
current values), and ``project`` (a column's stored form). :class:`Joint` prunes and then
rounds the kept values.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, replace

import numpy as np

from coreai_opt.coreai_utils.numerics.blas import one_blas_thread

__all__ = [
    "BLOCK",
    "DAMPENING",
    "SUB_BLOCK",
    "Factor",
    "Joint",
    "Projection",
    "blocks",
    "factor",
    "inverse_cholesky_upper",
    "sweep",
]

DAMPENING = 0.01
BLOCK = 128
SUB_BLOCK = 16
_DIRECT_INVERSE = 256


class Projection:
    """How a column becomes its stored form; the base class keeps every value (no groups,
    nothing to do when a block or group is entered)."""

    def groups(self, columns: int) -> list[int] | None:
        """Group boundaries ``[0, ..., columns]`` (sorted), or None for no groups."""
        del columns
        return None

    def enter_block(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        """The sweep reaches the block starting at ``start``: ``values`` are its columns
        (``[block columns, rows]``, up to date, not to be written), ``scale`` their
        ``U_cc``."""

    def enter_group(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        """The sweep reaches the group starting at ``start`` (as for :meth:`enter_block`)."""

    def project(self, column: int, values: np.ndarray) -> np.ndarray:
        """The stored form of ``column`` (``values``: its current entries, one per row), in
        the sweep's precision."""
        del column
        return values


class Joint(Projection):
    """Prune with ``prune`` (its groups and blocks decide the mask), then round the kept
    values with ``rounding`` (which must have no groups); pruned entries stay exact zeros."""

    def __init__(self, prune: Projection, rounding: Projection) -> None:
        self.prune = prune
        self.rounding = rounding

    def groups(self, columns: int) -> list[int] | None:
        return self.prune.groups(columns)

    def enter_block(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        self.prune.enter_block(start, values, scale)

    def enter_group(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        self.prune.enter_group(start, values, scale)

    def project(self, column: int, values: np.ndarray) -> np.ndarray:
        pruned = self.prune.project(column, values)
        rounded = self.rounding.project(column, pruned)
        result: np.ndarray = np.where(pruned != 0, rounded, values.dtype.type(0))
        return result


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


@dataclass(frozen=True)
class Factor:
    """The dampened Hessian's ``upper`` (``U``, in the sweep's precision) and the ``dead``
    columns (zero diagonal in the Gram matrix), both in sweep order; ``permutation`` the
    weight's column at each sweep position (None: the weight's own order)."""

    upper: np.ndarray
    dead: np.ndarray
    permutation: np.ndarray | None = None

    @property
    def scale(self) -> np.ndarray:
        """``U_cc`` per column."""
        return np.diagonal(self.upper)


_CACHE: dict[tuple[object, ...], tuple[weakref.ref[np.ndarray], Factor]] = {}
_CACHED = 4  # factors kept: the weights that share an input (q, k, v) come one after another


def _key(gram: np.ndarray, dampening: float, precision: type, *, order: bool) -> tuple[object, ...]:
    """Where ``gram``'s numbers live (its base array, address, shape, strides: views of the
    same statistics, ``stats.gram[0]`` taken again, share it) and their sum (an array
    changed in place between two calls is not mistaken for the one factored)."""
    base = gram.base if gram.base is not None else gram
    address = gram.__array_interface__["data"][0]
    total = float(np.sum(gram, dtype=np.float64))
    return (id(base), address, gram.shape, gram.strides, total, dampening, precision, order)


def factor(
    gram: np.ndarray,
    *,
    dampening: float = DAMPENING,
    precision: type = np.float32,
    order: bool = False,
) -> Factor:
    """``U`` of ``gram`` after the dead columns get ``H_dd = 1`` and the dampening is added
    (``dampening * mean(diag)`` on the diagonal); in float64, returned in ``precision``.
    ``order``: the columns by decreasing diagonal of ``gram`` (stable: ties by index).

    The last few factors are kept while their Gram matrices live: weights that read the same
    input (q, k and v; gate and up) share one factorization. Statistics are not modified
    once collected, so a kept factor is the one a new computation would give."""
    key = _key(gram, dampening, precision, order=order)
    cached = _CACHE.get(key)
    base = gram.base if gram.base is not None else gram
    if cached is not None and cached[0]() is base:
        return cached[1]
    permutation = np.argsort(-np.diagonal(gram), kind="stable") if order else None
    if permutation is not None:
        gram = gram[np.ix_(permutation, permutation)]
    made = replace(_factor(gram, dampening, precision), permutation=permutation)
    if len(_CACHE) >= _CACHED:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (weakref.ref(base), made)
    return made


def _factor(gram: np.ndarray, dampening: float, precision: type) -> Factor:
    hessian = np.array(gram, dtype=np.float64)
    columns = hessian.shape[0]
    diagonal = np.diagonal(hessian).copy()
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += dampening * float(np.mean(diagonal))
    hessian[np.diag_indices(columns)] = diagonal
    upper = inverse_cholesky_upper(hessian, precision)
    return Factor(upper, dead)


def blocks(bounds: list[int], limit: int) -> list[tuple[int, int]]:
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


def sweep(
    weight: np.ndarray,
    factored: Factor,
    projection: Projection,
    *,
    zero_dead: bool = False,
    precision: type = np.float32,
) -> np.ndarray:
    """Sweep ``weight [rows, columns]`` with ``projection`` against ``factored`` (module
    docstring); ``zero_dead`` zeroes the dead columns first (they do not change the
    calibration outputs: pruning takes them before anything else). Returns the result in
    ``precision``, in the weight's column order (a transposed view of a column-major work
    array). An ordered ``factored`` needs a projection without groups."""
    columns = weight.shape[1]
    if factored.upper.shape != (columns, columns):
        msg = f"a Hessian of shape {factored.upper.shape} does not match {columns} columns"
        raise ValueError(msg)
    permutation = factored.permutation
    if permutation is not None and projection.groups(columns) is not None:
        msg = "an ordered sweep needs a projection without groups"
        raise ValueError(msg)
    upper = factored.upper
    scale = factored.scale.copy()
    # [columns, rows] in sweep order, always a copy: the caller's weight is never written
    laid = weight.T if permutation is None else weight.T[permutation]
    work: np.ndarray = np.array(laid, dtype=precision, order="C")
    if zero_dead:
        work[factored.dead] = 0.0
    with one_blas_thread():
        _columns(work, upper, scale, projection, permutation)
    if permutation is not None:
        work = work[np.argsort(permutation)]
    return work.T


def _columns(
    work: np.ndarray,
    upper: np.ndarray,
    scale: np.ndarray,
    projection: Projection,
    permutation: np.ndarray | None,
) -> None:
    """The sweep's loop over the columns of ``work [columns, rows]`` (in sweep order), in
    place; the projection is told each column's index in the weight."""
    columns, rows = work.shape
    precision = work.dtype
    grouped = projection.groups(columns)
    bounds = grouped if grouped is not None else list(range(columns + 1))
    stops = dict(itertools.pairwise(bounds)) if grouped is not None else {}
    for start, end in blocks(bounds, BLOCK):
        projection.enter_block(start, work[start:end], scale[start:end])
        errors: np.ndarray = np.zeros((end - start, rows), dtype=precision)
        inner = [b for b in bounds if start <= b <= end]
        for sub_start, sub_end in blocks(inner, SUB_BLOCK):
            for column in range(sub_start, sub_end):
                stop = stops.get(column)
                if stop is not None:
                    projection.enter_group(column, work[column:stop], scale[column:stop])
                values = work[column]
                own = column if permutation is None else int(permutation[column])
                stored = projection.project(own, values)
                error = (values - stored) / scale[column]
                work[column] = stored
                errors[column - start] = error
                if column + 1 < sub_end:
                    work[column + 1 : sub_end] -= np.outer(
                        upper[column, column + 1 : sub_end], error
                    )
            if sub_end < end:
                work[sub_end:end] -= (
                    upper[sub_start:sub_end, sub_end:end].T
                    @ errors[sub_start - start : sub_end - start]
                )
        if end < columns:
            work[end:] -= upper[start:end, end:].T @ errors
