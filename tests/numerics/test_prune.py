"""The fast pruning path gives exactly the reference definitions' result (masks + to_sparse)."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.numerics import block_mask, magnitude_mask, nm_mask, to_sparse
from coreai_opt.coreai_utils.numerics.prune import (
    kth_smallest,
    prune_block,
    prune_magnitude,
    prune_nm,
)
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight

FLOATS = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


def same(a: SparseWeight, b: SparseWeight) -> bool:
    return (
        a.shape == b.shape
        and a.values.dtype == b.values.dtype
        and np.array_equal(
            a.values.view(f"u{a.values.itemsize}"), b.values.view(f"u{b.values.itemsize}")
        )
        and np.array_equal(a.packed_mask, b.packed_mask)
    )


@st.composite
def weights(draw: st.DrawFn, min_dims: int = 1) -> np.ndarray:
    """Tensors with many ties and zeros, big enough to span several small chunks."""
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=13))
    pool = [*draw(st.lists(st.floats(-4, 4, width=16), min_size=1, max_size=5)), 0.0]
    picks = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, len(pool) - 1)))
    return np.asarray(pool, dtype=np.float32)[picks].astype(dtype)


CHUNKS = st.sampled_from([8, 16, 24, 64, 1 << 20])


@settings(max_examples=200)
@given(weights(), st.floats(0, 1), CHUNKS)
def test_magnitude_identical(weight: np.ndarray, sparsity: float, chunk: int) -> None:
    expected = to_sparse(weight, magnitude_mask(weight, sparsity))
    assert same(prune_magnitude(weight, sparsity, chunk_elements=chunk), expected)


@settings(max_examples=200)
@given(weights(), st.data(), CHUNKS)
def test_nm_identical(weight: np.ndarray, data: st.DataObject, chunk: int) -> None:
    m = data.draw(st.integers(1, 10))
    n = data.draw(st.integers(0, m))
    axis = data.draw(st.integers(0, weight.ndim - 1))
    expected = to_sparse(weight, nm_mask(weight, n, m, axis))
    assert same(prune_nm(weight, n, m, axis, chunk_elements=chunk), expected)


@settings(max_examples=200)
@given(weights(min_dims=2), st.floats(0, 1), st.integers(2, 5), st.data(), CHUNKS)
def test_block_identical(
    weight: np.ndarray, sparsity: float, block: int, data: st.DataObject, chunk: int
) -> None:
    axis = data.draw(st.integers(0, weight.ndim - 1))
    expected = to_sparse(weight, block_mask(weight, sparsity, block, axis))
    assert same(prune_block(weight, sparsity, block, axis, chunk_elements=chunk), expected)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.name)
def test_large_magnitude_identical(dtype: np.dtype) -> None:
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((600, 700)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.1] = 0
    weight[:50] = np.round(weight[:50])  # heavy ties
    weight = weight.astype(dtype)
    for sparsity in (0.05, 0.3, 0.5, 0.77, 0.999):
        expected = to_sparse(weight, magnitude_mask(weight, sparsity))
        assert same(prune_magnitude(weight, sparsity, chunk_elements=4096), expected)


def test_kth_smallest_falls_back_on_adversarial_order() -> None:
    # sorted data with a stride-aligned pattern makes a strided sample useless
    flat = np.repeat(np.arange(1, 301, dtype=np.float32), 1000)
    keys = flat.view(np.uint32)
    for k in (0, 1234, 150_000, 299_999):
        threshold, below, equal = kth_smallest(flat, k, [(0, flat.size)])
        assert threshold == np.sort(keys)[k]
        assert below == np.count_nonzero(keys < threshold) and equal == np.count_nonzero(
            keys == threshold
        )
