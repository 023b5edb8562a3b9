"""Activation statistics: unfolded conv patches, buffered reduction, norms per weight."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreai_opt.coreai_utils.numerics.activations import (
    StatsLayout,
    conv_patches,
    empty_stats,
    input_norms,
    linear_rows,
)
from tests.reference import ref_conv_patches


@given(
    groups=st.integers(1, 3),
    per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    batch=st.integers(1, 2),
)
def test_conv_patches_equal_explicit_loops(
    groups: int,
    per_group: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    extra: tuple[int, int],
    batch: int,
) -> None:
    size = tuple(d * (k - 1) + 1 + e for k, d, e in zip(kernel, dilation, extra, strict=True))
    x = np.random.default_rng(0).standard_normal((batch, groups * per_group, *size))
    got = conv_patches(x, kernel, stride, dilation, groups)
    assert np.array_equal(got, ref_conv_patches(x, kernel, stride, dilation, groups))


def test_linear_rows_take_the_contraction_axis() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(linear_rows(x, 2)[0], x.reshape(6, 4))
    assert np.array_equal(linear_rows(x, 1)[0], np.moveaxis(x, 1, -1).reshape(8, 3))


@pytest.mark.parametrize("batches", [[5], [3, 1, 7], [40] * 5])
def test_buffered_reduction_equals_direct_sums(batches: list[int]) -> None:
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((2, n, 6)).astype(np.float32) for n in batches]
    stats = empty_stats(StatsLayout.CONV, 2, 6, with_gram=True)
    for part in parts:
        stats.add(part)
    stats.flush()
    x = np.concatenate(parts, axis=1).astype(np.float64)
    assert stats.count == x.shape[1]
    np.testing.assert_allclose(stats.sq_sum, (x**2).sum(1), rtol=1e-12)
    assert stats.gram is not None
    np.testing.assert_allclose(stats.gram, np.einsum("gnc,gnd->gcd", x, x), rtol=1e-12)


def test_add_rejects_rows_of_the_wrong_shape() -> None:
    stats = empty_stats(StatsLayout.LINEAR, 1, 4, with_gram=False)
    with pytest.raises(ValueError, match="do not fit"):
        stats.add(np.zeros((1, 3, 5)))


def test_merged_sums_both() -> None:
    a = empty_stats(StatsLayout.LINEAR, 1, 3, with_gram=True)
    b = empty_stats(StatsLayout.LINEAR, 1, 3, with_gram=True)
    a.add(np.ones((1, 2, 3)))
    b.add(2 * np.ones((1, 1, 3)))
    both = a.merged(b)
    assert both.count == 3 and np.array_equal(both.sq_sum, [[6.0, 6.0, 6.0]])


def test_input_norms_broadcast_onto_the_weight() -> None:
    linear = empty_stats(StatsLayout.LINEAR, 1, 3, with_gram=False)
    linear.add(np.array([[[3.0, 0.0, 4.0]]]))
    linear.flush()
    assert np.array_equal(input_norms(linear, (2, 3), 0, 1), [[3.0, 0.0, 4.0]])
    assert np.array_equal(input_norms(linear, (3, 2), 1, 0), [[3.0], [0.0], [4.0]])
    conv = empty_stats(StatsLayout.CONV, 2, 2, with_gram=False)
    conv.add(np.array([[[1.0, 2.0]], [[3.0, 4.0]]]))
    conv.flush()
    norms = input_norms(conv, (4, 2, 1, 1), 0, 1)  # 2 output channels per group
    assert norms.shape == (4, 2, 1, 1)
    assert np.array_equal(norms[:, :, 0, 0], [[1, 2], [1, 2], [3, 4], [3, 4]])
