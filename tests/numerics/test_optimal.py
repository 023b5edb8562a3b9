"""Optimal 1-D k-means of weighted points: against every partition, by brute force."""

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.numerics.kmeans.optimal import optimal_centroids


def _run_error(weight: np.ndarray, position: np.ndarray, cuts: tuple[int, ...]) -> float:
    """Squared error of the runs that ``cuts`` split the points into, each at its mean."""
    edges = (0, *cuts, weight.size)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        mass = weight[low:high].sum()
        if mass > 0:
            mean = (weight[low:high] * position[low:high]).sum() / mass
            error += float((weight[low:high] * (position[low:high] - mean) ** 2).sum())
    return error


@st.composite
def histograms(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    points = draw(st.integers(1, 8))
    weight = draw(hnp.arrays(np.float64, points, elements=st.integers(0, 5))).astype(np.float64)
    steps = draw(hnp.arrays(np.float64, points, elements=st.floats(0.001, 10)))
    offset = draw(st.sampled_from([0.0, 7.0, -1000.0]))  # far from 0: float32 gains
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30]))  # gains past float32's range
    return weight, scale * (offset + np.cumsum(steps)), draw(st.integers(1, 5))


@given(histograms())
def test_no_partition_does_better(histogram: tuple[np.ndarray, np.ndarray, int]) -> None:
    weight, position, k = histogram
    centroids = optimal_centroids(weight[None], (weight * position)[None], k)[0]
    assert centroids.shape == (k,)
    if weight.sum() == 0:
        assert np.isnan(centroids).all()
        return
    assert np.all(np.diff(centroids) >= 0)
    error = float((weight * np.min((position[:, None] - centroids) ** 2, axis=1)).sum())
    best = min(
        _run_error(weight, position, cuts)
        for runs in range(min(k, weight.size))
        for cuts in itertools.combinations(range(1, weight.size), runs)
    )
    # the runs are compared in float32, to 1e-5 of the spread about the mean; centroids
    # are computed in float64
    rounding = 1e-12 * float((weight * position**2).sum())
    assert error <= best + 1e-5 * _run_error(weight, position, ()) + rounding


def test_rows_are_independent_and_short_rows_repeat_their_last_centroid() -> None:
    rng = np.random.default_rng(0)
    weight = rng.integers(1, 9, (300, 40)).astype(np.float64)
    total = weight * np.cumsum(rng.random((300, 40)), axis=1)
    together = optimal_centroids(weight, total, 6)
    for row in (0, 157, 299):
        alone = optimal_centroids(weight[row : row + 1], total[row : row + 1], 6)
        assert np.array_equal(alone[0], together[row])
    two = optimal_centroids(np.array([[3.0, 0.0, 0.0, 5.0]]), np.array([[3.0, 0.0, 0.0, 20.0]]), 4)
    assert np.array_equal(two[0], [1.0, 4.0, 4.0, 4.0])
