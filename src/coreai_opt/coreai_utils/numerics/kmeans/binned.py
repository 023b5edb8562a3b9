"""Lloyd on the binned rows, all rows of a batch at once (pure numpy).

In 1-D every cluster is a contiguous range of bins, so an iteration is one bin index per
centroid midpoint and the cluster means from prefix sums. The starts and why each is tried
are in the package docstring.
"""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.kmeans.grid import Grid
from coreai_opt.coreai_utils.numerics.kmeans.optimal import optimal_centroids
from coreai_opt.coreai_utils.numerics.kmeans.starts import (
    binned_quantiles,
    cube_root_starts,
    explained,
    merged_runs,
)

__all__ = ["binned_lloyd"]

_BIN_ITERATIONS = 1000
_BIN_ERROR = 0.01
_OPTIMAL_ENTRIES = 16  # up to this many entries Lloyd also starts from the optimal partition
_OPTIMAL_POINTS = 64  # of the bins merged into this many


def binned_lloyd(
    grid: Grid,
    counts: np.ndarray,
    k: int,
    skip: np.ndarray,
    start: int,
    *,
    quantiles: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Lloyd on the binned rows ``counts`` ``[r, bins]`` (rows ``start`` on), except
    rows in ``skip``: ``(centroids [r, k] sorted values, coarse [r] bool, cube_root)``,
    coarse rows' bins being too wide for their clusters. From cube-root-density starts;
    with at most 16 entries also from the optimal partition of the bins merged into 64
    runs; and from ``quantiles`` (``[r, k]`` sorted values) if given, else from the
    binned quantiles (plain Lloyd's starts) for the rows they start below the error
    reached so far; keeping the best per row (module docstring). ``cube_root``: with at
    most 16 entries the cube-root starts' own result ``[r, k]`` (a coarse row is
    refined exactly from it too), else None."""
    count, bins = counts.shape
    rows = slice(start, start + count)
    centre, width = grid.centres(rows, np.arange(bins, dtype=np.float64))
    binning = np.einsum("ij,ij,ij->i", counts, width, width) / 12
    few_entries = k <= _OPTIMAL_ENTRIES
    # the bins' sum of squares: their clustered error is this minus the explained part
    squares = np.einsum("ij,ij,ij->i", counts, centre, centre) if few_entries else None
    del width
    prefix = np.zeros((2, count, bins + 1))
    prefix[0, :, 1:] = np.cumsum(counts, axis=1)  # in integers: several times faster
    first = cube_root_starts(prefix[0], centre, k)
    moments = prefix[1, :, 1:]
    np.multiply(counts, centre, out=moments)
    np.cumsum(moments, axis=1, out=moments)
    flat_centre = np.concatenate((centre, centre[:, -1:]), axis=1).reshape(-1)
    del centre
    flat = prefix.reshape(2, -1)
    every = np.arange(count)
    params = grid.cut_params(every + start, every * (bins + 1))
    active = np.flatnonzero(~skip)
    best = np.take(flat_centre, first + params[-1])
    _iterate(grid, best, active, params, flat_centre, flat)
    best_sums = _sums(grid, best, params, flat_centre, flat)
    best_explained = explained(best_sums)
    cube_root = best.copy() if few_entries else None

    def improve(starts: np.ndarray, which: np.ndarray) -> None:
        # Lloyd from starts on the rows which: keep a row's result where it explains more
        _iterate(grid, starts, which, params, flat_centre, flat)
        sums = _sums(grid, starts, params, flat_centre, flat)
        gained = explained(sums)
        better = np.zeros(count, dtype=bool)
        better[which] = gained[which] > best_explained[which]
        best[better], best_sums[:, better] = starts[better], sums[:, better]
        best_explained[better] = gained[better]

    if few_entries and active.size:
        runs = merged_runs(prefix, _OPTIMAL_POINTS)[:, active]  # no copy of prefix
        optimal = best.copy()
        optimal[active] = optimal_centroids(runs[0], runs[1], k)
        improve(optimal, active)
    if quantiles is None:
        quantiles = np.take(flat_centre, binned_quantiles(prefix[0], k))
        promising = explained(_sums(grid, quantiles, params, flat_centre, flat))
        active = active[promising[active] > best_explained[active]]
    if active.size:
        improve(quantiles.copy(), active)
    # coarse: the binning error (count * width**2 / 12 over the bins) above 1 % of the
    # clustered error. With few entries, the bins' own clustered error: a lone outlier
    # in a wide tail bin takes an entry, and the bin's centre for it cost up to 1.09x.
    # With many, an estimate, mass * spacing**2 / 12 per cluster (spacing: half the
    # distance between its neighbours), which an outlier's gap inflates: counting the
    # bins' error there made many more rows of real weights exact (2x the time at 8 bits)
    # for 0.1-0.6 % less error.
    if squares is not None:
        clustered = squares - best_explained
    else:
        padded = np.concatenate((best[:, :1], best, best[:, -1:]), axis=1)
        spacing = (padded[:, 2:] - padded[:, :-2]) / 2
        clustered = np.einsum("ij,ij,ij->i", best_sums[0], spacing, spacing) / 12
    return best, (binning > _BIN_ERROR * clustered) & ~skip, cube_root


def _iterate(
    grid: Grid,
    centroids: np.ndarray,
    active: np.ndarray,
    params: tuple[np.ndarray, ...],
    flat_centre: np.ndarray,
    flat: np.ndarray,
) -> None:
    """Lloyd iterations on ``centroids`` (updated in place) of the ``active`` rows until
    their clusters stop changing; ``flat``: prefix sums of counts and moments."""
    k = centroids.shape[1]
    params = tuple(p[active] for p in params)
    cuts = np.full((active.size, k + 1), -1, dtype=np.intp)
    current = centroids[active]
    for _ in range(_BIN_ITERATIONS):
        if active.size == 0:
            break
        now = grid.cuts(current, params, flat_centre)
        weight = np.diff(np.take(flat[0], now), axis=1)  # np.take: faster than indexing
        total = np.diff(np.take(flat[1], now), axis=1)
        filled = weight > 0
        if filled.all():  # means of consecutive clusters: already sorted
            moved = total / weight
        else:  # an empty cluster keeps its centroid, maybe out of order
            moved = np.where(filled, total / np.maximum(weight, 1), current)
            moved.sort(axis=1)
        going = np.any(now != cuts, axis=1)
        centroids[active] = moved
        if not going.all():
            active, cuts, current = active[going], now[going], moved[going]
            params = tuple(p[going] for p in params)
        else:
            cuts, current = now, moved


def _sums(
    grid: Grid,
    centroids: np.ndarray,
    params: tuple[np.ndarray, ...],
    flat_centre: np.ndarray,
    flat: np.ndarray,
) -> np.ndarray:
    """``[2, r, k]`` each cluster's count and sum of values (of its bins' values)."""
    sums: np.ndarray = np.diff(
        np.take(flat, grid.cuts(centroids, params, flat_centre), axis=1), axis=2
    )
    return sums
