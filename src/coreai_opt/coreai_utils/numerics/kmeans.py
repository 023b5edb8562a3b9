"""Fast, deterministic 1-D k-means for palettization.

In sorted 1-D data every cluster of a k-means solution is a contiguous range, so one
Lloyd step is: boundaries at centroid midpoints, a binary search for where each boundary
falls, and cluster means from prefix sums. The data is first reduced to a histogram over
the order-preserving bit patterns of the values: every distinct value of a 16-bit float
is its own bin; wider floats are binned on the top 22 bits (relative resolution 2**-14),
each bin represented by the value at its middle and the count of its values. Lloyd
iterations then run on at most 2**22 weighted points. Labels come from a per-bin table,
except for the few bins that contain a palette boundary, whose values are labelled by
exact binary search, so every value gets its nearest palette entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Histogram",
    "Palette",
    "histogram",
    "kmeans_1d",
    "lloyd_weighted",
    "padded_lut",
    "palettize",
]

_MAX_ITERATIONS = 100_000  # an iteration costs O(k log n): converging is cheap
_WIDE_BIN_BITS = 22


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


@dataclass(frozen=True)
class Histogram:
    """Values grouped by bin: ``bins[i]`` is value i's bin; ``used`` the non-empty bins in
    value order, with a representative value (``means``) and the ``counts`` of their values.
    ``exact`` when each bin holds a single distinct value."""

    bins: np.ndarray
    used: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    exact: bool


def _order_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned keys that sort like the float values (NaN-free input); -0.0 keys as +0.0."""
    width = values.dtype.itemsize * 8
    signed = np.dtype(f"i{values.dtype.itemsize}")
    uint = np.dtype(f"u{values.dtype.itemsize}")
    sign = np.array(1 << (width - 1), dtype=uint)
    bits = np.ascontiguousarray(values).view(uint)
    # negative: flip every bit; positive: flip the sign bit (arithmetic shift spreads the sign)
    flip = (bits.view(signed) >> (width - 1)).view(uint) | sign
    keys: np.ndarray = bits ^ flip
    keys[bits == sign] = sign  # -0.0 takes +0.0's key
    return keys


def _from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_order_keys`: the float values of order keys."""
    width = dtype.itemsize * 8
    uint = np.dtype(f"u{dtype.itemsize}")
    sign = np.array(1 << (width - 1), dtype=uint)
    keys = keys.astype(uint)
    bits = np.where((keys & sign) != 0, keys ^ sign, ~keys)
    values: np.ndarray = bits.view(dtype).astype(np.float64)
    return values


def histogram(values: np.ndarray) -> Histogram:
    """The histogram of 1-D float ``values`` described in the module docstring; a bin is
    represented by its value (16-bit floats) or the value at its key midpoint (relative
    error below 2**-15)."""
    width = values.dtype.itemsize * 8
    shift = max(0, width - _WIDE_BIN_BITS) if width > 16 else 0
    bins = (_order_keys(values) >> shift).astype(np.intp)
    counts = np.bincount(bins, minlength=1 << (width - shift))
    used = np.flatnonzero(counts)
    midpoint = (1 << (shift - 1)) if shift else 0
    return Histogram(
        bins=bins,
        used=used,
        means=_from_keys((used << shift) | midpoint, values.dtype),
        counts=counts[used].astype(np.float64),
        exact=shift == 0,
    )


def lloyd_weighted(
    points: np.ndarray, weights: np.ndarray, k: int, starts: np.ndarray | None = None
) -> np.ndarray:
    """Sorted centroids of a weighted 1-D k-means on sorted ``points``, from quantile starts
    (or the given sorted ``starts``).

    Iterates until the assignment is stable (or a fixed cap); an empty cluster keeps its
    centroid. Returns at most ``k`` distinct centroids; with no more than ``k`` points, the
    points themselves.
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
    return np.unique(centroids)


def _points(values: np.ndarray, hist: Histogram, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted points for Lloyd: bin means, or the exact distinct values when the
    histogram has no more bins than clusters (so few-valued inputs stay lossless)."""
    if hist.exact or hist.used.size > k:
        return hist.means, hist.counts
    distinct, counts = np.unique(values.astype(np.float64), return_counts=True)
    return distinct, counts.astype(np.float64)


def kmeans_1d(values: np.ndarray, k: int, hist: Histogram | None = None) -> np.ndarray:
    """Sorted centroids (float64, at most ``k``) of 1-D float ``values``; exactly the
    distinct values when there are at most ``k`` of them. ``hist`` is ``histogram(values)``
    if the caller already has it."""
    if values.size == 0:
        return np.zeros(0)
    hist = histogram(values) if hist is None else hist
    return lloyd_weighted(*_points(values, hist, k), k)


def nearest(values: np.ndarray, hist: Histogram, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of sorted ``lut`` for each value (ties to the lower)."""
    boundaries = (lut[1:] + lut[:-1]) / 2
    per_bin = np.zeros(int(hist.bins.max()) + 1 if hist.bins.size else 1, dtype=np.uint8)
    per_bin[hist.used] = np.searchsorted(boundaries, hist.means, side="left")
    labels: np.ndarray = per_bin[hist.bins]
    if hist.exact:
        return labels
    # bins holding a boundary may hold values on both sides of it: search those exactly
    straddling = np.zeros(per_bin.size, dtype=bool)
    edge_bins = np.searchsorted(hist.used, _bins_of(boundaries, hist), side="left")
    for offset in (-1, 0):
        straddling[hist.used[np.clip(edge_bins + offset, 0, hist.used.size - 1)]] = True
    fix = straddling[hist.bins]
    labels[fix] = np.searchsorted(boundaries, values[fix].astype(np.float64), side="left")
    return labels


def _bins_of(points: np.ndarray, hist: Histogram) -> np.ndarray:
    """The bin each float64 point would fall in, for float32 histograms."""
    keys = _order_keys(points.astype(np.float32))
    return (keys >> (32 - _WIDE_BIN_BITS)).astype(np.intp)


def palettize(values: np.ndarray, nbits: int) -> Palette:
    """Palettize 1-D float ``values`` with ``2**nbits`` LUT entries in their own dtype.

    Lossless when ``values`` has at most ``2**nbits`` distinct values. Unused entries repeat
    the last one. Each value maps to its nearest entry of the LUT as rounded to the dtype.
    """
    k = 1 << nbits
    if values.size == 0:
        return Palette(np.zeros(k, dtype=values.dtype), np.zeros(0, dtype=np.uint8), nbits)
    hist = histogram(values)
    lut, rounded = padded_lut(kmeans_1d(values, k, hist), k, values.dtype)
    return Palette(lut=lut, indices=nearest(values, hist, rounded), nbits=nbits)


def padded_lut(centroids: np.ndarray, k: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(lut, rounded)``: the centroids rounded to ``dtype`` (``rounded``: sorted, distinct,
    float64) and padded to ``k`` entries by repeating the last (``lut``, in ``dtype``)."""
    rounded = np.unique(centroids.astype(dtype).astype(np.float64))
    lut = np.concatenate((rounded, np.repeat(rounded[-1:], k - rounded.size)))
    return lut.astype(dtype), rounded
