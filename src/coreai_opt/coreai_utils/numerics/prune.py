"""Fast pruning straight to the sparse form: chunked, on threads, without full-size temporaries.

Each function returns exactly ``to_sparse(weight, <mask function>(weight, ...))`` for the
matching definition in :mod:`masks` (tests compare them), but works on contiguous chunks
of rows in parallel and never materializes a full-size key array, boolean mask or sort:

* magnitude: the threshold key comes from a sample-guided exact selection (a strided
  sample brackets the target rank; one pass counts the keys below the bracket and gathers
  the few inside it; a partition of those gives the exact k-th key), then one pass per
  chunk keeps keys above it, extracts values and packs the mask;
* n:m: per chunk of rows, ranks within each group by pairwise comparison (m <= 8) or a
  stable sort;
* block (output axis 0): block scores per chunk, one selection over the scores, then keep.

Chunks split the weight along axis 0, so n:m over axis 0 and block sparsity over another
axis fall back to one chunk or to the reference definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from coreai_opt.coreai_utils.numerics.masks import block_mask, magnitude_key, nm_mask, prune_count
from coreai_opt.coreai_utils.numerics.parallel import CHUNK_ELEMENTS, parallel_map, row_chunks
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, pack_mask, to_sparse, unpack_mask

__all__ = ["kth_smallest", "prune_block", "prune_magnitude", "prune_nm"]

_SAMPLE = 1 << 16
_PAIRWISE_MAX_M = 8


def _assemble(
    flat: np.ndarray,
    segments: list[tuple[int, int]],
    keep_of: Callable[[int], np.ndarray],
    shape: tuple[int, ...],
) -> SparseWeight:
    """The sparse form from per-segment keep masks (``keep_of(i)`` for ``flat[segment i]``).

    Masks are packed first (counting the values per segment), then the values are
    compressed straight into one preallocated array: no second copy of the values.
    """

    def pack(index: int) -> tuple[np.ndarray, int]:
        keep = keep_of(index)
        return pack_mask(keep), int(np.count_nonzero(keep))

    packed = parallel_map(pack, range(len(segments)))
    offsets = np.concatenate(([0], np.cumsum([p[1] for p in packed]))).astype(np.int64)
    values = np.empty(int(offsets[-1]), dtype=flat.dtype)

    def compress(index: int) -> None:
        start, stop = segments[index]
        keep = unpack_mask(packed[index][0], (stop - start,))
        np.compress(keep, flat[start:stop], out=values[offsets[index] : offsets[index + 1]])

    parallel_map(compress, range(len(segments)))
    mask = np.concatenate([p[0] for p in packed]) if packed else np.zeros(0, dtype=np.uint8)
    return SparseWeight(values=values, packed_mask=mask, shape=shape)


def kth_smallest(flat: np.ndarray, k: int, segments: list[tuple[int, int]]) -> tuple[int, int, int]:
    """``(t, below, equal)``: the ``k``-th smallest (0-based) magnitude key of ``flat``, and
    how many keys are below it and equal to it. Exact; deterministic."""
    stride = max(1, flat.size // _SAMPLE)

    def keys_of(index: int) -> np.ndarray:
        start, stop = segments[index]
        return magnitude_key(flat[start:stop])

    return _select(keys_of, len(segments), flat.size, k, magnitude_key(flat[::stride]))


def _select(
    keys_of: Callable[[int], np.ndarray], parts: int, size: int, k: int, sample: np.ndarray
) -> tuple[int, int, int]:
    """Sample-guided exact selection over keys produced part by part (see :func:`kth_smallest`).

    A sorted ``sample`` brackets the target rank; one pass counts the keys below the
    bracket and gathers those inside it; a partition of the few gathered gives the answer.
    If the sample misjudged, everything is gathered instead (correct, just slower).
    """
    sample = np.sort(sample)
    position = (k + 0.5) / size * sample.size
    margin = 6 * math.sqrt(sample.size) + 16
    lo = sample[max(0, math.floor(position - margin))]
    hi = sample[min(sample.size - 1, math.ceil(position + margin))]

    def bracket(index: int) -> tuple[int, np.ndarray]:
        keys = keys_of(index)
        return int(np.count_nonzero(keys < lo)), np.extract((keys >= lo) & (keys <= hi), keys)

    results = parallel_map(bracket, range(parts))
    below = sum(r[0] for r in results)
    window = np.concatenate([r[1] for r in results])
    j = k - below
    if not 0 <= j < window.size:
        window, below, j = np.concatenate(parallel_map(keys_of, range(parts))), 0, k
    threshold = np.partition(window, j)[j]
    return (
        int(threshold),
        below + int(np.count_nonzero(window < threshold)),
        int(np.count_nonzero(window == threshold)),
    )


def prune_magnitude(
    weight: np.ndarray, sparsity: float, chunk_elements: int = CHUNK_ELEMENTS
) -> SparseWeight:
    """``to_sparse(weight, magnitude_mask(weight, sparsity))``, fast."""
    flat = np.ascontiguousarray(weight).reshape(-1)
    segments = row_chunks(flat.size, 1, chunk_elements)
    count = prune_count(flat.size, sparsity)
    if count <= 0:
        threshold, drop_ties, equal = 0, 0, 0  # keep every non-zero (key > 0)
    elif count >= flat.size:
        return to_sparse(weight, np.zeros(weight.shape, dtype=bool))
    else:
        threshold, below, equal = kth_smallest(flat, count - 1, segments)
        # keys equal to the threshold: the first (by index) are pruned, the rest kept; a
        # zero threshold means the ties are zeros, which are never stored anyway
        drop_ties = equal if threshold == 0 else count - below
    # per-segment tie counts matter only when some, but not all, ties are pruned
    partial = 0 < drop_ties < equal
    equal_counts = _tie_counts(flat, segments, threshold) if partial else None

    def keep_of(index: int) -> np.ndarray:
        start, stop = segments[index]
        keys = magnitude_key(flat[start:stop])
        keep = keys > threshold
        if equal_counts is not None and threshold > 0:
            dropped_before = int(sum(equal_counts[:index]))
            skip = max(0, min(equal_counts[index], drop_ties - dropped_before))
            if skip < equal_counts[index]:
                keep[np.flatnonzero(keys == threshold)[skip:]] = True
        return keep

    return _assemble(flat, segments, keep_of, weight.shape)


def _tie_counts(flat: np.ndarray, segments: list[tuple[int, int]], threshold: int) -> list[int]:
    def count(bounds: tuple[int, int]) -> int:
        return int(np.count_nonzero(magnitude_key(flat[bounds[0] : bounds[1]]) == threshold))

    return parallel_map(count, segments)


def _nm_keep(chunk: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    if m > _PAIRWISE_MAX_M:
        return nm_mask(chunk, n, m, axis)
    moved = np.moveaxis(chunk, axis, -1)
    channels = moved.shape[-1]
    keys = magnitude_key(moved).reshape(-1, channels)
    groups = -(-channels // m)
    # as in masks.nm_mask: real keys shifted up by one, padding keeps key 0 (lowest)
    padded = np.zeros((m, keys.shape[0] * groups), dtype=keys.dtype)
    grid = np.zeros((keys.shape[0], groups * m), dtype=keys.dtype)
    grid[:, :channels] = keys + keys.dtype.type(1)
    padded[:] = grid.reshape(-1, m).T
    rank = np.zeros(padded.shape, dtype=np.uint8)
    for i in range(m):
        for j in range(i + 1, m):
            first_wins = padded[i] <= padded[j]  # ties: the lower index ranks lower
            rank[j] += first_wins
            rank[i] += ~first_wins
    keep = (rank >= n).T.reshape(keys.shape[0], groups * m)[:, :channels]
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def prune_nm(
    weight: np.ndarray, n: int, m: int, axis: int, chunk_elements: int = CHUNK_ELEMENTS
) -> SparseWeight:
    """``to_sparse(weight, nm_mask(weight, n, m, axis))``, fast."""
    if not 0 <= n <= m or m < 1:
        msg = f"need 0 <= n <= m and m >= 1, got n={n}, m={m}"
        raise ValueError(msg)
    data = np.ascontiguousarray(weight)
    if data.ndim == 0 or axis == 0:
        chunks = [(0, data.shape[0] if data.ndim else 1)]
    else:
        chunks = row_chunks(data.shape[0], data.size // max(data.shape[0], 1), chunk_elements)
    row = data.size // max(data.shape[0], 1) if data.ndim else 1

    def keep_of(index: int) -> np.ndarray:
        start, stop = chunks[index]
        chunk = data[start:stop]
        keep: np.ndarray = (_nm_keep(chunk, n, m, axis) & (chunk != 0)).reshape(-1)
        return keep

    segments = [(start * row, stop * row) for start, stop in chunks]
    return _assemble(data.reshape(-1), segments, keep_of, weight.shape)


def prune_block(
    weight: np.ndarray,
    sparsity: float,
    block_size: int,
    axis: int,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> SparseWeight:
    """``to_sparse(weight, block_mask(weight, sparsity, block_size, axis))``, fast for axis 0.

    Block scores are recomputed per chunk (for the sample, the selection and the output)
    rather than stored; scores are float64 sums of squares, exactly as in the definition.
    """
    if axis != 0 or weight.ndim == 0:
        return to_sparse(weight, block_mask(weight, sparsity, block_size, axis))
    data = np.ascontiguousarray(weight)
    channels = data.shape[0]
    rest = data.size // max(channels, 1)
    chunks = row_chunks(channels, rest, chunk_elements, multiple=block_size)
    total = -(-channels // block_size) * rest
    count = prune_count(total, sparsity)

    def score_keys(index: int) -> np.ndarray:
        """Scores of the chunk's blocks, row-major (block, column), as order keys."""
        start, stop = chunks[index]
        rows = data[start:stop].reshape(stop - start, rest).astype(np.float64)
        blocks = -(-rows.shape[0] // block_size)
        padded = np.zeros((blocks * block_size, rest))
        padded[: rows.shape[0]] = rows
        shaped = padded.reshape(blocks, block_size, rest)
        scores: np.ndarray = np.einsum("bkr,bkr->br", shaped, shaped)
        return scores.reshape(-1).view(np.uint64)  # non-negative: bits order like values

    if count <= 0:
        threshold, drop_ties, tie_counts = -1, 0, None
    elif count >= total:
        return to_sparse(weight, np.zeros(weight.shape, dtype=bool))
    else:
        stride = max(1, total // _SAMPLE)
        sample = np.concatenate(
            parallel_map(lambda i: score_keys(i)[::stride].copy(), range(len(chunks)))
        )
        threshold, below, equal = _select(score_keys, len(chunks), total, count - 1, sample)
        drop_ties = count - below
        tie_counts = (
            parallel_map(
                lambda i: int(np.count_nonzero(score_keys(i) == threshold)), range(len(chunks))
            )
            if drop_ties < equal
            else None
        )

    def keep_of(index: int) -> np.ndarray:
        start, stop = chunks[index]
        chunk = data[start:stop]
        keys = score_keys(index)
        block_keep = keys > threshold if threshold >= 0 else np.ones(keys.shape, dtype=bool)
        if tie_counts is not None:
            dropped_before = int(sum(tie_counts[:index]))
            skip = max(0, min(tie_counts[index], drop_ties - dropped_before))
            block_keep[np.flatnonzero(keys == threshold)[skip:]] = True
        repeated = np.repeat(block_keep.reshape(-1, rest), block_size, axis=0)[: stop - start]
        keep: np.ndarray = (repeated.reshape(chunk.shape) & (chunk != 0)).reshape(-1)
        return keep

    segments = [(start * rest, stop * rest) for start, stop in chunks]
    return _assemble(data.reshape(-1), segments, keep_of, weight.shape)
