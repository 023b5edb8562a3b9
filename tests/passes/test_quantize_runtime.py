"""quantize_weights on the Core AI runtime: bit-exact against a brute-force reference."""

from __future__ import annotations

import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import (
    DType,
    QScheme,
    quantize_weights,
    quantize_with_report,
)
from coreai_opt.coreai_utils.numerics.blockwise import block_shape
from tests.helpers import both_sides_program, linear_program, read_back_linear, run_program
from tests.reference import ref_block_quantize
from tests.torch_models import CNN, TinyTransformer, convert, with_weights

OUT, IN = 24, 72  # 72 = 2 blocks of 32 + a partial block of 8
WEIGHT_DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]
INTEGER = [DType.INT4, DType.UINT4, DType.INT8, DType.UINT8]
CASES = (
    [
        (dtype, scheme, granularity, None)
        for dtype in INTEGER
        for scheme in QScheme
        for granularity in ("per_tensor", "per_channel", "per_block")
    ]
    + [
        (dtype, QScheme.SYMMETRIC, granularity, scale)
        for dtype in (DType.FP8_E4M3FN, DType.FP8_E5M2)
        for granularity in ("per_tensor", "per_channel", "per_block")
        for scale in (None, DType.FP8_E8M0FNU)
    ]
    + [(DType.FP4_E2M1FN, QScheme.SYMMETRIC, "per_block", None)]
)


def layer(dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.2, 3.0, OUT)[:, None]
    shift = np.linspace(-0.5, 0.5, OUT)[:, None]  # asymmetric ranges
    return (rng.standard_normal((OUT, IN)) * rows + shift).astype(dtype)


@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("dtype", "scheme", "granularity", "scale"),
    CASES,
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_read_back_is_bit_exact(
    weight_dtype: type,
    dtype: DType,
    scheme: QScheme,
    granularity: str,
    scale: DType | None,
    asset_path: Path,
) -> None:
    weight = layer(weight_dtype)
    program = quantize_weights(
        linear_program(weight),
        dtype,
        qscheme=scheme,
        granularity=granularity,
        weight_num_threshold=0,
        scale_dtype=scale,
    )
    got = read_back_linear(program, IN, weight_dtype, asset_path)
    scales = ml_dtypes.float8_e8m0fnu if scale or dtype is DType.FP4_E2M1FN else None
    expected = ref_block_quantize(
        weight,
        block_shape(weight.shape, granularity, 0, 1, 32),
        dtype.value,
        scheme is QScheme.SYMMETRIC,
        scales,
    )
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    error = np.linalg.norm((got - weight).astype(np.float64)) / np.linalg.norm(
        weight.astype(np.float64)
    )
    assert error < (0.25 if dtype in (DType.INT4, DType.UINT4, DType.FP4_E2M1FN) else 0.06)


def test_report_and_storage(asset_path: Path) -> None:
    weight = layer(np.float32)
    result = quantize_with_report(
        linear_program(weight), DType.INT4, granularity="per_block", weight_num_threshold=0
    )
    (row,) = result.weights
    assert row.mode == "per_block" and row.joint == "int4" and row.sparsity is None
    assert row.bytes_after == OUT * IN // 2 + OUT * 3 * 4  # 4-bit codes + fp32 scales


def test_asymmetric_uint8_keeps_zero_exact(asset_path: Path) -> None:
    weight = np.abs(layer(np.float32)) + 0.1  # all positive: zero point at the bottom
    weight[:, :8] = 0.0
    program = quantize_weights(
        linear_program(weight), DType.UINT8, qscheme="asymmetric", weight_num_threshold=0
    )
    got = read_back_linear(program, IN, np.float32, asset_path)
    assert np.all(got[:, :8] == 0.0)
    assert np.abs(got - weight).max() <= np.abs(weight).max() / 255 + 1e-6


def test_transformer_and_cnn_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    model = TinyTransformer().eval()
    program = convert(model, {"ids": ids})
    quantized = quantize_weights(program, DType.INT8, weight_num_threshold=512)
    with torch.no_grad():
        want = model(ids).numpy()
    got = run_program(quantized, {"ids": ids.numpy()}, tmp_path / "t.aimodel")["y"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    cnn = CNN().eval()
    x = torch.randn(2, 3, 6, 6)
    program = convert(cnn, {"x": x})
    result = quantize_with_report(
        program, DType.INT4, granularity="per_block", block_size=16, weight_num_threshold=0
    )
    assert {r.mode for r in result.weights} == {"per_block"}

    def expected(_: str, layer_: object, w: np.ndarray) -> np.ndarray:
        return ref_block_quantize(w, block_shape(w.shape, "per_block", 0, 1, 16), "int4", True)

    with torch.no_grad():
        want = with_weights(cnn, expected)(x).numpy()
    got = run_program(result.program, {"x": x.numpy()}, tmp_path / "c.aimodel")["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("granularity", "used"), [("per_block", "per_tensor"), ("per_channel", "per_tensor")]
)
def test_unknown_axes_fall_back_with_a_warning(
    granularity: str, used: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    weight = layer(np.float32)[:, :OUT].copy()
    result = quantize_with_report(
        both_sides_program(weight), DType.INT8, granularity=granularity, weight_num_threshold=0
    )
    (row,) = result.weights
    assert row.kind == "other" and row.mode == used
    assert f"quantized {used}" in caplog.text
    fp4 = quantize_with_report(
        both_sides_program(weight),
        DType.FP4_E2M1FN,
        granularity="per_block",
        weight_num_threshold=0,
    )
    assert fp4.weights[0].mode is None and "MXFP4 needs" in (fp4.weights[0].reason or "")


def test_in_place_and_threshold() -> None:
    weight = layer(np.float32)
    program = linear_program(weight)
    before = str(program._module._mlir_module)
    small = quantize_with_report(program, DType.INT8, weight_num_threshold=10_000)
    assert small.weights[0].mode is None and "below weight_num_threshold" in (
        small.weights[0].reason or ""
    )
    assert str(program._module._mlir_module) == before
    same = quantize_weights(program, DType.INT8, weight_num_threshold=0, in_place=True)
    assert same is program and str(program._module._mlir_module) != before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": DType.INT16}, ValueError, "dtype must be one of"),
        ({"dtype": "int3"}, ValueError, "dtype must be one of"),
        ({"dtype": DType.FP8_E4M3FN, "qscheme": "asymmetric"}, ValueError, "symmetric only"),
        ({"dtype": DType.INT8, "qscheme": "affine"}, ValueError, "qscheme must be one of"),
        (
            {"dtype": DType.INT8, "granularity": "per_grouped_channel"},
            ValueError,
            "palettize_weights",
        ),
        (
            {"dtype": DType.INT8, "scale_dtype": DType.FP8_E8M0FNU},
            ValueError,
            "scale_dtype is for floating-point",
        ),
        (
            {"dtype": DType.FP8_E4M3FN, "scale_dtype": DType.INT8},
            ValueError,
            "scale_dtype must be None or DType.FP8_E8M0FNU",
        ),
        ({"dtype": DType.FP4_E2M1FN}, ValueError, "needs granularity=per_block with block_size=32"),
        (
            {"dtype": DType.FP4_E2M1FN, "granularity": "per_block", "block_size": 16},
            ValueError,
            "block_size=32",
        ),
        ({"dtype": DType.INT8, "block_size": 0}, ValueError, "block_size must be a positive int"),
        ({"dtype": DType.INT8, "block_size": 2.5}, TypeError, "block_size must be an int"),
        ({"dtype": DType.INT8, "weight_num_threshold": -1}, ValueError, "weight_num_threshold"),
        ({"dtype": DType.INT8, "in_place": "yes"}, TypeError, "in_place must be a bool"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    program = linear_program(layer(np.float32))
    before = str(program._module._mlir_module)
    with pytest.raises(error, match=match):
        quantize_weights(program, **kwargs)  # type: ignore[arg-type]
    assert str(program._module._mlir_module) == before


def test_not_a_program() -> None:
    with pytest.raises(TypeError, match="AIProgram"):
        quantize_weights("model.aimodel", DType.INT8)  # type: ignore[arg-type]
