"""The layer output error of a weight change, against the activations themselves."""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import (
    StatsLayout,
    conv_patches,
    empty_stats,
    linear_rows,
)
from coreai_opt.coreai_utils.numerics.layer_error import (
    held_out_error,
    lookup_error,
    output_error,
    unit_input_error,
)


def test_linear_error_is_the_mean_squared_output_change() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 12)) * np.geomspace(0.1, 3, 12)
    delta = rng.standard_normal((7, 12)).astype(np.float32)
    stats = empty_stats(StatsLayout.LINEAR, 1, 12, with_gram=True)
    stats.add(linear_rows(x, 1))
    expected = np.mean(np.sum((x @ delta.T.astype(np.float64)) ** 2, axis=1))
    assert np.isclose(output_error(delta, stats, 0, 1), expected, rtol=1e-5)
    # the same weight stored [in, out] (y = x @ W): axes say which is which
    assert np.isclose(output_error(delta.T.copy(), stats, 1, 0), expected, rtol=1e-5)
    # without X^T X, the diagonal only
    diagonal = empty_stats(StatsLayout.LINEAR, 1, 12, with_gram=False)
    diagonal.add(linear_rows(x, 1))
    expected_diagonal = np.sum(delta.astype(np.float64) ** 2 * np.mean(x**2, axis=0))
    assert np.isclose(output_error(delta, diagonal, 0, 1), expected_diagonal, rtol=1e-6)


def test_held_out_error_shrinks_towards_the_diagonal_by_columns_over_rows() -> None:
    rng = np.random.default_rng(3)
    delta = rng.standard_normal((5, 12)).astype(np.float32)
    for count in (4, 12, 400):
        x = rng.standard_normal((count, 12)) * np.geomspace(0.1, 3, 12)
        stats = empty_stats(StatsLayout.LINEAR, 1, 12, with_gram=True)
        stats.add(linear_rows(x, 1))
        plain = output_error(delta, stats, 0, 1)
        diagonal = np.sum(delta.astype(np.float64) ** 2 * np.mean(x**2, axis=0))
        shrink = 12 / (12 + count)
        expected = (1 - shrink) * plain + shrink * diagonal
        assert np.isclose(held_out_error(delta, stats, 0, 1), expected, rtol=1e-5)


def test_held_out_error_sees_what_a_fit_to_few_rows_hides() -> None:
    # a change orthogonal to every calibration row: zero on those rows, not on new ones
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 12))
    null = np.linalg.svd(x)[2][3:]  # directions the 3 rows do not span
    delta = (rng.standard_normal((4, 9)) @ null).astype(np.float32)
    stats = empty_stats(StatsLayout.LINEAR, 1, 12, with_gram=True)
    stats.add(linear_rows(x, 1))
    fresh = rng.standard_normal((20000, 12))
    truth = np.mean(np.sum((fresh @ delta.T.astype(np.float64)) ** 2, axis=1))
    assert output_error(delta, stats, 0, 1) < 1e-4 * truth
    assert 0.2 * truth < held_out_error(delta, stats, 0, 1) < 5 * truth


def test_grouped_conv_error_is_the_mean_squared_output_change() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 6))
    delta = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)  # groups=2
    patches = conv_patches(x, (3, 3), (1, 1), (1, 1), 2)
    stats = empty_stats(StatsLayout.CONV, 2, 18, with_gram=True)
    stats.add(patches)
    flat = delta.reshape(6, 18).astype(np.float64)
    outputs = np.concatenate([patches[g] @ flat[3 * g : 3 * g + 3].T for g in range(2)], axis=1)
    expected = np.mean(np.sum(outputs**2, axis=1))
    assert np.isclose(output_error(delta, stats, 0, 1), expected, rtol=1e-5)


def test_lookup_and_unit_input_errors() -> None:
    delta = np.arange(12, dtype=np.float32).reshape(4, 3)
    squares = float(np.sum(delta.astype(np.float64) ** 2))
    assert lookup_error(delta) == squares / 4
    assert unit_input_error(delta) == squares
