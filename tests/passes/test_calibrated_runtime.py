"""Calibrated quantization (GPTQ) and palettization (weighted k-means, OBS rounding) on the
Core AI runtime: the stored weight decodes bit-exactly to what the numerics produced, and it
is closer to the dense layer's outputs on the calibration inputs than the data-free result."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import (
    Calibration,
    DType,
    QScheme,
    collect_calibration,
    palettize_with_report,
    quantize_with_report,
)
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.numerics.gptq import gptq_weight
from coreai_opt.coreai_utils.passes.palettize import palettize_weight
from coreai_opt.coreai_utils.passes.palettize_options import validate_palettize_options
from coreai_opt.coreai_utils.passes.quantize import GPTQ_ORDER
from tests.helpers import linear_program, read_back_linear, run_program
from tests.numerics.test_sparsegpt import correlated_inputs
from tests.passes.test_quantize_runtime import CASES, IN, layer
from tests.torch_models import CNN, convert


def calibrated(weight: np.ndarray, count: int = 6) -> tuple[object, Calibration, np.ndarray]:
    """The linear program of ``weight``, its calibration on correlated inputs, the inputs."""
    program = linear_program(weight)
    x = correlated_inputs(count * IN, IN, seed=1).astype(weight.dtype)
    samples = [{"x": x[i * IN : (i + 1) * IN]} for i in range(count)]
    return program, collect_calibration(program, samples), x.astype(np.float64)


def output_error(got: np.ndarray, weight: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm((got.astype(np.float64) - weight.astype(np.float64)) @ x.T))


@pytest.mark.parametrize("weight_dtype", [np.float32, ml_dtypes.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(
    ("dtype", "scheme", "granularity", "scale"), CASES, ids=lambda v: getattr(v, "value", str(v))
)
def test_gptq_decodes_exactly_and_beats_round_to_nearest(
    weight_dtype: type,
    dtype: DType,
    scheme: QScheme,
    granularity: str,
    scale: DType | None,
    tmp_path: Path,
) -> None:
    weight = layer(weight_dtype)
    program, calibration, x = calibrated(weight)
    options = {
        "qscheme": scheme,
        "granularity": granularity,
        "weight_num_threshold": 0,
        "scale_dtype": scale,
    }
    gptq = quantize_with_report(program, dtype, calibration=calibration, **options)  # type: ignore[arg-type]
    (row,) = gptq.weights
    assert row.algorithm == "gptq"
    got = read_back_linear(gptq.program, IN, weight_dtype, tmp_path / "g.aimodel")
    stats = calibration.stats["@main/w0"]
    scales = ml_dtypes.float8_e8m0fnu if scale or dtype is DType.FP4_E2M1FN else None
    want = gptq_weight(
        weight,
        stats,
        0,
        1,
        dtype=dtype,
        granularity=granularity,
        block_size=32,
        symmetric=scheme is QScheme.SYMMETRIC,
        scale_dtype=None if scales is None else np.dtype(scales),
        order=GPTQ_ORDER,
    ).dequantize(np.dtype(weight_dtype))
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    rtn = quantize_with_report(program, dtype, **options)  # type: ignore[arg-type]
    plain = read_back_linear(rtn.program, IN, weight_dtype, tmp_path / "r.aimodel")
    assert rtn.weights[0].algorithm == "rtn"
    assert output_error(got, weight, x) < output_error(plain, weight, x)


PALETTES = [
    {"n_bits": 3},
    {"n_bits": 2, "granularity": "per_grouped_channel", "group_size": 8},
    {"n_bits": 4, "granularity": "per_channel", "enable_per_channel_scale": True},
    {"n_bits": 3, "lut_dtype": DType.INT8},
    {"n_bits": 2, "cluster_dim": 2},
]


@pytest.mark.parametrize("algorithm", ["weighted_kmeans", "obs"])
@pytest.mark.parametrize("options", PALETTES, ids=lambda o: "-".join(f"{v}" for v in o.values()))
@pytest.mark.parametrize("weight_dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_calibrated_palettes_decode_exactly_and_beat_plain_kmeans(
    algorithm: str, options: dict[str, object], weight_dtype: type, tmp_path: Path
) -> None:
    weight = layer(weight_dtype)
    program, calibration, x = calibrated(weight)
    result = palettize_with_report(
        program,
        calibration=calibration,
        algorithm=algorithm,
        weight_num_threshold=0,
        **options,  # type: ignore[arg-type]
    )
    (row,) = result.weights
    vector = options.get("cluster_dim", 1) != 1
    used = "kmeans" if vector and algorithm == "weighted_kmeans" else algorithm
    assert row.algorithm == used
    if used != algorithm:
        assert "vector LUTs are clustered unweighted" in (row.reason or "")
    got = read_back_linear(result.program, IN, weight_dtype, tmp_path / "p.aimodel")
    validated = validate_palettize_options(
        lut_dtype=options.get("lut_dtype"),
        n_bits=options["n_bits"],
        granularity=options.get("granularity", "per_tensor"),
        group_size=options.get("group_size", 32),
        cluster_dim=options.get("cluster_dim", 1),
        enable_per_channel_scale=options.get("enable_per_channel_scale", False),
        weight_num_threshold=0,
        algorithm=algorithm,
        calibrated=True,
    )
    (site,) = find_weights(program._module._mlir_module)  # type: ignore[attr-defined]
    palette = palettize_weight(
        weight, site, row.mode or "", validated, used, calibration.stats["@main/w0"]
    )
    want = palette.decode(np.dtype(weight_dtype))
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    plain = palettize_with_report(program, weight_num_threshold=0, **options)  # type: ignore[arg-type]
    base = read_back_linear(plain.program, IN, weight_dtype, tmp_path / "k.aimodel")
    if used != "kmeans":
        assert output_error(got, weight, x) < output_error(base, weight, x)


def test_a_convolution_network_with_gptq_and_obs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cnn = CNN().eval()
    xs = [torch.randn(2, 3, 6, 6) for _ in range(4)]
    program = convert(cnn, {"x": xs[0]})
    calibration = collect_calibration(program, [{"x": x.numpy()} for x in xs])
    with torch.no_grad():
        want = [cnn(x).numpy() for x in xs]

    def error(result: object) -> float:
        got = [
            run_program(result.program, {"x": x.numpy()}, tmp_path / f"c{i}.aimodel")["y"]  # type: ignore[attr-defined]
            for i, x in enumerate(xs)
        ]
        return float(sum(np.linalg.norm(g - w) for g, w in zip(got, want, strict=True)))

    options = {"granularity": "per_block", "block_size": 4, "weight_num_threshold": 0}
    gptq = quantize_with_report(program, DType.INT4, calibration=calibration, **options)  # type: ignore[arg-type]
    assert {r.algorithm for r in gptq.weights} == {"gptq"}
    rtn = quantize_with_report(program, DType.INT4, **options)  # type: ignore[arg-type]
    assert error(gptq) < error(rtn)
    obs = palettize_with_report(
        program, n_bits=2, weight_num_threshold=0, calibration=calibration, algorithm="obs"
    )
    assert {r.algorithm for r in obs.weights} == {"obs"}
    kmeans = palettize_with_report(program, n_bits=2, weight_num_threshold=0)
    assert error(obs) < error(kmeans)
