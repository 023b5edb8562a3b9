"""palettize_weights on the Core AI runtime: bit-exact against a brute-force decode."""

from __future__ import annotations

import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import DType, palettize_weights, palettize_with_report
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.passes.palettize import palettize_weight
from coreai_opt.coreai_utils.passes.palettize_options import validate_palettize_options
from tests.helpers import both_sides_program, linear_program, read_back_linear, run_program
from tests.reference import ref_lut_decode
from tests.torch_models import CNN, TinyTransformer, convert

OUT, IN = 20, 48  # 20 channels: groups of 8 leave a partial group of 4
WEIGHT_DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]
OPTIONS = [
    {"n_bits": 1},
    {"n_bits": 2, "granularity": "per_channel"},
    {"n_bits": 3, "granularity": "per_grouped_channel", "group_size": 8},
    {"n_bits": 4},
    {"n_bits": 6, "enable_per_channel_scale": True},
    {"n_bits": 8, "granularity": "per_grouped_channel", "group_size": 5},
    {"n_bits": 4, "cluster_dim": 2},
    {"n_bits": 2, "cluster_dim": 4, "granularity": "per_grouped_channel", "group_size": 8},
    {"n_bits": 4, "lut_dtype": DType.INT8, "granularity": "per_channel"},
    {"n_bits": 4, "lut_dtype": DType.UINT8},
    {"n_bits": 4, "lut_dtype": DType.FP8_E4M3FN, "enable_per_channel_scale": True},
    {
        "n_bits": 3,
        "lut_dtype": DType.FP8_E5M2,
        "cluster_dim": 2,
        "group_size": 8,
        "granularity": "per_grouped_channel",
    },
]
DEFAULTS = {
    "lut_dtype": None,
    "n_bits": 4,
    "granularity": "per_tensor",
    "group_size": 32,
    "cluster_dim": 1,
    "enable_per_channel_scale": False,
    "weight_num_threshold": 0,
}


def layer(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((OUT, IN)) * np.linspace(0.2, 3, OUT)[:, None]).astype(dtype)


@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
def test_read_back_is_bit_exact(
    weight_dtype: type, options: dict[str, object], asset_path: Path
) -> None:
    weight = layer(weight_dtype)
    program = linear_program(weight)
    result = palettize_with_report(program, weight_num_threshold=0, **options)  # type: ignore[arg-type]
    (row,) = result.weights
    assert row.mode == options.get("granularity", "per_tensor")
    got = read_back_linear(result.program, IN, weight_dtype, asset_path)
    site = find_weights(program._module._mlir_module)[0]
    validated = validate_palettize_options(**{**DEFAULTS, **options})
    palette = palettize_weight(weight, site, row.mode, validated)
    expected = ref_lut_decode(palette, np.dtype(weight_dtype))
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    error = np.linalg.norm((got - weight).astype(np.float64)) / np.linalg.norm(
        weight.astype(np.float64)
    )
    assert error < 0.8


def test_lossless_and_report(asset_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal(16).astype(np.float32)[rng.integers(0, 16, (OUT, IN))]
    result = palettize_with_report(linear_program(weight), n_bits=4, weight_num_threshold=0)
    assert np.array_equal(read_back_linear(result.program, IN, np.float32, asset_path), weight)
    (row,) = result.weights
    assert row.joint == "palettize4" and row.bytes_after == OUT * IN // 2 + 16 * 4


def test_converted_models_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    model = TinyTransformer().eval()
    program = palettize_weights(
        convert(model, {"ids": ids}), n_bits=8, granularity="per_channel", weight_num_threshold=512
    )
    with torch.no_grad():
        want = model(ids).numpy()
    got = run_program(program, {"ids": ids.numpy()}, tmp_path / "t.aimodel")["y"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    cnn = CNN().eval()
    x = torch.randn(2, 3, 6, 6)
    result = palettize_with_report(
        convert(cnn, {"x": x}),
        n_bits=6,
        granularity="per_grouped_channel",
        group_size=4,
        weight_num_threshold=0,
    )
    assert {r.mode for r in result.weights} == {"per_grouped_channel"}
    with torch.no_grad():
        want = cnn(x).numpy()
    got = run_program(result.program, {"x": x.numpy()}, tmp_path / "c.aimodel")["y"]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_skips_and_fallbacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    odd = linear_program(layer(np.float32)[:, :45].copy())
    result = palettize_with_report(odd, cluster_dim=2, weight_num_threshold=0)
    assert result.weights[0].mode is None and "not divisible by cluster_dim=2" in (
        result.weights[0].reason or ""
    )
    unknown = both_sides_program(layer(np.float32)[:, :OUT].copy())
    result = palettize_with_report(unknown, granularity="per_channel", weight_num_threshold=0)
    assert result.weights[0].mode == "per_tensor" and "palettized per_tensor" in caplog.text
    result = palettize_with_report(unknown, cluster_dim=2, weight_num_threshold=0)
    assert result.weights[0].mode is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lut_dtype": DType.INT4}, ValueError, "lut_dtype must be None or one of"),
        ({"n_bits": 5}, ValueError, "n_bits must be one of"),
        ({"n_bits": "4"}, TypeError, "n_bits must be an int"),
        ({"granularity": "per_block"}, ValueError, "quantize_weights"),
        ({"granularity": "rows"}, ValueError, "granularity must be one of"),
        ({"group_size": 0}, ValueError, "group_size must be a positive int"),
        ({"cluster_dim": 0}, ValueError, "cluster_dim must be a positive int"),
        ({"cluster_dim": 2, "enable_per_channel_scale": True}, ValueError, "scalar palettes only"),
        ({"enable_per_channel_scale": 1}, TypeError, "enable_per_channel_scale must be a bool"),
        ({"weight_num_threshold": -5}, ValueError, "weight_num_threshold"),
        ({"in_place": None}, TypeError, "in_place must be a bool"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    program = linear_program(layer(np.float32))
    before = str(program._module._mlir_module)
    with pytest.raises(error, match=match):
        palettize_weights(program, **kwargs)  # type: ignore[arg-type]
    assert str(program._module._mlir_module) == before
