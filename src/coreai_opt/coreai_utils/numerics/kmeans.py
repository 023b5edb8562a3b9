"""Exact-enough, fast 1-D k-means for palettization.

In sorted 1-D data every cluster of a k-means solution is a contiguous range, so one
Lloyd step is: boundaries at centroid midpoints, a binary search for where each boundary
falls, and cluster means from prefix sums. The data is first reduced to weighted points:
the distinct values of 16-bit floats exactly, or for wider floats bins of the top 16 bits
of their order-preserving bit pattern (a bfloat16-resolution histogram) represented by the
mean of the values in each bin. Iterations run on at most 65,536 points, and the final
centroids are those weighted means, so the result is deterministic and independent of
thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Palette", "kmeans_1d", "lloyd_weighted", "palettize", "weighted_points"]

_MAX_ITERATIONS = 300


@dataclass(frozen=True)
class Palette:
    """``values[i] == lut[indices[i]]`` (approximately): sorted ``lut`` of ``2**nbits`` entries."""

    lut: np.ndarray
    indices: np.ndarray
    nbits: int

    def decode(self) -> np.ndarray:
        """The palettized values, ``lut[indices]``."""
        decoded: np.ndarray = self.lut[self.indices]
        return decoded


def _order_keys(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Unsigned keys that sort like the float values (NaN-free input), and their bit width."""
    width = values.dtype.itemsize * 8
    uint = np.dtype(f"u{values.dtype.itemsize}")
    bits = np.ascontiguousarray(values).view(uint)
    sign = np.array(1 << (width - 1), dtype=uint)
    negative = (bits & sign) != 0
    # -0.0 (the lone sign bit) takes +0.0's key: they are one value
    keys = np.where(negative & (bits != sign), ~bits, bits | sign)
    return keys, width


def weighted_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points, weights, bin_of_value)``: sorted distinct bin means, their counts, and each
    value's bin index (into ``points``).

    For 16-bit floats each bin is one distinct value; for wider floats a bin gathers the
    values sharing the top 16 bits of their order-preserving bit pattern.
    """
    keys, width = _order_keys(values)
    bins = (keys >> (width - 16)).astype(np.int64) if width > 16 else keys.astype(np.int64)
    counts = np.bincount(bins, minlength=1 << 16)
    sums = np.bincount(bins, weights=values.astype(np.float64), minlength=1 << 16)
    used = np.flatnonzero(counts)
    remap = np.zeros(1 << 16, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return sums[used] / counts[used], counts[used].astype(np.float64), remap[bins]


def lloyd_weighted(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Sorted centroids of a weighted 1-D k-means on sorted ``points``, from quantile starts.

    Iterates to convergence (assignments stable) or a fixed cap. Returns at most ``k``
    distinct centroids; when there are no more than ``k`` points they are returned as is.
    """
    if points.size <= k:
        return points.copy()
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    targets = (np.arange(k) + 0.5) / k * total
    starts = points[np.minimum(np.searchsorted(cumulative, targets), points.size - 1)]
    centroids = np.unique(starts)
    prefix_w = np.concatenate(([0.0], cumulative))
    prefix_x = np.concatenate(([0.0], np.cumsum(weights * points)))
    cuts: np.ndarray | None = None
    for _ in range(_MAX_ITERATIONS):
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        new_cuts = np.concatenate(
            ([0], np.searchsorted(points, boundaries, side="right"), [points.size])
        )
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
        mass = prefix_w[cuts[1:]] - prefix_w[cuts[:-1]]
        moment = prefix_x[cuts[1:]] - prefix_x[cuts[:-1]]
        filled = mass > 0
        centroids = np.where(filled, moment / np.where(filled, mass, 1.0), centroids)
        centroids = np.unique(centroids[filled]) if not filled.all() else centroids
    return centroids


def kmeans_1d(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, labels)`` for 1-D float ``values``: sorted centroids (float64, at most
    ``k``) and each value's nearest-centroid index. Exact (centroids are the distinct
    values) when there are at most ``k`` distinct values."""
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    points, weights, bin_of = weighted_points(values)
    if points.size <= k and values.dtype.itemsize > 2:
        # a bin may hold several distinct wide floats: use the exact distinct values
        points, bin_of, counts = np.unique(
            values.astype(np.float64), return_inverse=True, return_counts=True
        )
        weights = counts.astype(np.float64)
    centroids = lloyd_weighted(points, weights, k)
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    point_labels = np.searchsorted(boundaries, points, side="right")
    return centroids, point_labels[bin_of]


def palettize(values: np.ndarray, nbits: int) -> Palette:
    """Palettize 1-D float ``values`` with ``2**nbits`` entries in their own dtype.

    Lossless when ``values`` has at most ``2**nbits`` distinct values. Unused LUT entries
    repeat the last centroid. Labels are nearest-entry for the LUT as rounded to the dtype.
    """
    k = 1 << nbits
    centroids, _ = kmeans_1d(values, k)
    rounded = np.unique(centroids.astype(values.dtype).astype(np.float64))
    padding = np.repeat(rounded[-1:], k - rounded.size)
    lut = np.concatenate((rounded, padding)) if rounded.size else np.zeros(k)
    boundaries = (rounded[1:] + rounded[:-1]) / 2
    labels = np.searchsorted(boundaries, values.astype(np.float64), side="right")
    return Palette(lut=lut.astype(values.dtype), indices=labels.astype(np.uint8), nbits=nbits)
