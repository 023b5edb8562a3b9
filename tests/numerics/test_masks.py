"""Properties of the pruning masks, checked against the brute-force references."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.numerics import (
    all_finite,
    block_mask,
    magnitude_key,
    magnitude_mask,
    nm_mask,
    select_lowest,
    to_sparse,
)
from tests.reference import ref_block, ref_magnitude, ref_nm

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@st.composite
def weights(draw: st.DrawFn, min_dims: int = 1, max_dims: int = 4) -> np.ndarray:
    """Small float tensors with many ties and zeros (values from a tiny pool)."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=7))
    pool = draw(
        st.lists(st.floats(-4, 4, width=16), min_size=1, max_size=6).map(
            lambda v: [*v, 0.0, -0.0],
        ),
    )
    picks = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, len(pool) - 1)))
    return np.asarray(pool, dtype=np.float32)[picks].astype(dtype)


def pruned(weight: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, weight, np.zeros((), weight.dtype))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, except that -0.0 and +0.0 both count as zero."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return bool(
        np.array_equal(a32, b32)
        and np.array_equal(np.signbit(a32) & (a32 != 0), np.signbit(b32) & (b32 != 0))
    )


@given(weights(), st.floats(0, 1))
def test_magnitude_matches_reference(weight: np.ndarray, sparsity: float) -> None:
    keep = magnitude_mask(weight, sparsity)
    assert same_bits(pruned(weight, keep), ref_magnitude(weight, sparsity))


@given(weights(), st.floats(0, 1))
def test_magnitude_zero_count(weight: np.ndarray, sparsity: float) -> None:
    sparse = to_sparse(weight, magnitude_mask(weight, sparsity))
    existing = int(np.count_nonzero(weight == 0))
    n = math.floor(weight.size * sparsity)
    assert weight.size - sparse.values.size == max(n, existing)


def test_magnitude_ties_broken_by_flat_index() -> None:
    weight = np.array([[1.0, -1.0, 1.0], [1.0, 2.0, -1.0]], dtype=np.float32)
    keep = magnitude_mask(weight, 0.5)
    assert keep.tolist() == [[False, False, False], [True, True, True]]


def test_magnitude_handles_infinity_as_largest() -> None:
    weight = np.array([np.inf, -1.0, 3.0, -np.inf], dtype=np.float32)
    assert magnitude_mask(weight, 0.5).tolist() == [True, False, False, True]


@given(weights(min_dims=2), st.floats(0, 1), st.integers(2, 5), st.data())
def test_block_matches_reference(
    weight: np.ndarray, sparsity: float, block: int, data: st.DataObject
) -> None:
    axis = data.draw(st.integers(0, weight.ndim - 1))
    keep = block_mask(weight, sparsity, block, axis)
    assert same_bits(pruned(weight, keep), ref_block(weight, sparsity, block, axis))


@given(weights(min_dims=2), st.floats(0, 1), st.integers(2, 5), st.data())
def test_block_prunes_whole_aligned_blocks(
    weight: np.ndarray, sparsity: float, block: int, data: st.DataObject
) -> None:
    axis = data.draw(st.integers(0, weight.ndim - 1))
    keep = np.moveaxis(block_mask(weight, sparsity, block, axis), axis, 0)
    channels = keep.shape[0]
    n_blocks = -(-channels // block) * int(np.prod(keep.shape[1:]))
    dropped_blocks = 0
    for start in range(0, channels, block):
        chunk = keep[start : start + block]
        assert np.all(chunk == chunk[:1]), "a block is kept or dropped whole"
        dropped_blocks += int(np.count_nonzero(~chunk[0]))
    assert dropped_blocks == math.floor(n_blocks * sparsity)


@given(weights(min_dims=1), st.data())
def test_nm_matches_reference(weight: np.ndarray, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(0, m))
    axis = data.draw(st.integers(0, weight.ndim - 1))
    keep = nm_mask(weight, n, m, axis)
    assert same_bits(pruned(weight, keep), ref_nm(weight, n, m, axis))


@given(weights(min_dims=2), st.data())
def test_nm_group_counts(weight: np.ndarray, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(0, m))
    axis = data.draw(st.integers(0, weight.ndim - 1))
    keep = np.moveaxis(nm_mask(weight, n, m, axis), axis, -1)
    channels = keep.shape[-1]
    for start in range(0, channels, m):
        r = min(m, channels - start)
        dropped = np.count_nonzero(~keep[..., start : start + r], axis=-1)
        assert np.all(dropped == max(0, n - (m - r)))


def test_nm_two_of_four_by_hand() -> None:
    weight = np.array([[1, -4, 3, 2, 5, 5, -1, 0]], dtype=np.float32)
    keep = nm_mask(weight, 2, 4, axis=1)
    assert keep.tolist() == [[False, True, True, False, True, True, False, False]]


def test_nm_partial_group_acts_zero_padded() -> None:
    weight = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.float32)
    # groups [1 2 3 4] and [5 6 (0 0)]: the padding absorbs the two prunings
    assert nm_mask(weight, 2, 4, axis=1).tolist() == [[False, False, True, True, True, True]]
    # 3:4 loses one real value of the partial group
    assert nm_mask(weight, 3, 4, axis=1).tolist() == [[False, False, False, True, False, True]]


def test_block_by_hand() -> None:
    weight = np.array(
        [[1.0, 10.0], [1.0, 10.0], [5.0, 0.1], [5.0, 0.1], [9.0, 9.0]], dtype=np.float32
    )
    # blocks of 2 along axis 0, scores by (block, column):
    # (0,0)=2, (0,1)=200, (1,0)=50, (1,1)=.02, (2,0)=81, (2,1)=81
    # 6 blocks, floor(6 * 0.5) = 3 dropped: scores .02, 2 and 50
    keep = block_mask(weight, 0.5, 2, axis=0)
    assert keep[:, 0].tolist() == [False, False, False, False, True]
    assert keep[:, 1].tolist() == [True, True, False, False, True]


@settings(max_examples=50)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=2), elements=st.integers(-3, 3).map(float)),
    st.integers(-1, 40),
)
def test_select_lowest_count_and_order(keys: np.ndarray, count: int) -> None:
    chosen = select_lowest(keys, count)
    assert np.count_nonzero(chosen) == min(max(count, 0), keys.size)
    if chosen.any() and (~chosen).any():
        assert keys[chosen].max() <= keys[~chosen].min()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_magnitude_key_orders_like_abs(dtype: np.dtype) -> None:
    values = np.array([-3.5, -0.0, 0.0, 1e-3, -2.0, np.inf, 7.0, -np.inf], dtype=np.float32).astype(
        dtype
    )
    keys = magnitude_key(values)
    absolute = np.abs(values.astype(np.float64))
    for i in range(values.size):
        for j in range(values.size):
            assert (keys[i] < keys[j]) == (absolute[i] < absolute[j])


def test_magnitude_key_rejects_integers() -> None:
    with pytest.raises(TypeError, match="float"):
        magnitude_key(np.arange(4, dtype=np.int32))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite(dtype: np.dtype, bad: float) -> None:
    weight = np.array([1.0, -2.0, 0.0, 65000.0], dtype=np.float32).astype(dtype)
    assert all_finite(weight)
    weight[2] = bad
    assert not all_finite(weight)
    assert not all_finite(np.concatenate([np.ones(300_000, dtype=dtype), weight]))
