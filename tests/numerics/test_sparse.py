"""The sparse form and the bit packing Core AI expects."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.numerics import pack_mask, to_sparse, unpack_mask


def test_pack_mask_is_lsb_first_row_major() -> None:
    mask = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    # bits 0, 8, 9 -> byte0 = 0b00000001, byte1 = 0b00000011
    assert pack_mask(mask).tolist() == [1, 3]


@given(hnp.arrays(bool, hnp.array_shapes(max_dims=3, max_side=9)))
def test_pack_roundtrip(mask: np.ndarray) -> None:
    packed = pack_mask(mask)
    assert packed.size == -(-mask.size // 8)
    assert np.array_equal(unpack_mask(packed, mask.shape), mask)


@given(
    hnp.arrays(
        np.float32, hnp.array_shapes(max_dims=3), elements=st.sampled_from([0.0, -0.0, 1.5, -2.0])
    ),
    st.data(),
)
def test_to_sparse_never_stores_zeros(weight: np.ndarray, data: st.DataObject) -> None:
    keep = data.draw(hnp.arrays(bool, weight.shape))
    sparse = to_sparse(weight, keep)
    assert np.all(sparse.values != 0)
    assert np.count_nonzero(sparse.mask) == sparse.values.size
    expected = np.where(keep, weight, 0).astype(np.float32)
    assert np.array_equal(sparse.dense(), expected)
