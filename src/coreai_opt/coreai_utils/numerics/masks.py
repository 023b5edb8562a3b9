"""Pruning masks: which elements of a weight survive, by magnitude.

Every function here is pure numpy and returns ``keep``: a boolean array shaped like the
weight, ``True`` where the element survives. Ties in magnitude (or in block score) are broken
by flat index, lower index pruned first, so results are deterministic. Magnitudes are
compared on the IEEE bit patterns with the sign bit cleared, which orders finite and infinite
values exactly like ``abs`` for float16, bfloat16, float32 and float64 without converting;
callers must reject NaN first (it would rank above infinity).
"""

from __future__ import annotations

import math

import numpy as np

from coreai_opt.coreai_utils.numerics.parallel import parallel_map, row_chunks

__all__ = [
    "NonFiniteError",
    "all_finite",
    "block_mask",
    "magnitude_key",
    "magnitude_mask",
    "nm_mask",
    "prune_count",
    "select_lowest",
]

_UINT_OF_WIDTH = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def prune_count(size: int, sparsity: float) -> int:
    """Number of items to prune: ``floor(size * sparsity)``."""
    return math.floor(size * sparsity)


def magnitude_key(weight: np.ndarray) -> np.ndarray:
    """Unsigned integers that order like ``abs(weight)`` (same shape; a new array).

    ``weight`` must have a 2-, 4- or 8-byte floating dtype (float16, bfloat16, float32,
    float64).
    """
    width = weight.dtype.itemsize
    if weight.dtype.kind not in "fV" or width not in _UINT_OF_WIDTH:
        msg = f"magnitude_key needs a 16/32/64-bit float array, got dtype {weight.dtype}"
        raise TypeError(msg)
    uint = np.dtype(_UINT_OF_WIDTH[width])
    bits: np.ndarray = np.ascontiguousarray(weight).view(uint)
    magnitude_bits = np.array((1 << (8 * width - 1)) - 1, dtype=uint)
    keys: np.ndarray = bits & magnitude_bits
    return keys


class NonFiniteError(ValueError):
    """A weight holds NaN or Inf (found by a reduction the algorithm computes anyway)."""

    reason = "contains NaN or Inf"

    def __init__(self) -> None:
        super().__init__(self.reason)


def check_finite(*reductions: np.ndarray) -> None:
    """Raise :class:`NonFiniteError` unless every value of ``reductions`` (per-row minima,
    maxima or magnitudes, which NaN and Inf propagate to) is finite."""
    if not all(np.isfinite(part).all() for part in reductions):
        raise NonFiniteError


def all_finite(weight: np.ndarray) -> bool:
    """Whether no element is NaN or infinite (on the bit patterns: no float conversion)."""
    width = weight.dtype.itemsize * 8
    exponent_bits = {16: 5 if weight.dtype == np.float16 else 8, 32: 8, 64: 11}[width]
    mantissa_bits = width - 1 - exponent_bits
    infinity = ((1 << exponent_bits) - 1) << mantissa_bits
    flat = np.ascontiguousarray(weight).reshape(-1)
    largest = parallel_map(
        lambda b: int(magnitude_key(flat[b[0] : b[1]]).max(initial=0)), row_chunks(flat.size, 1)
    )
    return max(largest, default=0) < infinity


def select_lowest(keys: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask (shape of ``keys``) of the ``count`` lowest keys, ties by flat index.

    ``keys`` may be any totally ordered numeric array without NaN.
    """
    flat = keys.reshape(-1)
    chosen = np.zeros(flat.shape, dtype=bool)
    if count <= 0:
        return chosen.reshape(keys.shape)
    if count >= flat.size:
        chosen[:] = True
        return chosen.reshape(keys.shape)
    threshold = np.partition(flat, count - 1)[count - 1]
    below = flat < threshold
    missing = count - int(np.count_nonzero(below))
    chosen |= below
    chosen[np.flatnonzero(flat == threshold)[:missing]] = True
    return chosen.reshape(keys.shape)


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Unstructured pruning: the ``floor(size * sparsity)`` lowest-|w| elements are dropped.

    Existing zeros rank lowest, so they are dropped first.
    """
    pruned = select_lowest(magnitude_key(weight), prune_count(weight.size, sparsity))
    return ~pruned


def block_mask(weight: np.ndarray, sparsity: float, block_size: int, axis: int) -> np.ndarray:
    """Block pruning along ``axis`` (the output channel axis).

    A block is ``block_size`` consecutive indices of ``axis`` at one position of all other
    axes; the last block along ``axis`` may be shorter. Blocks are scored by their L2 norm and
    the ``floor(number_of_blocks * sparsity)`` lowest-scoring blocks are dropped whole. Ties
    are broken by block index in row-major order of (block along ``axis``, other axes).
    """
    if block_size < 1:
        msg = f"block_size must be >= 1, got {block_size}"
        raise ValueError(msg)
    moved = np.moveaxis(weight, axis, 0)
    channels = moved.shape[0]
    rest = moved.reshape(channels, -1)
    n_blocks = -(-channels // block_size)
    padded = np.zeros((n_blocks * block_size, rest.shape[1]), dtype=np.float64)
    padded[:channels] = rest
    scores = np.einsum("bkr,bkr->br", *(padded.reshape(n_blocks, block_size, -1),) * 2)
    dropped = select_lowest(scores, prune_count(scores.size, sparsity))
    keep_rows = np.repeat(~dropped, block_size, axis=0)[:channels]
    return np.moveaxis(keep_rows.reshape(moved.shape), 0, axis)


def nm_mask(weight: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """N:M pruning along ``axis`` (the input channel axis).

    In every group of ``m`` consecutive indices of ``axis`` (at one position of the other
    axes) the ``n`` lowest-|w| elements are dropped, ties by index within the group. A
    trailing partial group of ``r`` elements behaves as if padded with zeros to ``m``; the
    padding ranks below every real element (real zeros included), so the group loses exactly
    ``max(0, n - (m - r))`` of its elements.
    """
    if not 0 <= n <= m or m < 1:
        msg = f"need 0 <= n <= m and m >= 1, got n={n}, m={m}"
        raise ValueError(msg)
    moved = np.moveaxis(weight, axis, -1)
    channels = moved.shape[-1]
    keys = magnitude_key(moved).reshape(-1, channels)
    n_groups = -(-channels // m)
    padded = np.zeros((keys.shape[0], n_groups * m), dtype=keys.dtype)
    # Keys have the sign bit clear, so +1 cannot overflow; padding keeps key 0, the lowest.
    padded[:, :channels] = keys + keys.dtype.type(1)
    grouped = padded.reshape(keys.shape[0], n_groups, m)
    order = np.argsort(grouped, axis=-1, kind="stable")
    dropped = np.zeros(grouped.shape, dtype=bool)
    np.put_along_axis(dropped, order[..., :n], values=True, axis=-1)
    keep = ~dropped.reshape(keys.shape[0], -1)[:, :channels]
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)
