"""Palettize rows: the driver that codes, counts, clusters and labels each batch of rows in
a pipeline, and refines the rows that need it exactly (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.numerics.kmeans.binned import binned_lloyd
from coreai_opt.coreai_utils.numerics.kmeans.exact import exact_row, padded_rows
from coreai_opt.coreai_utils.numerics.kmeans.grid import Grid
from coreai_opt.coreai_utils.numerics.kmeans.labels import assign, label_rows
from coreai_opt.coreai_utils.numerics.kmeans.starts import quantiles as start_quantiles
from coreai_opt.coreai_utils.numerics.parallel import parallel_map, pipeline, tiles

__all__ = ["Palette", "palettize", "palettize_rows"]

_BOTH_STARTS = 256  # rows of fewer values per entry also run Lloyd from their quantiles...
_BOTH_STARTS_ENTRIES = 16  # ...when there are at most this many entries
_FEW_PER_ENTRY = 32  # ...and always below this many values per entry
_FEW_BINS = 4  # rows in at most this many bins per entry are refined exactly


@dataclass(frozen=True)
class Palette:
    """``lut[indices]`` approximates the values: a sorted ``lut`` of ``2**nbits`` entries."""

    lut: np.ndarray
    indices: np.ndarray
    nbits: int

    def decode(self) -> np.ndarray:
        """The palettized values, ``lut[indices]``."""
        decoded: np.ndarray = self.lut[self.indices]
        return decoded


def palettize(values: np.ndarray, nbits: int) -> Palette:
    """Palettize 1-D float ``values`` with ``2**nbits`` LUT entries in their own dtype.

    Lossless when ``values`` has at most ``2**nbits`` distinct values. Unused entries repeat
    the last one. Each value maps to its nearest entry of the LUT as rounded to the dtype.
    """
    lut, indices = palettize_rows(values.reshape(1, -1), nbits)
    return Palette(lut=lut[0], indices=indices[0], nbits=nbits)


def palettize_rows(rows: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lut, indices)`` for a ``[R, n]`` float array (module docstring): ``lut`` ``[R,
    2**nbits]`` sorted per row in the rows' dtype, ``indices`` ``[R, n]`` uint8 with
    ``lut[r, indices[r]]`` the nearest entry to each value of row ``r``. Raises
    :class:`NonFiniteError` when a value is NaN or infinite."""
    k = 1 << nbits
    count, n = rows.shape
    lut = np.zeros((count, k), dtype=rows.dtype)
    indices = np.zeros((count, n), dtype=np.uint8)
    if n == 0 or count == 0:
        return lut, indices
    values = _float32(rows)  # exact for 16-bit floats; numpy is slow on them
    grid = Grid.of(values, k)
    exact = np.zeros(count, dtype=bool)
    coarse_starts: dict[int, tuple[np.ndarray, ...]] = {}  # coarse rows: binned centroids
    batches = [(start, min(start + grid.batch, count)) for start in range(0, count, grid.batch)]
    per_entry = n / k
    both = per_entry < _FEW_PER_ENTRY or (k <= _BOTH_STARTS_ENTRIES and per_entry < _BOTH_STARTS)

    def cluster(bounds: tuple[int, int], counts: np.ndarray) -> None:
        start, stop = bounds
        occupied = np.count_nonzero(counts, axis=1)
        few = occupied <= k
        exact[start:stop] = few
        if few.all():
            return
        quantiles = start_quantiles(values[start:stop], k) if both else None
        centroids, coarse, runner_up = binned_lloyd(
            grid, counts, k, few, start, quantiles=quantiles
        )
        if not both:  # values in a few bins each: the bins' centres misplace the centroids
            coarse |= (occupied <= _FEW_BINS * k) & ~few
        exact[start:stop] |= coarse
        for row in np.flatnonzero(coarse):
            starts = [centroids[row]]
            if runner_up is not None and not np.array_equal(runner_up[row], centroids[row]):
                starts.append(runner_up[row])
            coarse_starts[start + int(row)] = tuple(starts)
        lut[start:stop] = padded_rows(centroids, rows.dtype)

    if len(tiles(count, n)) > count:  # few long rows: coded and counted by tiles
        codes, long_counts = grid.bin_counts(values)
        parallel_map(lambda b: cluster(b, long_counts[b[0] : b[1]]), batches)
        assign(grid, values, codes, lut, indices)
    else:  # a batch of rows at a time: coded, counted, clustered, labelled
        codes = np.empty((count, n), dtype=np.uint16)
        counted: dict[int, np.ndarray] = {}

        def code(i: int) -> None:
            grid.code(values, codes, *batches[i])

        def count_batch(i: int) -> None:
            start, stop = batches[i]
            counted[i] = np.stack([grid.count(line) for line in codes[start:stop]])

        def cluster_batch(i: int) -> None:
            cluster(batches[i], counted.pop(i))

        def label(i: int) -> None:
            label_rows(grid, values, codes, lut, indices, *batches[i])

        # counting holds the GIL: one batch counts while the other threads code or cluster
        pipeline(len(batches), [code, count_batch, cluster_batch, label], serial=1)
    for row in np.flatnonzero(exact):
        lut[row], indices[row] = exact_row(rows[row], k, coarse_starts.get(int(row), ()))
    return lut, indices


def _float32(rows: np.ndarray) -> np.ndarray:
    """``rows`` as float32 (itself if it already is), converted by tiles on the thread pool."""
    if rows.dtype == np.float32:
        return rows
    out = np.empty(rows.shape, dtype=np.float32)

    def tile(b: tuple[int, int, int, int]) -> None:
        out[b[0] : b[1], b[2] : b[3]] = rows[b[0] : b[1], b[2] : b[3]]

    parallel_map(tile, tiles(*rows.shape))
    return out
