"""Where Lloyd starts, and how a start is scored: quantiles, cube-root-density starts, bins
merged into runs, per-row searches (pure numpy)."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "binned_quantiles",
    "cube_root_starts",
    "explained",
    "merged_runs",
    "quantiles",
    "search_rows",
]


def quantiles(rows: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` (float64) the rows' quantiles at ``(i + 0.5) / k``, from one sort per row:
    the values of ``np.quantile``'s default (linear between order statistics)."""
    ordered = np.sort(rows, axis=1).astype(np.float64)
    position = (rows.shape[1] - 1) * ((np.arange(k) + 0.5) / k)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, rows.shape[1] - 1)
    fraction = position - low
    below, above = ordered[:, low], ordered[:, high]
    step = above - below
    # numpy's interpolation: from the nearer order statistic
    result: np.ndarray = np.where(
        fraction >= 0.5, above - step * (1 - fraction), below + step * fraction
    )
    return result


def explained(sums: np.ndarray) -> np.ndarray:
    """Per row, the sum over clusters of ``sum**2 / count`` from ``sums`` ``[2, r, k]``: a
    row's squared error is its values' sum of squares minus this, so the larger the
    better."""
    explained: np.ndarray = np.sum(sums[1] ** 2 / np.maximum(sums[0], 1), axis=1)
    return explained


def binned_quantiles(mass: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` flat bin indices (row ``i``'s bins start at ``i * (bins + 1)``) of the
    quantiles at ``(j + 0.5) / k``: the bin holding that rank. ``mass``: ``[r, bins + 1]``
    prefix sums of the counts (from 0). Exact: the ranks and the row offsets are integers
    and dyadic fractions well inside float64's precision."""
    count, size = mass.shape
    totals = mass[:, -1:]
    ranks = (np.arange(k) + 0.5) / k * totals
    # the first prefix sum above the rank ends the bin that holds it
    within = search_rows(mass, ranks, totals.max() + 1, side="right")
    result: np.ndarray = np.maximum(within - 1, 0) + np.arange(count)[:, None] * size
    return result


def merged_runs(prefix: np.ndarray, points: int) -> np.ndarray:
    """``[2, r, points]`` counts and moments of each row's bins merged into ``points`` runs
    (some maybe empty): cut at equal steps of bins and at equal steps of mass, half each, so
    that both a dense peak and a long sparse tail are resolved. ``prefix``: ``[2, r, bins +
    1]`` prefix sums of counts and moments."""
    _, count, size = prefix.shape
    bins = size - 1
    half = points // 2
    even = np.broadcast_to(np.arange(half) * bins // half, (count, half))
    totals = prefix[0, :, -1:]
    ranks = np.arange(half) / half * totals
    by_mass = search_rows(prefix[0], ranks, totals.max() + 1, side="right") - 1
    cuts = np.sort(np.concatenate((even, np.clip(by_mass, 0, bins)), axis=1), axis=1)
    edges = np.concatenate((cuts, np.full((count, 1), bins)), axis=1)
    runs: np.ndarray = np.diff(np.take_along_axis(prefix, edges[None], axis=2), axis=2)
    return runs


def search_rows(
    rows: np.ndarray, targets: np.ndarray, gap: float, *, side: Literal["left", "right"]
) -> np.ndarray:
    """``np.searchsorted`` of ``targets`` ``[r, t]`` in each sorted row of ``rows`` ``[r, m]``
    (indices within the row), in one search: row ``i`` and its targets shifted by ``i *
    gap``, ``gap`` above every row's and target's spread."""
    shift = np.arange(rows.shape[0])[:, None]
    found = np.searchsorted(
        (rows + shift * gap).reshape(-1),
        (targets + shift * gap).reshape(-1),
        side=side,
    )
    within: np.ndarray = found.reshape(targets.shape) - shift * rows.shape[1]
    return within


def cube_root_starts(mass: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` strictly increasing start bins: the quantiles of the cube root of the
    density (``cbrt(count / width) * width``), read on bins merged into 16 per entry (starts
    need no fine resolution; up to 16 bins each), or fewer, down to 2, so that a merged bin
    holds about 16 values (the root of counts of a value or two jitters the starts: uniform
    rows of 32 values per entry at 8 bits stopped up to 1.07x above plain Lloyd); ``mass``:
    prefix sums of the counts, ``centre``: each bin's value."""
    count, bins = mass.shape[0], mass.shape[1] - 1
    wanted = max(2 * k, min(16 * k, int(mass[0, -1]) // 16))  # every row holds n values
    merge = 16 if wanted == 16 * k else bins
    while merge > 1 and (bins % merge or bins // merge < wanted):
        merge //= 2
    wide = np.diff(mass[:, ::merge], axis=1)
    first = centre[:, ::merge]  # a merged bin spans from its first centre to the next
    span = np.empty(first.shape)
    np.subtract(first[:, 1:], first[:, :-1], out=span[:, :-1])
    span[:, -1] = centre[:, -1] + (first[:, -1] - first[:, -2]) - first[:, -1]
    wide *= span  # float64: span**2 of extreme rows overflows float32
    wide *= span
    peak = wide.max(axis=1, keepdims=True)
    # scaled to [0, 1] per row (the scale cancels below), then the root in float32
    density = np.empty(wide.shape, dtype=np.float32)
    np.divide(wide, np.where(peak > 0, peak, 1.0), out=density, casting="same_kind")
    with np.errstate(divide="ignore"):  # log(0) = -inf: a root of 0
        np.log(density, out=density)
    density *= np.float32(1 / 3)
    # float32 sums are several times faster and precise enough to place starts
    cumulative = np.cumsum(np.exp(density, out=density), axis=1).astype(np.float64)
    totals = cumulative[:, -1:]
    cumulative /= np.where(totals > 0, totals, 1.0)  # each row in [0, 1], whatever its scale
    targets = np.broadcast_to((np.arange(k) + 0.5) / k, (count, k))
    start = search_rows(cumulative, targets, 2.0, side="left") * merge + merge // 2
    step = np.arange(k)
    start = np.maximum.accumulate(np.clip(start, 0, bins - 1) - step, axis=1) + step
    # strictly increasing in [0, bins) (rows of fewer bins than k are clustered exactly)
    result: np.ndarray = np.clip(np.minimum(start, bins - k + step), 0, bins - 1)
    return result
