"""Blockwise quantization against the brute-force reference, on many shapes and blocks."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.blockwise import block_shape, quantize_blocks
from coreai_opt.coreai_utils.numerics.float_codes import encode_float
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError
from tests.reference import ref_block_quantize

DTYPES = [DType.INT4, DType.UINT4, DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2]
WEIGHT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...], DType, bool]:
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank)))
    weight_dtype = draw(st.sampled_from(WEIGHT_DTYPES))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    seed = draw(st.integers(0, 2**16))
    weight = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(weight_dtype)
    if draw(st.booleans()):
        weight[..., 0] = 0  # zero blocks and exact zeros
    granularity = draw(st.sampled_from(["per_tensor", "per_channel", "per_block"]))
    out_axis = draw(st.integers(0, rank - 1))
    in_axis = (out_axis + 1) % rank if rank > 1 else out_axis
    block = block_shape(shape, granularity, out_axis, in_axis, draw(st.integers(1, 5)))
    dtype = draw(st.sampled_from(DTYPES))
    symmetric = draw(st.booleans()) or dtype.value.startswith("fp")
    return weight, block, dtype, symmetric


@given(case=cases())
def test_matches_reference(case: tuple[np.ndarray, tuple[int, ...], DType, bool]) -> None:
    weight, block, dtype, symmetric = case
    quantized = quantize_blocks(weight, block, dtype, symmetric=symmetric)
    got = quantized.dequantize(weight.dtype)
    expected = ref_block_quantize(weight, block, dtype.value, symmetric)
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    assert np.all(got[weight == 0] == 0), "zero is exact in every scheme"


@given(seed=st.integers(0, 2**16), rows=st.integers(1, 6), blocks=st.integers(1, 4))
def test_mxfp4_matches_reference(seed: int, rows: int, blocks: int) -> None:
    weight = np.random.default_rng(seed).standard_normal((rows, 32 * blocks)).astype(np.float32)
    e8m0 = np.dtype(ml_dtypes.float8_e8m0fnu)
    quantized = quantize_blocks(weight, (1, 32), DType.FP4_E2M1FN, scale_dtype=e8m0)
    assert quantized.scale.dtype == e8m0
    expected = ref_block_quantize(weight, (1, 32), "fp4_e2m1fn", True, e8m0)
    assert np.array_equal(quantized.dequantize(weight.dtype), expected)


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT8])
def test_hand_computed_asymmetric(dtype: DType) -> None:
    weight = np.array([[0.0, 1.0, 2.0, 5.1]], dtype=np.float32)
    quantized = quantize_blocks(weight, (1, 4), dtype, symmetric=False)
    assert quantized.scale[0, 0] == np.float32(5.1 / 255)
    low = -128 if dtype is DType.INT8 else 0
    assert quantized.zero_point is not None and quantized.zero_point[0, 0] == low
    assert quantized.codes[0, 0] == low and quantized.codes[0, -1] == low + 255


def test_block_shape() -> None:
    assert block_shape((8, 6, 3, 3), "per_tensor", 0, 1, 4) == (8, 6, 3, 3)
    assert block_shape((8, 6, 3, 3), "per_channel", 0, 1, 4) == (1, 6, 3, 3)
    assert block_shape((8, 6, 3, 3), "per_block", 0, 1, 4) == (1, 4, 3, 3)
    assert block_shape((6, 8), "per_block", 1, 0, 32) == (6, 1)
    with pytest.raises(ValueError, match="output channel axis"):
        block_shape((6, 8), "per_channel", None, None, 4)


@pytest.mark.parametrize("dtype", [DType.FP8_E4M3FN, DType.FP8_E5M2])
def test_fp8_codes_are_the_saturating_cast(dtype: DType) -> None:
    rng = np.random.default_rng(7)
    # magnitudes over 40 octaves: saturated, normal, subnormal and zero codes in every row
    weight = (np.exp2(rng.uniform(-30, 10, (64, 512))) * rng.choice([-1, 1], (64, 512))).astype(
        np.float32
    )
    weight[:, :3] = [0.0, -0.0, -1e-30]
    quantized = quantize_blocks(weight, (1, 512), dtype)
    storage = np.dtype(quantized.codes.dtype)
    limit = float(ml_dtypes.finfo(storage).max)
    scaled = weight / quantized.scale.astype(np.float32).reshape(-1, 1)
    expected = np.clip(scaled, -limit, limit).astype(storage).view(np.uint8).copy()
    expected[(expected & 0x7F) == 0] = 0  # a code that rounds to zero is +0
    assert np.array_equal(quantized.codes.view(np.uint8), expected)


@pytest.mark.parametrize("dtype", [DType.FP8_E4M3FN, DType.FP8_E5M2])
def test_fp8_codes_at_and_beside_every_rounding_tie(dtype: DType) -> None:
    storage = np.dtype(
        ml_dtypes.float8_e4m3fn if dtype is DType.FP8_E4M3FN else ml_dtypes.float8_e5m2
    )
    limit = float(ml_dtypes.finfo(storage).max)
    grid = np.arange(256, dtype=np.uint8).view(storage).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    ties = ((grid[1:].astype(np.float64) + grid[:-1]) / 2).astype(np.float32)
    beside = [np.nextafter(ties, np.float32(np.inf * sign)) for sign in (-1, 1)]
    over = np.float32([limit * 1.01, -limit * 1.01, 1e-45, -1e-45, 0.0, -0.0])
    values = np.concatenate([grid, ties, *beside, over])
    values = np.resize(values, (8, -(-values.size // 8)))
    absmax = np.abs(values).max(axis=1).astype(np.float64)
    codes = encode_float(values, np.ones(8), absmax, storage)
    cast = np.clip(values, -limit, limit).astype(storage)
    expected = cast.view(np.uint8).copy()
    expected[cast.astype(np.float32) == 0] = 0  # a code that rounds to zero is +0
    assert np.array_equal(codes.view(np.uint8), expected)


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT4, DType.FP8_E4M3FN])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_raises(dtype: DType, bad: float) -> None:
    weight = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    weight[2, 5] = bad
    for symmetric in (True, False) if dtype is not DType.FP8_E4M3FN else (True,):
        with pytest.raises(NonFiniteError, match="NaN or Inf"):
            quantize_blocks(weight, (1, 64), dtype, symmetric=symmetric)
