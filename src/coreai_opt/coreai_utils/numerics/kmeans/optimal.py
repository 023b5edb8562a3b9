"""Globally optimal 1-D k-means of a histogram, batched over rows (dynamic programming).

Lloyd's algorithm stops in a local optimum, and with few LUT entries on skewed, heavy-tailed
or coarsely stored values (16-bit floats a few steps apart) the one it reaches can be well
above the one plain Lloyd from quantiles reaches (up to 1.5x measured). The best partition of
a histogram's bins into ``k`` runs of consecutive bins, found exactly here, lands in the
global optimum's basin; Lloyd then only polishes it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["optimal_centroids"]

_CHUNK_CELLS = 1 << 18  # segment table cells (rows x points x points) per chunk of rows


def optimal_centroids(weight: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` sorted centroids of the best partition of each row's points into at most
    ``k`` runs of consecutive points, each run's centroid its weighted mean.

    ``weight`` and ``total`` (``[r, B]``, float): each point's mass and moment (mass times
    position), points in increasing position. Best: least squared error, that is the
    largest sum over runs of ``moment**2 / mass``, compared in float32 (on moments about the
    row's mean in units of its farthest point: within ~1e-5 of the row's spread of the
    optimum, at any scale or offset); the centroids are float64 means. Runs without mass are
    dropped; a row with fewer than ``k`` runs repeats its last centroid; a row without mass
    gets NaN. Ties go to fewer runs, then to the earlier split. Cost ``O(k r B**2)``.
    """
    rows, points = weight.shape
    result = np.empty((rows, k))
    step = max(1, _CHUNK_CELLS // max(1, points * points))
    for start in range(0, rows, step):
        part = slice(start, min(start + step, rows))
        result[part] = _chunk(weight[part], total[part], k)
    return result


def _chunk(weight: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    rows, points = weight.shape
    mass = np.zeros((rows, points + 1))
    moment = np.zeros((rows, points + 1))
    np.cumsum(weight, axis=1, out=mass[:, 1:])
    # moments about the row's mean, in units of the farthest point from it: the same best
    # runs (the sum of moment**2 / mass over runs only drops by a constant and scales), but
    # gains that float32 holds and compares at any scale and offset
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(mass[:, -1:] > 0, total.sum(axis=1, keepdims=True) / mass[:, -1:], 0.0)
        away = np.where(weight > 0, np.abs(total / weight - mean), 0.0)
    reach = away.max(axis=1, keepdims=True)
    unit = np.where(reach > 0, reach, 1.0)
    np.cumsum((total - weight * mean) / unit, axis=1, out=moment[:, 1:])
    # gain[r, i, j]: moment**2 / mass of the run of points i..j, -inf where i > j; float32
    # (starts need no more, and it halves the traffic), from float64 differences
    run_mass = mass[:, None, 1:] - mass[:, :-1, None]
    run_moment = moment[:, None, 1:] - moment[:, :-1, None]
    run_moment *= run_moment
    gain = np.empty((rows, points, points), dtype=np.float32)
    gain[...] = np.where(np.triu(np.ones((points, points), dtype=bool)), 0.0, -np.inf)
    np.divide(run_moment, run_mass, out=gain, where=run_mass > 0, casting="same_kind")
    del run_mass, run_moment
    # best[m][r, j]: the most with at most m + 1 runs over points 0..j; the previous runs
    # cover 0..i-1 and the new one i..j (reduced over i, an outer axis: vectorized over j)
    layers = min(k, points)
    best = [gain[:, 0].copy()]
    split = np.empty((rows, points - 1, points), dtype=np.float32)
    for layer in range(1, layers):
        previous = best[-1]
        if layer < layers - 1:
            np.add(gain[:, 1:], previous[:, :-1, None], out=split)
            best.append(np.maximum(previous, split.max(axis=1)))
        else:  # of the last layer only the last point is read
            last = previous.copy()
            ending = gain[:, 1:, -1] + previous[:, :-1]
            np.maximum(last[:, -1], ending.max(axis=1), out=last[:, -1])
            best.append(last)
    every = np.arange(rows)

    def run_mean(low: np.ndarray, end: np.ndarray) -> np.ndarray:
        # each row's mean of points low..end, NaN without mass
        with np.errstate(divide="ignore", invalid="ignore"):
            run_mass = mass[every, end + 1] - mass[every, low]
            centre = (moment[every, end + 1] - moment[every, low]) / run_mass * unit[:, 0]
        result: np.ndarray = np.where(run_mass > 0, centre + mean[:, 0], np.nan)
        return result

    end = np.full(rows, points - 1)
    centroids = np.full((rows, k), np.nan)
    for m in range(layers - 1, 0, -1):
        # a run was added unless at most m runs do as well (ties: fewer runs)
        added = best[m][every, end] > best[m - 1][every, end]
        options = gain[every, 1:, end] + best[m - 1][:, :-1]  # [r, i - 1]
        low = np.where(added, options.argmax(axis=1) + 1, 0)
        centroids[:, m] = np.where(added, run_mean(low, end), np.nan)
        end = np.where(added, low - 1, end)
    centroids[:, 0] = run_mean(np.zeros(rows, dtype=np.intp), end)
    centroids.sort(axis=1)  # NaN (no run) last
    found = np.count_nonzero(~np.isnan(centroids), axis=1)
    last = centroids[every, np.maximum(found - 1, 0)]
    filled: np.ndarray = np.where(np.isnan(centroids), last[:, None], centroids)
    return filled
