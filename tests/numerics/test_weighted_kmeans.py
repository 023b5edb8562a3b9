"""Weighted 1-D k-means: never worse than its start, exact where it can be, and it follows
the weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils.numerics.kmeans import palettize_rows
from coreai_opt.coreai_utils.numerics.kmeans.weighted import (
    stable_order,
    weighted_error,
    weighted_rows,
)
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 5),
    n=st.integers(2, 600),
    nbits=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from([np.float32, np.float16]),
)
def test_never_worse_than_the_plain_lut_and_indices_are_nearest(
    seed: int, rows: int, n: int, nbits: int, dtype: type
) -> None:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((rows, n)) * rng.uniform(0.1, 3.0, (rows, 1))).astype(dtype)
    weights = rng.uniform(0.0, 1.0, (rows, n)) ** 3
    plain, _ = palettize_rows(values, nbits)
    lut, indices = weighted_rows(values, weights, nbits, plain.astype(np.float64))
    assert lut.dtype == values.dtype and lut.shape == (rows, 1 << nbits)
    assert np.all(np.diff(lut.astype(np.float64), axis=1) >= 0)
    before = weighted_error(values, weights, plain)
    after = weighted_error(values, weights, lut)
    assert np.all(after <= before * (1 + 1e-6) + 1e-12)
    decoded = np.take_along_axis(lut, indices.astype(np.intp), axis=1).astype(np.float64)
    distance = np.abs(values.astype(np.float64)[:, :, None] - lut.astype(np.float64)[:, None, :])
    assert np.allclose(np.abs(decoded - values.astype(np.float64)), distance.min(axis=2))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 12), nbits=st.sampled_from([2, 3, 4]))
def test_a_batch_is_its_rows_one_by_one(seed: int, rows: int, nbits: int) -> None:
    # rows of different spreads and sizes stop iterating at different times: the rows
    # left keep their own sums (the batch narrows, it never mixes rows up)
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((rows, 300)) * rng.uniform(0.01, 5.0, (rows, 1))).astype(
        np.float32
    )
    weights = rng.exponential(size=(rows, 300))
    plain, _ = palettize_rows(values, nbits)
    lut, indices = weighted_rows(values, weights, nbits, plain)
    for r in range(rows):
        alone = weighted_rows(values[r : r + 1], weights[r : r + 1], nbits, plain[r : r + 1])
        assert np.array_equal(lut[r], alone[0][0])
        assert np.array_equal(indices[r], alone[1][0])


def test_the_entries_go_where_the_weight_is() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((1, 4000)).astype(np.float32)
    weights = np.where(values > 0, 1.0, 1e-4)  # only the positive half matters
    plain, _ = palettize_rows(values, 2)
    lut, _ = weighted_rows(values, weights, 2, plain.astype(np.float64))
    assert np.sum(lut[0] > 0) >= 3 > np.sum(plain[0] > 0)
    assert weighted_error(values, weights, lut)[0] < 0.5 * weighted_error(values, weights, plain)[0]


def test_few_distinct_values_are_kept_and_zero_weights_keep_the_start() -> None:
    values = np.array([[1.0, 2.0, 3.0, 2.0, 1.0, 3.0], [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]], np.float32)
    weights = np.ones(values.shape)
    weights[1] = 0.0
    start = np.array([[0.5, 1.5, 2.5, 9.0], [5.0, 6.5, 8.0, 9.5]])
    lut, indices = weighted_rows(values, weights, 2, start)
    assert set(lut[0].tolist()) >= {1.0, 2.0, 3.0}
    decoded = np.take_along_axis(lut, indices.astype(np.intp), axis=1)
    assert np.array_equal(decoded[0], values[0])
    assert np.array_equal(lut[1], start[1].astype(np.float32))


def test_rejects_non_finite_and_negative_weights() -> None:
    values = np.ones((1, 8), np.float32)
    with pytest.raises(NonFiniteError):
        weighted_rows(values, np.full((1, 8), np.nan), 1, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_rows(values, -np.ones((1, 8)), 1, np.zeros((1, 2)))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 4),
    n=st.integers(1, 3000),
    dtype=st.sampled_from([np.float32, np.float16, np.float64]),
    distinct=st.integers(1, 50),
)
def test_stable_order_is_the_stable_argsort(
    seed: int, rows: int, n: int, dtype: type, distinct: int
) -> None:
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    special = [0.0, -0.0, info.tiny, -info.tiny, info.smallest_subnormal, info.max, -info.max]
    pool = np.concatenate([np.array(special), rng.standard_normal(distinct)]).astype(dtype)
    values = rng.choice(pool, size=(rows, n))  # many ties, signed zeros, subnormals, extremes
    expected = np.argsort(values.astype(np.float64), axis=1, kind="stable")
    assert np.array_equal(stable_order(values), expected)
