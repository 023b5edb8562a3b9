"""Grouped palettization: lossless cases, k-means quality, LUT quantization, decoding."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.lut import kmeans_vectors, palettize_groups
from tests.reference import (
    mse_to_nearest,
    ref_kmeans_vectors,
    ref_lloyd,
    ref_lut_decode,
    vector_mse,
)

WEIGHT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@given(
    dtype=st.sampled_from(WEIGHT_DTYPES),
    nbits=st.sampled_from([1, 2, 3, 4]),
    channels=st.integers(1, 9),
    group=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_lossless_with_few_distinct_values(
    dtype: np.dtype, nbits: int, channels: int, group: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << nbits)
    weight = pool[rng.integers(0, pool.size, (channels, 12))].astype(dtype)
    palette = palettize_groups(weight, nbits, out_axis=0, in_axis=1, group_size=group)
    assert np.array_equal(palette.decode(dtype), weight)
    assert np.array_equal(ref_lut_decode(palette, dtype), palette.decode(dtype))


@pytest.mark.parametrize("nbits", [2, 4, 6])
@pytest.mark.parametrize("group", [1, 4, 32])
def test_scalar_luts_are_as_good_as_lloyd(nbits: int, group: int) -> None:
    rng = np.random.default_rng(nbits)
    weight = (rng.standard_normal((32, 64)) * np.linspace(0.2, 3, 32)[:, None]).astype(np.float32)
    palette = palettize_groups(weight, nbits, out_axis=0, in_axis=1, group_size=group)
    decoded = palette.decode(np.dtype(np.float32))
    for start in range(0, 32, group):
        part = weight[start : start + group].reshape(-1)
        ours = float(np.mean((decoded[start : start + group].reshape(-1) - part) ** 2))
        reference = mse_to_nearest(part, ref_lloyd(part, 1 << nbits))
        assert ours <= 1.05 * reference + 1e-12


@pytest.mark.parametrize(("count", "dims", "k"), [(3000, 2, 16), (2000, 4, 4), (120_000, 2, 16)])
def test_vector_kmeans_as_good_as_plain_kmeans_plus_plus(count: int, dims: int, k: int) -> None:
    rng = np.random.default_rng(dims)
    points = rng.standard_normal((count, dims)) @ rng.standard_normal((dims, dims))
    ours = vector_mse(points, kmeans_vectors(points, k))
    subset = points[: min(count, 20_000)]  # the reference is slow: compare on a subset
    reference = vector_mse(subset, ref_kmeans_vectors(subset, k))
    assert vector_mse(subset, kmeans_vectors(points, k)) <= 1.05 * reference
    assert ours > 0


def test_vector_palettes_decode_and_lossless() -> None:
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((4, 2)).astype(np.float32)
    weight = pool[rng.integers(0, 4, (6, 5))].reshape(6, 10)
    palette = palettize_groups(weight, 2, out_axis=0, in_axis=1, group_size=6, cluster_dim=2)
    assert palette.indices.shape == (6, 5)
    assert np.array_equal(palette.decode(np.dtype(np.float32)), weight)


@pytest.mark.parametrize("lut_dtype", [DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2])
@pytest.mark.parametrize("dtype", WEIGHT_DTYPES, ids=str)
def test_quantized_luts_decode_like_the_reference(lut_dtype: DType, dtype: np.dtype) -> None:
    rng = np.random.default_rng(2)
    weight = (rng.standard_normal((8, 40)) * np.linspace(0.5, 2, 8)[:, None]).astype(dtype)
    palette = palettize_groups(
        weight, 4, out_axis=0, in_axis=1, group_size=3, lut_dtype=lut_dtype, per_channel_scale=True
    )
    assert palette.lut_quantized is not None
    if lut_dtype is DType.UINT8:
        assert palette.lut_quantized.zero_point is not None
        assert np.all(palette.lut_quantized.zero_point == 128)
    decoded = palette.decode(dtype)
    assert np.array_equal(decoded.view(np.uint8), ref_lut_decode(palette, dtype).view(np.uint8))
    error = np.linalg.norm(decoded.astype(np.float64) - weight) / np.linalg.norm(
        weight.astype(np.float64)
    )
    assert error < 0.2


def test_conv_layout_groups_along_the_output_axis() -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    palette = palettize_groups(weight, 3, out_axis=0, in_axis=1, group_size=4)
    assert palette.lut.shape == (2, 8, 1)
    assert np.array_equal(
        ref_lut_decode(palette, np.dtype(np.float32)), palette.decode(np.dtype(np.float32))
    )


@pytest.mark.parametrize("scale", [1e-40, 1e19, 1e37])
def test_vector_palettes_of_extreme_magnitudes(scale: float) -> None:
    rng = np.random.default_rng(4)
    weight = np.clip(rng.standard_normal((16, 64)) * scale, -3e38, 3e38).astype(np.float32)
    with np.errstate(over="raise", invalid="raise"):
        palette = palettize_groups(weight, 3, out_axis=0, in_axis=1, group_size=16, cluster_dim=2)
    decoded = palette.decode(np.dtype(np.float32)).astype(np.float64)
    relative = np.mean((decoded - weight) ** 2) / np.mean(weight.astype(np.float64) ** 2)
    assert relative < 0.3  # 8 vectors for 512 random pairs: well below the data's variance
