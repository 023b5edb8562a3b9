"""Quantization of kept values: invariants, and the documented error on the test layer."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics import SparseWeight, magnitude_mask, quantize, to_sparse
from coreai_opt.coreai_utils.numerics.quantize import float_round
from tests.reference import issue_layer

QUANT = [DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2]
FLOATS = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@st.composite
def pruned_weights(draw: st.DrawFn) -> tuple[SparseWeight, int | None]:
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    values = draw(hnp.arrays(np.float32, shape, elements=st.floats(-50, 50, width=32)))
    weight = values.astype(dtype)
    keep = draw(hnp.arrays(bool, shape))
    sparse = to_sparse(weight, keep)
    axis = draw(st.none() | st.integers(0, len(shape) - 1))
    return sparse, axis


@pytest.mark.parametrize("dtype", QUANT)
@given(case=pruned_weights())
def test_pruned_positions_dequantize_to_exact_zero(
    dtype: DType, case: tuple[SparseWeight, int | None]
) -> None:
    sparse, axis = case
    pruned, mask = sparse.dense(), sparse.mask
    q = quantize(sparse, dtype, axis)
    rebuilt = q.dequantize()
    assert rebuilt.dtype == pruned.dtype
    assert np.all(rebuilt[~mask] == 0)
    assert q.values.size == np.count_nonzero(mask)
    assert q.scale.dtype == pruned.dtype and np.all(q.scale.astype(np.float32) > 0)
    expected_shape = [1] * pruned.ndim
    if axis is not None:
        expected_shape[axis] = pruned.shape[axis]
    assert list(q.scale.shape) == expected_shape
    assert np.all(np.isfinite(rebuilt.astype(np.float32)))


@given(case=pruned_weights())
def test_int8_error_within_half_a_step(case: tuple[SparseWeight, int | None]) -> None:
    sparse, axis = case
    pruned, mask = sparse.dense(), sparse.mask
    q = quantize(sparse, DType.INT8, axis)
    codes = q.values.astype(np.int32)
    assert np.all(np.abs(codes) <= 127)
    scale = np.broadcast_to(q.scale.astype(np.float32), pruned.shape)[mask]
    error = np.abs(q.dequantize().astype(np.float32)[mask] - pruned.astype(np.float32)[mask])
    # half a step, plus the final rounding to the weight dtype
    ulp = np.abs(pruned.astype(np.float32)[mask]) * float(ml_dtypes.finfo(pruned.dtype).eps) + 1e-30
    assert np.all(error <= scale / 2 * 1.0001 + ulp)


@given(case=pruned_weights())
def test_uint8_single_zero_point(case: tuple[SparseWeight, int | None]) -> None:
    sparse, axis = case
    q = quantize(sparse, DType.UINT8, axis)
    assert 0 <= q.zero_point <= 255
    assert q.values.dtype == np.uint8


def test_empty_channel_gets_unit_scale() -> None:
    weight = np.array([[0.0, 0.0], [1.0, -2.0]], dtype=np.float32)
    sparse = to_sparse(weight, weight != 0)
    for dtype in QUANT:
        q = quantize(sparse, dtype, 0)
        assert float(q.scale[0, 0]) == 1.0
        assert np.all(q.dequantize()[0] == 0)


TARGETS = {DType.INT8: 6e-3, DType.FP8_E4M3FN: 2.6e-2, DType.FP8_E5M2: 5.2e-2, DType.UINT8: 9.5e-3}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", QUANT)
def test_error_targets_per_channel(dtype: DType, seed: int) -> None:
    weight = issue_layer(seed)
    sparse = to_sparse(weight, magnitude_mask(weight, 0.5))
    pruned = sparse.dense()
    rebuilt = quantize(sparse, dtype, 0).dequantize()
    error = np.linalg.norm(rebuilt - pruned) / np.linalg.norm(pruned)
    assert error <= TARGETS[dtype]


@pytest.mark.parametrize("dtype", QUANT)
def test_per_channel_beats_per_tensor(dtype: DType) -> None:
    weight = issue_layer()
    sparse = to_sparse(weight, magnitude_mask(weight, 0.5))
    pruned = sparse.dense()

    def error(axis: int | None) -> float:
        rebuilt = quantize(sparse, dtype, axis).dequantize()
        return float(np.linalg.norm(rebuilt - pruned) / np.linalg.norm(pruned))

    assert error(0) < error(None)


@pytest.mark.parametrize(
    "storage", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, np.float16, ml_dtypes.bfloat16]
)
def test_float_round_is_bit_exact(storage: type) -> None:
    info = ml_dtypes.finfo(storage)
    largest, tiny = float(info.max), float(info.smallest_subnormal)
    rng = np.random.default_rng(0)
    # magnitudes from below the smallest subnormal to the largest finite value
    magnitudes = np.exp2(rng.uniform(np.log2(tiny) - 2, np.log2(largest), 200_000))
    values = np.clip(magnitudes * rng.choice([-1, 1], magnitudes.size), -largest, largest)
    # exact ties and grid points: every value of the type and the midpoints between neighbours
    width = np.dtype(storage).itemsize
    codes = np.arange(1 << (8 * width), dtype=np.uint8 if width == 1 else np.uint16)
    with np.errstate(invalid="ignore"):  # NaN patterns
        grid = codes.view(storage).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    values = np.concatenate([values, grid, (grid[1:] + grid[:-1]) / 2, [0.0, -0.0]]).astype(
        np.float32
    )
    expected = values.astype(storage).astype(np.float32)
    assert np.array_equal(
        float_round(values, np.dtype(storage)).view(np.uint32), expected.view(np.uint32)
    )
    # told which values may be subnormal (a superset), the same result
    maybe_small = np.flatnonzero(np.abs(values) < 2 * float(info.smallest_normal))
    rounded = float_round(values, np.dtype(storage), maybe_small)
    assert np.array_equal(rounded.view(np.uint32), expected.view(np.uint32))


def test_quantize_along_another_axis_matches_the_transpose() -> None:
    weight = issue_layer()[:64, :48]
    for dtype in QUANT:
        along_1 = quantize(to_sparse(weight, magnitude_mask(weight, 0.4)), dtype, 1).dequantize()
        transposed = np.ascontiguousarray(weight.T)
        along_0 = quantize(
            to_sparse(transposed, magnitude_mask(transposed, 0.4)), dtype, 0
        ).dequantize()
        assert np.array_equal(along_1, along_0.T)
