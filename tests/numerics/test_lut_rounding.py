"""OBS rounding to a LUT: the plain algorithm, nearest entries when nothing propagates, and
every index into the LUTs the palette already has."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.lut import palettize_groups
from coreai_opt.coreai_utils.numerics.lut_rounding import (
    LUT_DAMPENING,
    LutRounding,
    obs_palettize,
)
from coreai_opt.coreai_utils.numerics.obs import factor, sweep
from tests.numerics.test_sparsegpt import correlated_inputs
from tests.reference import ref_lut_obs


def linear_stats(x: np.ndarray) -> ActivationStats:
    return ActivationStats(StatsLayout.LINEAR, (x**2).sum(0)[None], x.shape[0], (x.T @ x)[None])


def test_float64_sweep_equals_the_plain_algorithm() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((20, 60))
    x = correlated_inputs(400, 60, seed=1)
    x[:, 7] = 0.0
    gram = x.T @ x
    lut = np.sort(rng.standard_normal(8))
    rounding = LutRounding(
        lut[None, :, None], np.zeros(20, np.intp), None, np.dtype(np.float64), 60
    )
    got = sweep(weight, factor(gram, precision=np.float64), rounding, precision=np.float64)
    np.testing.assert_allclose(got, ref_lut_obs(weight, gram, lut), rtol=0, atol=1e-9)
    assert np.array_equal(lut[rounding.indices.T], got)


def test_an_ordered_sweep_equals_the_plain_algorithm_on_permuted_columns() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((20, 60))
    x = correlated_inputs(400, 60, seed=2) * rng.uniform(0.2, 3.0, 60)
    x[:, 7] = 0.0
    gram = x.T @ x
    lut = np.sort(rng.standard_normal(8))
    rounding = LutRounding(
        lut[None, :, None], np.zeros(20, np.intp), None, np.dtype(np.float64), 60
    )
    factored = factor(gram, precision=np.float64, order=True)
    got = sweep(weight, factored, rounding, precision=np.float64)
    order = np.argsort(-np.diag(gram), kind="stable")
    assert factored.permutation is not None
    assert np.array_equal(factored.permutation, order)
    want = ref_lut_obs(weight[:, order], gram[np.ix_(order, order)], lut)[:, np.argsort(order)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert np.array_equal(lut[rounding.indices.T], got)  # indices by the weight's columns


def test_obs_palettize_sweeps_with_the_lut_dampening() -> None:
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((12, 48))
    x = correlated_inputs(30, 48, seed=5)  # fewer tokens than channels: dampening matters
    palette = palettize_groups(weight, 3, out_axis=0, in_axis=1, group_size=12)
    got = obs_palettize(weight, linear_stats(x), palette).decode(np.dtype(np.float64))
    lut = palette.lut_values(np.dtype(np.float64))[0, :, 0]
    want = ref_lut_obs(weight, x.T @ x, lut, dampening=LUT_DAMPENING)
    assert np.mean(got == want) > 0.95  # float32 sweep against the float64 reference
    assert not np.array_equal(got, ref_lut_obs(weight, x.T @ x, lut))


@pytest.mark.parametrize("order", [False, True])
def test_a_diagonal_hessian_gives_each_value_its_nearest_entry(order: bool) -> None:
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((16, 40)).astype(np.float32)
    gram = np.diag(rng.uniform(1.0, 2.0, 40))
    stats = ActivationStats(StatsLayout.LINEAR, np.ones((1, 40)), 1, gram[None])
    palette = palettize_groups(weight, 3, out_axis=0, in_axis=1, group_size=4)
    rounded = obs_palettize(weight, stats, palette, order=order)
    assert np.array_equal(rounded.lut, palette.lut)
    assert np.array_equal(
        rounded.decode(np.dtype(np.float32)), palette.decode(np.dtype(np.float32))
    )


@pytest.mark.parametrize(
    "options",
    [
        {"group_size": 1024},
        {"group_size": 4},
        {"group_size": 1, "per_channel_scale": True},
        {"group_size": 8, "lut_dtype": DType.INT8},
        {"group_size": 8, "cluster_dim": 2},
    ],
    ids=["tensor", "grouped", "channel-scale", "int8-lut", "vectors"],
)
@pytest.mark.parametrize("order", [False, True])
def test_lower_output_error_with_the_same_luts(options: dict[str, object], order: bool) -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((24, 64)).astype(np.float16)
    x = correlated_inputs(3000, 64, seed=3)
    palette = palettize_groups(weight, 2, out_axis=0, in_axis=1, **options)  # type: ignore[arg-type]
    rounded = obs_palettize(weight, linear_stats(x), palette, order=order)
    assert np.array_equal(rounded.lut, palette.lut)
    out = np.dtype(np.float16)

    def error(decoded: np.ndarray) -> float:
        return float(np.linalg.norm((decoded.astype(np.float64) - weight) @ x.T))

    assert error(rounded.decode(out)) < 0.95 * error(palette.decode(out))


def test_conv_weights_and_what_is_refused() -> None:
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    x = correlated_inputs(800, 27, seed=4)
    stats = ActivationStats(StatsLayout.CONV, (x**2).sum(0)[None], 800, (x.T @ x)[None])
    palette = palettize_groups(weight, 2, out_axis=0, in_axis=1, group_size=8)
    rounded = obs_palettize(weight, stats, palette, order=True)
    assert rounded.indices.shape == weight.shape
    vectors = palettize_groups(weight[:, :2], 2, out_axis=0, in_axis=1, group_size=8, cluster_dim=2)
    with pytest.raises(ValueError, match="scalar LUTs"):
        obs_palettize(weight[:, :2], stats, vectors)
    no_gram = ActivationStats(StatsLayout.CONV, np.ones((1, 27)), 1, None)
    with pytest.raises(ValueError, match="X\\^T X"):
        obs_palettize(weight, no_gram, palette)
