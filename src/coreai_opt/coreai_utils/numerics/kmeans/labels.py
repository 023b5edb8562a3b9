"""Each value's nearest LUT entry, exactly, from a table over the label bins (pure numpy)."""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.kmeans.grid import Grid
from coreai_opt.coreai_utils.numerics.parallel import parallel_map, tiles

__all__ = ["assign", "label_rows"]

_EDGE = 0.125  # a midpoint this close to its bin's edge also marks the neighbour bin (> 0.07)


def assign(
    grid: Grid, rows: np.ndarray, codes: np.ndarray, lut: np.ndarray, indices: np.ndarray
) -> None:
    """Write the nearest entry of each row's ``lut`` (ties to the lower) into ``indices``,
    on the thread pool by tiles (see :func:`label_rows`)."""
    table, bounds = _label_table(grid, lut, slice(None))

    def tile(b: tuple[int, int, int, int]) -> None:
        r0, r1, c0, c1 = b
        for r in range(r0, r1):
            _label_segment(table[r], bounds[r], rows[r, c0:c1], codes[r, c0:c1], indices[r, c0:c1])

    parallel_map(tile, tiles(*rows.shape))


def label_rows(
    grid: Grid,
    rows: np.ndarray,
    codes: np.ndarray,
    lut: np.ndarray,
    indices: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Write the nearest entry of each of ``rows[start:stop]``'s ``lut`` (ties to the
    lower) into ``indices``.

    A value's label is the number of midpoints below it, read from a per-bin table;
    values in a midpoint's bin, or in the next bin when the midpoint is within
    ``_EDGE`` of the edge between them (bins order values only up to 2 x 0.035 of a bin),
    are compared with the midpoints exactly."""
    table, bounds = _label_table(grid, lut[start:stop], slice(start, stop))
    for i, r in enumerate(range(start, stop)):
        _label_segment(table[i], bounds[i], rows[r], codes[r], indices[r])


def _label_table(grid: Grid, lut: np.ndarray, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """``(table, bounds)`` for :func:`label_rows` of ``rows`` (``lut`` theirs): ``bounds``
    ``[r, k - 1]`` the midpoints between distinct entries (inf for repeats, so sorted);
    ``table`` ``[r, label_bins]`` uint8, the midpoints in earlier label bins, 255 on the
    label bins whose values are compared with the midpoints."""
    entries = lut.astype(np.float64)
    count, k = entries.shape
    size = grid.label_bins
    distinct = entries[:, 1:] != entries[:, :-1]
    bounds = np.where(distinct, (entries[:, 1:] + entries[:, :-1]) / 2, np.inf)
    used = np.isfinite(bounds)
    position = grid.position(np.where(used, bounds, 0.0), rows)
    bound_bins = position.astype(np.intp)
    fraction = position - bound_bins
    # table[j] = midpoints in label bins before j: label v runs over the bins after the
    # v-th midpoint's, up to the (v+1)-th's (repeats' midpoints sit past the end)
    edges = np.full((count, k + 1), size - 1, dtype=np.intp)
    edges[:, 0] = -1
    edges[:, 1:k] = np.sort(np.where(used, bound_bins, size - 1), axis=1)
    labels = np.tile(np.arange(k, dtype=np.uint8), count)
    table = np.repeat(labels, np.diff(edges, axis=1).reshape(-1)).reshape(count, size)
    flat_table = table.reshape(-1)
    flat = bound_bins + (np.arange(count, dtype=np.intp) * size)[:, None]
    flat_table[flat[used]] = 255  # 255 also marks the label 255: compared too
    flat_table[(flat + 1)[used & (fraction >= 1 - _EDGE) & (bound_bins < size - 1)]] = 255
    flat_table[(flat - 1)[used & (fraction < _EDGE) & (bound_bins > 0)]] = 255
    return table, bounds


def _label_segment(
    table: np.ndarray, bounds: np.ndarray, values: np.ndarray, codes: np.ndarray, out: np.ndarray
) -> None:
    """Labels of a piece of one row into ``out``: ``table`` at its label bin ``codes``, the
    values in marked bins (255) compared with the midpoints ``bounds``."""
    np.take(table, codes, out=out, mode="clip")  # mode: unbuffered
    where = np.flatnonzero(out == 255)
    if where.size:
        out[where] = np.searchsorted(bounds, values[where].astype(np.float64), side="left")
