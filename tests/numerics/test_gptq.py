"""GPTQ: round-to-nearest when nothing propagates, the plain algorithm when it does, lower
output error, and a stored form that decodes to exactly what the sweep produced."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.blockwise import (
    BlockQuantized,
    block_params,
    block_shape,
    quantize_blocks,
)
from coreai_opt.coreai_utils.numerics.gptq import GridRounding, gptq, gptq_weight
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError
from coreai_opt.coreai_utils.numerics.obs import factor, sweep
from tests.numerics.test_sparsegpt import correlated_inputs
from tests.reference import ref_gptq

E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
CASES = [
    (DType.INT4, "per_block", True, None),
    (DType.INT4, "per_block", False, None),
    (DType.UINT4, "per_channel", True, None),
    (DType.INT8, "per_channel", True, None),
    (DType.UINT8, "per_tensor", False, None),
    (DType.INT8, "per_tensor", True, None),
    (DType.FP8_E4M3FN, "per_block", True, None),
    (DType.FP8_E5M2, "per_channel", True, E8M0),
    (DType.FP4_E2M1FN, "per_block", True, E8M0),
]


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint8)


def linear_stats(x: np.ndarray) -> ActivationStats:
    return ActivationStats(StatsLayout.LINEAR, (x**2).sum(0)[None], x.shape[0], (x.T @ x)[None])


def output_error(decoded: np.ndarray, weight: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm((decoded.astype(np.float64) - weight) @ x.T))


def both(
    weight: np.ndarray,
    stats: ActivationStats,
    axes: tuple[int, int],
    dtype: DType,
    granularity: str,
    symmetric: bool,
    scale_dtype: np.dtype | None,
    *,
    order: bool = False,
) -> tuple[BlockQuantized, BlockQuantized]:
    """Round-to-nearest's and GPTQ's results (blocks of 32)."""
    block = block_shape(weight.shape, granularity, *axes, 32)
    rtn = quantize_blocks(weight, block, dtype, symmetric=symmetric, scale_dtype=scale_dtype)
    got = gptq_weight(
        weight,
        stats,
        *axes,
        dtype=dtype,
        granularity=granularity,
        block_size=32,
        symmetric=symmetric,
        scale_dtype=scale_dtype,
        order=order,
    )
    return rtn, got


@pytest.mark.parametrize(("dtype", "granularity", "symmetric", "scale_dtype"), CASES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("order", [False, True])
def test_a_diagonal_hessian_gives_round_to_nearest(
    dtype: DType,
    granularity: str,
    symmetric: bool,
    scale_dtype: np.dtype | None,
    transposed: bool,
    order: bool,
) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((24, 70)).astype(np.float32)
    axes = (0, 1)
    if transposed:
        weight, axes = np.ascontiguousarray(weight.T), (1, 0)
    gram = np.diag(rng.uniform(0.5, 2.0, 70))[None]
    stats = ActivationStats(StatsLayout.LINEAR, np.ones((1, 70)), 1, gram)
    rtn, got = both(weight, stats, axes, dtype, granularity, symmetric, scale_dtype, order=order)
    assert got.block == rtn.block
    assert np.array_equal(got.codes.view(np.uint8), rtn.codes.view(np.uint8))
    assert np.array_equal(got.scale.view(np.uint8), rtn.scale.view(np.uint8))
    assert (got.zero_point is None) == (rtn.zero_point is None)
    if rtn.zero_point is not None and got.zero_point is not None:
        assert np.array_equal(got.zero_point, rtn.zero_point)


@pytest.mark.parametrize(("dtype", "granularity", "symmetric", "scale_dtype"), CASES)
@pytest.mark.parametrize("out", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("order", [False, True])
def test_lower_output_error_and_decodes_to_the_sweep(
    dtype: DType,
    granularity: str,
    symmetric: bool,
    scale_dtype: np.dtype | None,
    out: type,
    order: bool,
) -> None:
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((40, 96)).astype(out)
    x = correlated_inputs(3000, 96, seed=2)
    stats = linear_stats(x)
    rtn, got = both(weight, stats, (0, 1), dtype, granularity, symmetric, scale_dtype, order=order)
    reference = weight.astype(np.float64)
    decoded = got.dequantize(np.dtype(out))
    assert decoded.dtype == np.dtype(out)
    assert output_error(decoded, reference, x) < 0.9 * output_error(
        rtn.dequantize(np.dtype(out)), reference, x
    )
    # the sweep itself decodes to what the stored codes decode to
    fixed = None
    if granularity != "per_block":
        params = block_params(
            weight.reshape(1 if granularity == "per_tensor" else 40, -1).astype(np.float32),
            dtype,
            symmetric=symmetric,
            scale_dtype=np.dtype(scale_dtype or out),
            out=np.dtype(out),
        )
        index = np.zeros(40, dtype=np.intp) if granularity == "per_tensor" else np.arange(40)
        fixed = params.take(index)
    swept, codes, _ = gptq(
        weight,
        stats.gram[0],
        dtype,
        symmetric=symmetric,
        scale_dtype=scale_dtype,
        fixed=fixed,
        group=32 if granularity == "per_block" else None,
        order=order,
    )
    assert np.array_equal(bits(swept), bits(decoded))
    assert np.array_equal(bits(codes), bits(got.codes))


@pytest.mark.parametrize("order", [False, True])
@pytest.mark.parametrize("group", [None, 16, 24])
def test_float64_sweep_equals_the_plain_algorithm(group: int | None, order: bool) -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((12, 80)).astype(np.float32)
    x = correlated_inputs(500, 80, seed=3)
    x[:, 5] = 0.0  # a dead input channel: its weights are rounded and pass nothing on
    gram = x.T @ x
    stats = linear_stats(x)
    granularity = "per_channel" if group is None else "per_block"
    got = gptq_weight(
        weight,
        stats,
        0,
        1,
        dtype=DType.INT4,
        granularity=granularity,
        block_size=group or 32,
        order=order,
    )
    want = ref_gptq(weight, gram, 4, group, order=order)
    np.testing.assert_allclose(got.dequantize(np.dtype(np.float32)), want, rtol=0, atol=1e-6)


def test_conv_groups_use_their_own_gram_and_blocks_span_the_kernel() -> None:
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)  # 2 groups of 4 outputs
    grams = []
    for g in range(2):
        x = correlated_inputs(600, 54, seed=10 + g)
        grams.append(x.T @ x)
    stats = ActivationStats(StatsLayout.CONV, np.ones((2, 54)), 600, np.stack(grams))
    got = gptq_weight(weight, stats, 0, 1, dtype=DType.INT8, granularity="per_block", block_size=4)
    assert got.scale.shape == (8, 2, 1, 1) and got.codes.shape == weight.shape
    for g in range(2):
        band = weight[4 * g : 4 * (g + 1)].reshape(4, -1)
        alone = gptq_weight(
            band,
            linear_stats_from_gram(grams[g]),
            0,
            1,
            dtype=DType.INT8,
            granularity="per_block",
            block_size=4 * 9,
        )
        assert np.array_equal(alone.codes, got.codes[4 * g : 4 * (g + 1)].reshape(4, -1))


def linear_stats_from_gram(gram: np.ndarray) -> ActivationStats:
    return ActivationStats(StatsLayout.LINEAR, np.diag(gram)[None], 1, gram[None])


def test_ordering_by_the_hessian_diagonal_decodes_in_place() -> None:
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((16, 64)).astype(np.float32)
    x = correlated_inputs(2000, 64, seed=5)
    stats = linear_stats(x)
    plain = gptq_weight(
        weight, stats, 0, 1, dtype=DType.INT4, granularity="per_channel", block_size=32
    )
    ordered = gptq_weight(
        weight, stats, 0, 1, dtype=DType.INT4, granularity="per_channel", block_size=32, order=True
    )
    assert np.array_equal(plain.scale, ordered.scale)
    error = output_error(ordered.dequantize(np.dtype(np.float32)), weight.astype(np.float64), x)
    rtn = quantize_blocks(weight, (1, 64), DType.INT4)
    assert error < output_error(rtn.dequantize(np.dtype(np.float32)), weight.astype(np.float64), x)
    per_block = [
        gptq_weight(
            weight, stats, 0, 1, dtype=DType.INT4, granularity="per_block", block_size=32, order=o
        )
        for o in (False, True)
    ]
    rtn_block = quantize_blocks(weight, (1, 32), DType.INT4)
    assert np.array_equal(per_block[1].scale, rtn_block.scale)  # static groups: RTN's scales
    assert not np.array_equal(per_block[0].scale, rtn_block.scale)  # in order: the updated ones
    errors = [
        output_error(q.dequantize(np.dtype(np.float32)), weight.astype(np.float64), x)
        for q in (*per_block, rtn_block)
    ]
    assert errors[1] < errors[2]
    assert errors[0] < errors[2]


def test_an_ordered_sweep_refuses_a_projection_with_groups() -> None:
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((8, 64)).astype(np.float32)
    gram = correlated_inputs(500, 64, seed=6).T @ correlated_inputs(500, 64, seed=6)
    rounding = GridRounding(8, 64, DType.INT4, symmetric=True, scale_dtype=np.dtype(np.float32),
                            out=np.dtype(np.float32), group=32)  # fmt: skip
    with pytest.raises(ValueError, match="without groups"):
        sweep(weight, factor(gram, order=True), rounding)


def test_never_writes_the_callers_weight_and_rejects_non_finite_values() -> None:
    rng = np.random.default_rng(6)
    weight = np.ascontiguousarray(rng.standard_normal((16, 32)).astype(np.float32).T)
    before = weight.copy()
    stats = linear_stats(correlated_inputs(200, 32, seed=6))
    gptq_weight(weight, stats, 1, 0, dtype=DType.INT8, granularity="per_channel", block_size=32)
    assert np.array_equal(weight, before)
    weight[3, 4] = np.nan
    with pytest.raises(NonFiniteError):
        gptq_weight(weight, stats, 1, 0, dtype=DType.INT8, granularity="per_block", block_size=8)
    no_gram = ActivationStats(StatsLayout.LINEAR, np.ones((1, 32)), 1, None)
    with pytest.raises(ValueError, match="X\\^T X"):
        gptq_weight(
            before, no_gram, 1, 0, dtype=DType.INT8, granularity="per_channel", block_size=8
        )


def test_a_kept_factor_is_kept_per_order() -> None:
    x = correlated_inputs(300, 24, seed=7) * np.linspace(0.5, 2.0, 24)
    gram = x.T @ x
    plain, ordered = factor(gram), factor(gram, order=True)
    assert plain.permutation is None
    assert ordered.permutation is not None
    assert np.array_equal(ordered.permutation, np.argsort(-np.diag(gram), kind="stable"))
    assert factor(gram, order=True) is ordered  # q, k and v share one factorization
    assert factor(gram) is plain
