"""In-place semantics, skips with warnings, and what is left dense."""

from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import (
    DType,
    palettize_weights,
    palettize_with_report,
    quantize_weights,
    quantize_with_report,
    sparsify_weights,
    sparsify_with_report,
)
from tests.helpers import linear_program, read_back_linear
from tests.reference import ref_magnitude


def weight(shape: tuple[int, int] = (16, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_not_in_place_leaves_input_untouched(asset_path: Path) -> None:
    w = weight()
    program = linear_program(w)
    before = str(program)
    result = sparsify_weights(program, weight_num_threshold=0)
    assert result is not program
    assert str(program) == before
    assert np.array_equal(read_back_linear(program, 32, np.float32, asset_path), w)


def test_in_place_mutates_and_returns_same_object(tmp_path: Path) -> None:
    w = weight()
    program = linear_program(w)
    before = str(program)
    result = sparsify_weights(program, weight_num_threshold=0, in_place=True)
    assert result is program
    assert str(program) != before
    rebuilt = read_back_linear(program, 32, np.float32, tmp_path / "a.aimodel")
    assert np.array_equal(rebuilt, ref_magnitude(w, 0.5))


def test_result_can_be_sparsified_again(tmp_path: Path) -> None:
    w = weight()
    once = sparsify_weights(linear_program(w), weight_num_threshold=0)
    twice = sparsify_weights(once, weight_num_threshold=0, target_sparsity=0.9)
    # the rebuilt chain is not a constant any more: nothing left to prune, nothing breaks
    rebuilt = read_back_linear(twice, 32, np.float32, tmp_path / "a.aimodel")
    assert np.array_equal(rebuilt, ref_magnitude(w, 0.5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_left_dense_with_warning(
    bad: float, tmp_path: Path, sparsify_log: pytest.LogCaptureFixture
) -> None:
    w = weight()
    w[2, 3] = bad
    original = linear_program(w)
    program = sparsify_weights(original, weight_num_threshold=0)
    assert "NaN or Inf" in sparsify_log.text
    rebuilt = read_back_linear(program, 32, np.float32, tmp_path / "a.aimodel")
    dense = read_back_linear(original, 32, np.float32, tmp_path / "b.aimodel")
    assert np.array_equal(rebuilt, dense, equal_nan=True)


SIBLING_MODES = [
    (quantize_weights, {"dtype": DType.INT8}),
    (quantize_weights, {"dtype": DType.UINT4, "qscheme": "asymmetric", "granularity": "per_block"}),
    (quantize_weights, {"dtype": DType.FP8_E4M3FN}),
    (
        quantize_weights,
        {
            "dtype": DType.FP4_E2M1FN,
            "granularity": "per_block",
            "scale_dtype": DType.FP8_E8M0FNU,
        },
    ),
    (palettize_weights, {"n_bits": 4}),
    (palettize_weights, {"n_bits": 8, "granularity": "per_grouped_channel", "group_size": 4}),
    (palettize_weights, {"n_bits": 2, "enable_per_channel_scale": True}),
    (palettize_weights, {"n_bits": 4, "cluster_dim": 2}),
    (palettize_weights, {"n_bits": 4, "lut_dtype": DType.INT8}),
]


@pytest.mark.parametrize(
    ("compress", "options", "bad"),
    [(*mode, [np.nan, np.inf, -np.inf][i % 3]) for i, mode in enumerate(SIBLING_MODES)],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_sibling_passes_leave_a_non_finite_weight_dense_with_warning(
    compress: object,
    options: dict[str, object],
    bad: float,
    tmp_path: Path,
    sparsify_log: pytest.LogCaptureFixture,
) -> None:
    w = weight()
    w[2, 3] = bad
    original = linear_program(w)
    program = compress(original, weight_num_threshold=0, **options)  # type: ignore[operator]
    assert "contains NaN or Inf; left dense" in sparsify_log.text
    rebuilt = read_back_linear(program, 32, np.float32, tmp_path / "a.aimodel")
    dense = read_back_linear(original, 32, np.float32, tmp_path / "b.aimodel")
    assert np.array_equal(rebuilt, dense, equal_nan=True)


@pytest.mark.parametrize("shape", [(0, 8), (8, 0)])
@pytest.mark.parametrize(
    ("compress", "options"),
    [
        *SIBLING_MODES,
        (sparsify_weights, {}),
        (sparsify_weights, {"block_size": 2}),
        (sparsify_weights, {"target_sparsity": None, "n_m_ratio": (2, 4)}),
        (sparsify_weights, {"quantize_dtype": DType.INT8}),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_weight_without_elements_stays_dense_silently(
    compress: object,
    options: dict[str, object],
    shape: tuple[int, int],
    sparsify_log: pytest.LogCaptureFixture,
) -> None:
    # nothing to compress (the quantize chain of a zero-size weight once reached the Core AI
    # verifier, which kills the process)
    program = linear_program(np.zeros(shape, dtype=np.float32))
    before = str(program)
    report = {
        quantize_weights: quantize_with_report,
        palettize_weights: palettize_with_report,
        sparsify_weights: sparsify_with_report,
    }
    result = report[compress](program, weight_num_threshold=0, **options)  # type: ignore[index]
    (row,) = result.weights
    assert row.mode is None and row.reason == "no elements"
    assert str(result.program) == before and sparsify_log.records == []


def test_block_larger_than_out_channels_skipped(
    asset_path: Path, sparsify_log: pytest.LogCaptureFixture
) -> None:
    w = weight((6, 32))
    program = sparsify_weights(linear_program(w), block_size=8, weight_num_threshold=0)
    assert "block_size=8 exceeds the 6 output channels" in sparsify_log.text
    assert "weight @main/w0 at " in sparsify_log.text  # named by graph, ordinal and location
    assert "helpers.py:" in sparsify_log.text
    assert "(6x32 -> coreai.transpose)" in sparsify_log.text
    assert np.array_equal(read_back_linear(program, 32, np.float32, asset_path), w)


def test_m_larger_than_in_channels_skipped(
    asset_path: Path, sparsify_log: pytest.LogCaptureFixture
) -> None:
    w = weight((16, 6))
    program = sparsify_weights(
        linear_program(w), target_sparsity=None, n_m_ratio=(4, 8), weight_num_threshold=0
    )
    assert "m=8 exceeds the 6 input channels" in sparsify_log.text
    assert np.array_equal(read_back_linear(program, 6, np.float32, asset_path), w)


def test_below_threshold_is_silent(sparsify_log: pytest.LogCaptureFixture) -> None:
    sparsify_weights(linear_program(weight()), weight_num_threshold=10_000)
    assert sparsify_log.records == []


def test_numeric_failure_skips_the_weight_with_a_warning(
    asset_path: Path, sparsify_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    pass_module = sys.modules["coreai_opt.coreai_utils.passes.sparsify"]

    def out_of_memory(*_: object) -> None:
        raise MemoryError("cannot allocate 64 GiB")

    monkeypatch.setattr(pass_module, "prune", out_of_memory)
    w = weight()
    program = sparsify_weights(linear_program(w), weight_num_threshold=0)
    assert (
        "could not compress: MemoryError: cannot allocate 64 GiB; left dense" in sparsify_log.text
    )
    assert np.array_equal(read_back_linear(program, 32, np.float32, asset_path), w)
