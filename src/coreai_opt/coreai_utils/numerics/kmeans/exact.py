"""Exact 1-D k-means on a row's distinct values (Lloyd on sorted, weighted points), nearest
entries, and LUT rows rounded to their dtype (pure numpy)."""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.kmeans.starts import quantiles

__all__ = ["exact_row", "lloyd_weighted", "nearest_sorted", "padded_rows"]

_MAX_ITERATIONS = 100_000  # exact Lloyd: an iteration costs O(k log n), converging is cheap


def padded_rows(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Sorted centroids ``[r, k]`` rounded to ``dtype``, duplicates dropped, each row
    padded by repeating its last entry."""
    rounded = centroids.astype(dtype)
    wide = rounded.astype(np.float64)
    rows, k = wide.shape
    keep = np.ones((rows, k), dtype=bool)
    keep[:, 1:] = wide[:, 1:] != wide[:, :-1]
    position = np.cumsum(keep, axis=1) - 1
    distinct = np.empty_like(rounded)
    distinct[np.arange(rows)[:, None], position] = rounded
    last = position[:, -1:]
    result: np.ndarray = distinct[np.arange(rows)[:, None], np.minimum(np.arange(k), last)]
    return result


def exact_row(
    values: np.ndarray, k: int, binned: tuple[np.ndarray, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """``(lut [k], indices)`` of one row by Lloyd on its exact distinct values: from each of
    the ``binned`` centroids of a row whose bins were coarse (on heavy tails far better
    starts than quantiles), else from the weighted quantiles; and from the values'
    interpolated quantiles, keeping the best (the start decides which local optimum Lloyd
    reaches; ties to the earlier start)."""
    wide = values.astype(np.float64)
    points, counts = np.unique(wide, return_counts=True)
    weights = counts.astype(np.float64)
    starts: list[np.ndarray | None] = [np.unique(start) for start in binned] or [None]
    if points.size > k:
        starts.append(np.unique(quantiles(wide[None], k)[0]))
    runs = [lloyd_weighted(points, weights, k, start) for start in starts]
    centroids = min(runs, key=lambda run: _sse(points, weights, run))
    entries = np.unique(centroids.astype(values.dtype).astype(np.float64))
    if values.dtype.itemsize < 4:  # rounding to float32 moves an entry by ~1e-7 at most
        # on values a few storage steps apart (fp16 near 7) a cluster of two values has its
        # mean rounded onto one of them, which plain Lloyd then leaves
        entries = lloyd_weighted(points, weights, k, entries, stored=values.dtype)
    # k sorted entries for padded_rows: the last one repeated
    edge = np.pad(entries, (0, k - entries.size), mode="edge")
    lut = padded_rows(edge[None], values.dtype)[0]
    return lut, nearest_sorted(wide, entries)


def _sse(points: np.ndarray, weights: np.ndarray, centroids: np.ndarray) -> float:
    nearest_centroid = centroids[nearest_sorted(points, centroids)]
    return float(np.sum(weights * (points - nearest_centroid) ** 2))


def nearest_sorted(values: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Index (uint8) of the nearest of the sorted ``entries`` (at most 256) for each value,
    ties to the lower: the number of midpoints between neighbours below the value."""
    boundaries = (entries[1:] + entries[:-1]) / 2
    indices: np.ndarray = np.searchsorted(boundaries, values, side="left").astype(np.uint8)
    return indices


def lloyd_weighted(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    starts: np.ndarray | None = None,
    *,
    stored: np.dtype | None = None,
) -> np.ndarray:
    """Sorted centroids of a weighted 1-D k-means on sorted ``points``, from quantile starts
    (or the given sorted ``starts``).

    Iterates until the assignment is stable (or a fixed cap); an empty cluster keeps its
    centroid. With ``stored``, each mean is rounded to that dtype (a LUT's storage): no step
    raises the error, since the best stored value for a cluster is the one nearest its mean.
    Returns at most ``k`` distinct centroids; with no more than ``k`` points, the points
    themselves.
    """
    if points.size <= k:
        return points.copy()
    cumulative = np.cumsum(weights)
    if starts is None:
        targets = (np.arange(k) + 0.5) / k * cumulative[-1]
        starts = points[np.minimum(np.searchsorted(cumulative, targets), points.size - 1)]
    centroids = np.unique(starts)
    prefix_w = np.concatenate(([0.0], cumulative))
    prefix_x = np.concatenate(([0.0], np.cumsum(weights * points)))
    cuts: np.ndarray | None = None
    for _ in range(_MAX_ITERATIONS):
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        inner = np.searchsorted(points, boundaries, side="right")
        new_cuts = np.concatenate(([0], inner, [points.size]))
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
        mass = prefix_w[cuts[1:]] - prefix_w[cuts[:-1]]
        moment = prefix_x[cuts[1:]] - prefix_x[cuts[:-1]]
        # an empty cluster keeps its centroid (it may win points back later)
        centroids = np.sort(np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), centroids))
        if stored is not None:
            centroids = np.unique(centroids.astype(stored).astype(np.float64))
    return np.unique(centroids)
