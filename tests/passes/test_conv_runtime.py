"""Transposed and 3-D convolutions: compressed programs against dense ones with the expected
weights, on the runtime (output axis 1 for transposed convs exercises the non-leading-axis
paths of block pruning and per-channel quantization)."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import coreai.authoring as ca
import numpy as np
import pytest
from coreai.authoring import AIProgram, Module, TensorType, Value, graph

from coreai_opt.coreai_utils import DType, sparsify_weights
from coreai_opt.coreai_utils.numerics import quantize, to_sparse
from tests.helpers import run_program
from tests.reference import ref_block, ref_magnitude, ref_nm

U32 = np.uint32


def conv_transpose_program(weight: np.ndarray) -> AIProgram:
    """``conv_transpose2d`` of a [1, 8, 4, 4] input with ``weight`` [8 in, 6 out, 3, 3]."""
    ones, zeros = np.array([1, 1], U32), np.array([0, 0], U32)
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((1, 8, 4, 4), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((1, 6, 6, 6), np.float32, name="y")]:
            return ca.conv_transpose2d(x, weight, ones, zeros, ones, zeros, np.array(1, U32))

    return AIProgram(module)


def conv3d_program(weight: np.ndarray) -> AIProgram:
    """``conv3d`` of a [1, 8, 3, 3, 3] input with ``weight`` [4 out, 8 in, 2, 2, 2]."""
    ones = np.array([1, 1, 1], U32)
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((1, 8, 3, 3, 3), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((1, 4, 2, 2, 2), np.float32, name="y")]:
            return ca.conv3d(x, weight, ones, ones, np.array(1, U32))

    return AIProgram(module)


def compare(
    build: Callable[[np.ndarray], AIProgram],
    weight: np.ndarray,
    expected: np.ndarray,
    kwargs: dict[str, object],
    tmp_path: Path,
    x_shape: tuple[int, ...],
) -> None:
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    compressed = sparsify_weights(build(weight), weight_num_threshold=0, **kwargs)  # type: ignore[arg-type]
    got = run_program(compressed, {"x": x}, tmp_path / "c.aimodel")["y"]
    want = run_program(build(expected), {"x": x}, tmp_path / "d.aimodel")["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


WEIGHT_T = np.random.default_rng(0).standard_normal((8, 6, 3, 3)).astype(np.float32)
WEIGHT_3D = np.random.default_rng(2).standard_normal((4, 8, 2, 2, 2)).astype(np.float32)


def test_conv_transpose_block_along_output_axis_1(tmp_path: Path) -> None:
    expected = ref_block(WEIGHT_T, 0.5, 2, axis=1)
    compare(conv_transpose_program, WEIGHT_T, expected, {"block_size": 2}, tmp_path, (1, 8, 4, 4))


def test_conv_transpose_nm_along_input_axis_0(tmp_path: Path) -> None:
    expected = ref_nm(WEIGHT_T, 2, 4, axis=0)
    kwargs = {"target_sparsity": None, "n_m_ratio": (2, 4)}
    compare(conv_transpose_program, WEIGHT_T, expected, kwargs, tmp_path, (1, 8, 4, 4))


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT8, DType.FP8_E4M3FN])
def test_conv_transpose_quantized_per_output_channel(dtype: DType, tmp_path: Path) -> None:
    sparse = to_sparse(WEIGHT_T, ref_magnitude(WEIGHT_T, 0.5) != 0)
    quantized = quantize(sparse, dtype, 1)
    assert quantized.scale.shape == (1, 6, 1, 1)
    compare(
        conv_transpose_program,
        WEIGHT_T,
        quantized.dequantize(),
        {"quantize_dtype": dtype},
        tmp_path,
        (1, 8, 4, 4),
    )


def test_conv3d_nm(tmp_path: Path) -> None:
    expected = ref_nm(WEIGHT_3D, 2, 4, axis=1)
    kwargs = {"target_sparsity": None, "n_m_ratio": (2, 4)}
    compare(conv3d_program, WEIGHT_3D, expected, kwargs, tmp_path, (1, 8, 3, 3, 3))


def test_conv3d_block_and_palettize(tmp_path: Path) -> None:
    expected = ref_block(WEIGHT_3D, 0.5, 2, axis=0)
    pruned = expected != 0
    # palettize 8 on 128 values: lossless (at most 256 distinct values)
    compare(
        conv3d_program,
        WEIGHT_3D,
        expected,
        {"block_size": 2, "palettize_nbits": 8},
        tmp_path,
        (1, 8, 3, 3, 3),
    )
    assert pruned.sum() <= 256
