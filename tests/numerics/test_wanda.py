"""Wanda masks against brute-force references."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.numerics import block_mask, to_sparse
from coreai_opt.coreai_utils.numerics.wanda import (
    wanda_block_mask,
    wanda_mask,
    wanda_nm_mask,
    wanda_scores,
)
from tests.numerics.test_masks import weights
from tests.reference import ref_block, ref_nm, ref_wanda


@st.composite
def weight_and_norms(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    weight = draw(weights(min_dims=2, max_dims=4))
    out_axis, in_axis = draw(st.permutations(range(weight.ndim)).map(lambda p: (p[0], p[1])))
    view = [1] * weight.ndim
    view[in_axis] = weight.shape[in_axis]
    norms = draw(
        hnp.arrays(np.float64, weight.shape[in_axis], elements=st.sampled_from([0.0, 0.5, 1, 3]))
    ).reshape(view)
    return weight, norms, out_axis, in_axis


@given(case=weight_and_norms(), sparsity=st.sampled_from([0.0, 0.25, 0.5, 0.6, 1.0]))
def test_unstructured_matches_reference(
    case: tuple[np.ndarray, np.ndarray, int, int], sparsity: float
) -> None:
    weight, norms, out_axis, _ = case
    keep = wanda_mask(weight, norms, sparsity, out_axis)
    expected = ref_wanda(weight, norms, sparsity, out_axis)
    assert np.array_equal(to_sparse(weight, keep).dense(), expected)


@given(case=weight_and_norms(), n_m=st.sampled_from([(1, 2), (2, 4), (3, 4), (0, 3), (2, 2)]))
def test_nm_matches_reference_on_scores(
    case: tuple[np.ndarray, np.ndarray, int, int], n_m: tuple[int, int]
) -> None:
    weight, norms, _, in_axis = case
    keep = wanda_nm_mask(weight, norms, *n_m, axis=in_axis)
    # shifted by 1, every real score is non-zero: the reference zeroes exactly the dropped
    expected = ref_nm(wanda_scores(weight, norms) + 1.0, *n_m, axis=in_axis) != 0
    assert np.array_equal(keep, expected)


@given(case=weight_and_norms(), block=st.integers(2, 4), sparsity=st.sampled_from([0.5, 0.75]))
def test_block_scores_blocks_by_their_scores(
    case: tuple[np.ndarray, np.ndarray, int, int], block: int, sparsity: float
) -> None:
    weight, norms, out_axis, _ = case
    keep = wanda_block_mask(weight, norms, sparsity, block, out_axis)
    scores = wanda_scores(weight, norms)
    assert np.array_equal(keep, block_mask(scores, sparsity, block, out_axis))
    expected = ref_block(scores, sparsity, block, out_axis) != 0
    assert np.array_equal(keep & (scores != 0), expected)


def test_hand_computed_case() -> None:
    # magnitude would keep 4 and 3; with the norms the scores are 0.4, 3, 4, 10
    weight = np.array([[4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    norms = np.array([[0.1, 1.0, 2.0, 10.0]])
    keep = wanda_mask(weight, norms, 0.5, 0)
    assert keep.tolist() == [[False, False, True, True]]
