"""Joint quantization and palettization, as the Core AI runtime reconstructs them."""

import logging
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils import DType, sparsify_weights
from tests.helpers import linear_program, read_back_linear, run_program
from tests.reference import issue_layer, ref_block, ref_magnitude, ref_nm

FLOATS = [np.float32, np.float16, ml_dtypes.bfloat16]
QUANT = [DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2]
NBITS = [1, 2, 3, 4, 6, 8]
OUT, IN = 20, 36

MODES: dict[str, tuple[dict[str, Any], Any]] = {
    "magnitude": (dict(target_sparsity=0.5), lambda w: ref_magnitude(w, 0.5)),
    "block": (dict(target_sparsity=0.5, block_size=4), lambda w: ref_block(w, 0.5, 4, 0)),
    "2:4": (dict(target_sparsity=None, n_m_ratio=(2, 4)), lambda w: ref_nm(w, 2, 4, 1)),
}
# loose per-element sanity bounds (relative to the row's largest value) for small layers
STEP = {DType.INT8: 1 / 127, DType.UINT8: 2 / 255, DType.FP8_E4M3FN: 1 / 8, DType.FP8_E5M2: 1 / 4}


def layer(dtype: Any, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.uniform(0.2, 3.0, (OUT, 1))
    return (rng.standard_normal((OUT, IN)) * rows).astype(np.float32).astype(dtype)


def relative_error(rebuilt: np.ndarray, expected: np.ndarray) -> float:
    a, b = rebuilt.astype(np.float64), expected.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("quantize_dtype", QUANT, ids=str)
def test_quantized_zeros_exact_and_values_close(
    quantize_dtype: DType, dtype: Any, mode: str, asset_path: Path
) -> None:
    kwargs, reference = MODES[mode]
    weight = layer(dtype)
    expected = reference(weight)
    program = sparsify_weights(
        linear_program(weight), weight_num_threshold=0, quantize_dtype=quantize_dtype, **kwargs
    )
    rebuilt = read_back_linear(program, IN, dtype, asset_path)
    assert rebuilt.dtype == weight.dtype
    pruned = expected == 0
    assert np.all(rebuilt[pruned] == 0), "pruned positions must decompress to exact 0.0"
    row_max = np.abs(expected.astype(np.float32)).max(axis=1, keepdims=True)
    error = np.abs(rebuilt.astype(np.float32) - expected.astype(np.float32))
    assert np.all(error <= row_max * STEP[quantize_dtype] + 1e-6)


@pytest.mark.parametrize(
    ("quantize_dtype", "target"),
    [
        (DType.INT8, 6e-3),
        (DType.FP8_E4M3FN, 2.6e-2),
        (DType.FP8_E5M2, 5.2e-2),
        (DType.UINT8, 9.5e-3),
    ],
    ids=str,
)
def test_error_targets_and_asset_size_on_runtime(
    quantize_dtype: DType, target: float, tmp_path: Path
) -> None:
    weight = issue_layer()  # [256 out, 192 in]
    pruned = ref_magnitude(weight, 0.5)
    dense = linear_program(weight)
    program = sparsify_weights(dense, quantize_dtype=quantize_dtype)
    rebuilt = read_back_linear(program, 192, np.float32, tmp_path / "q.aimodel")
    assert np.all(rebuilt[pruned == 0] == 0)
    assert relative_error(rebuilt, pruned) <= target
    dense.save_asset(tmp_path / "dense.aimodel")
    assert asset_bytes(tmp_path / "q.aimodel") <= asset_bytes(tmp_path / "dense.aimodel") / 4


def asset_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nbits", NBITS)
def test_palettized_on_runtime(nbits: int, dtype: Any, asset_path: Path) -> None:
    weight = layer(dtype)
    expected = ref_magnitude(weight, 0.5)
    program = sparsify_weights(
        linear_program(weight), weight_num_threshold=0, palettize_nbits=nbits
    )
    rebuilt = read_back_linear(program, IN, dtype, asset_path)
    kept = expected != 0
    assert np.all(rebuilt[~kept] == 0)
    assert np.unique(rebuilt[kept].astype(np.float32)).size <= 2**nbits
    if nbits >= 4:
        assert relative_error(rebuilt, expected) < {4: 0.15, 6: 0.06, 8: 0.025}[nbits]


@pytest.mark.parametrize("nbits", NBITS)
def test_palettize_lossless_when_few_values(nbits: int, asset_path: Path) -> None:
    rng = np.random.default_rng(nbits)
    palette = rng.standard_normal(2**nbits).astype(np.float32) * 3
    weight = palette[rng.integers(0, palette.size, (OUT, IN))]
    expected = ref_magnitude(weight, 0.25)
    program = sparsify_weights(
        linear_program(weight), target_sparsity=0.25, weight_num_threshold=0, palettize_nbits=nbits
    )
    assert np.array_equal(read_back_linear(program, IN, np.float32, asset_path), expected)


def test_nm_pattern_kept_under_quantization(asset_path: Path) -> None:
    weight = layer(np.float32)
    program = sparsify_weights(
        linear_program(weight),
        target_sparsity=None,
        n_m_ratio=(2, 4),
        weight_num_threshold=0,
        quantize_dtype=DType.INT8,
    )
    rebuilt = read_back_linear(program, IN, np.float32, asset_path)
    groups = rebuilt.reshape(OUT, IN // 4, 4)
    assert np.all(np.count_nonzero(groups == 0, axis=-1) >= 2)
    assert np.all(rebuilt[ref_nm(weight, 2, 4, 1) == 0] == 0)


@pytest.mark.parametrize(
    "joint", [dict(quantize_dtype=DType.UINT8), dict(palettize_nbits=4)], ids=str
)
def test_fully_pruned_weight_falls_back_to_plain_sparse(
    joint: dict[str, Any], asset_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    weight = layer(np.float32)
    program = sparsify_weights(
        linear_program(weight), target_sparsity=1.0, weight_num_threshold=0, **joint
    )
    assert "no non-zero values left" in caplog.text
    assert np.all(read_back_linear(program, IN, np.float32, asset_path) == 0)


def test_palettize_after_runtime_ran_in_this_process(tmp_path: Path) -> None:
    weight = layer(np.float32)
    run_program(linear_program(weight), {"x": np.eye(IN, dtype=np.float32)}, tmp_path / "a.aimodel")
    program = sparsify_weights(linear_program(weight), weight_num_threshold=0, palettize_nbits=8)
    assert read_back_linear(program, IN, np.float32, tmp_path / "b.aimodel").shape == (OUT, IN)


def test_embedding_quantized_per_row(asset_path: Path) -> None:
    """Per-channel scales follow the weight's own output axis (also for matmul rhs [in, out])."""
    weight = layer(np.float32).T.copy()  # used as y = x @ W: W is [in=36, out=20], out axis 1
    from typing import Annotated

    import coreai.authoring as ca
    from coreai.authoring import AIProgram, Module, TensorType, Value, graph

    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((IN, IN), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((IN, OUT), np.float32, name="y")]:
            return ca.batch_matmul(x, weight)

    program = sparsify_weights(AIProgram(module), weight_num_threshold=0, quantize_dtype=DType.INT8)
    rebuilt = run_program(program, {"x": np.eye(IN, dtype=np.float32)}, asset_path)["y"]
    expected = ref_magnitude(weight, 0.5)
    column_max = np.abs(expected).max(axis=0, keepdims=True)
    assert np.all(np.abs(rebuilt - expected) <= column_max / 127 / 2 * 1.001 + 1e-7)
