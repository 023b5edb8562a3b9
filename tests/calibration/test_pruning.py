"""Wanda and SparseGPT through sparsify_weights, proven on the Core AI runtime."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import (
    Calibration,
    collect_calibration,
    sparsify_weights,
    sparsify_with_report,
)
from coreai_opt.coreai_utils.numerics.activations import input_norms
from coreai_opt.coreai_utils.numerics.sparsegpt import sparsegpt_weight
from coreai_opt.coreai_utils.numerics.wanda import wanda_nm_mask
from coreai_opt.coreai_utils.runtime import run_asset
from tests.helpers import linear_program, read_back_linear
from tests.reference import ref_magnitude, ref_wanda
from tests.torch_models import CNN, TinyTransformer, convert

IN, OUT = 48, 32


def scaled_inputs(
    count: int, dtype: type = np.float32, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Samples for :func:`linear_program` whose columns have very different scales."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.05, 5.0, IN)
    mixing = np.eye(IN) + 0.3 * rng.standard_normal((IN, IN))
    return [
        {"x": ((rng.standard_normal((IN, IN)) @ mixing) * scales).astype(dtype)}
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((OUT, IN)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_wanda_read_back_equals_the_reference(
    dtype: type, weight: np.ndarray, asset_path: Path
) -> None:
    w = weight.astype(dtype)
    program = linear_program(w)
    calibration = collect_calibration(program, scaled_inputs(3, dtype))
    stats = calibration.stats["@main/w0"]
    result = sparsify_with_report(program, weight_num_threshold=0, calibration=calibration)
    (row,) = result.weights
    assert row.algorithm == "wanda" and row.reason is None
    norms = input_norms(stats, w.shape, 0, 1)
    got = read_back_linear(result.program, IN, dtype, asset_path)
    assert np.array_equal(got, ref_wanda(w, norms, 0.5, 0))
    assert not np.array_equal(got, ref_magnitude(w, 0.5)), "the activations change the choice"


def test_wanda_nm_read_back(weight: np.ndarray, asset_path: Path) -> None:
    program = linear_program(weight)
    calibration = collect_calibration(program, scaled_inputs(2))
    pruned = sparsify_weights(
        program,
        target_sparsity=None,
        n_m_ratio=(2, 4),
        weight_num_threshold=0,
        calibration=calibration,
    )
    norms = input_norms(calibration.stats["@main/w0"], weight.shape, 0, 1)
    keep = wanda_nm_mask(weight, norms, 2, 4, axis=1)
    assert np.array_equal(
        read_back_linear(pruned, IN, np.float32, asset_path), np.where(keep, weight, 0)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize(
    "pattern", [{"target_sparsity": 0.5}, {"target_sparsity": None, "n_m_ratio": (2, 4)}]
)
def test_sparsegpt_read_back_equals_the_numerics(
    dtype: type, pattern: dict[str, object], weight: np.ndarray, asset_path: Path
) -> None:
    w = weight.astype(dtype)
    program = linear_program(w)
    calibration = collect_calibration(program, scaled_inputs(3, dtype))
    pruned = sparsify_weights(
        program, weight_num_threshold=0, calibration=calibration, algorithm="sparsegpt", **pattern
    )
    n_m = pattern.get("n_m_ratio")
    expected = sparsegpt_weight(
        w,
        calibration.stats["@main/w0"],
        0,
        1,
        sparsity=None if n_m else 0.5,
        n_m=n_m,  # type: ignore[arg-type]
    ).dense()
    got = read_back_linear(pruned, IN, dtype, asset_path)
    assert np.array_equal(got, expected)
    assert np.sum(got == 0) >= w.size // 2


def test_sparsegpt_lowers_the_output_error_on_held_out_inputs(
    weight: np.ndarray, tmp_path: Path
) -> None:
    program = linear_program(weight)
    samples = scaled_inputs(8)  # one distribution: calibrate on half, evaluate on the rest
    calibration = collect_calibration(program, samples[:4])
    held_out = samples[4:]
    errors = {}
    for algorithm in ("magnitude", "wanda", "sparsegpt"):
        extra = {} if algorithm == "magnitude" else {"calibration": calibration}
        pruned = sparsify_weights(program, weight_num_threshold=0, algorithm=algorithm, **extra)
        path = tmp_path / f"{algorithm}.aimodel"
        pruned.save_asset(path)
        errors[algorithm] = sum(
            float(np.linalg.norm(run_asset(path, s)["y"] - s["x"] @ weight.T)) for s in held_out
        )
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_calibrated_transformer_beats_magnitude_on_held_out_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    with torch.no_grad():  # outlier channels, as pretrained transformers have
        for norm in (model.norm1, model.norm2):
            norm.weight.copy_(torch.from_numpy(np.geomspace(0.05, 4.0, 32).astype(np.float32)))
    samples = [{"ids": torch.randint(0, 64, (2, 16), dtype=torch.int32)} for _ in range(24)]
    program = convert(model, samples[0])
    inputs = [{"ids": s["ids"].numpy()} for s in samples]
    calibration = collect_calibration(program, inputs[:16])
    dense = tmp_path / "dense.aimodel"
    program.save_asset(dense)
    reference = [run_asset(dense, s)["y"] for s in inputs[16:]]

    def error(**kwargs: object) -> float:
        pruned = sparsify_weights(program, weight_num_threshold=512, **kwargs)  # type: ignore[arg-type]
        path = tmp_path / f"p{len(list(tmp_path.iterdir()))}.aimodel"
        pruned.save_asset(path)
        outputs = [run_asset(path, s)["y"] for s in inputs[16:]]
        return float(
            np.mean(
                [
                    np.linalg.norm(o - r) / np.linalg.norm(r)
                    for o, r in zip(outputs, reference, strict=True)
                ]
            )
        )

    magnitude = error()
    assert error(calibration=calibration) < magnitude
    assert error(calibration=calibration, algorithm="sparsegpt") < magnitude
    nm = {"target_sparsity": None, "n_m_ratio": (2, 4)}
    assert error(calibration=calibration, algorithm="sparsegpt", **nm) < error(**nm)


def test_conv_net_with_sparsegpt_runs_and_keeps_the_pattern(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CNN().eval()
    samples = [{"x": torch.randn(2, 3, 6, 6)} for _ in range(4)]
    program = convert(model, samples[0])
    inputs = [{"x": s["x"].numpy()} for s in samples]
    calibration = collect_calibration(program, inputs)
    result = sparsify_with_report(
        program,
        target_sparsity=None,
        n_m_ratio=(2, 4),
        weight_num_threshold=64,
        calibration=calibration,
        algorithm="sparsegpt",
    )
    rows = {r.shape: r for r in result.weights}
    assert rows[(16, 4, 3, 3)].algorithm == "sparsegpt" and rows[(16, 4, 3, 3)].sparsity == 0.5
    assert rows[(8, 3, 3, 3)].mode is None  # 3 input channels < m
    path = tmp_path / "cnn.aimodel"
    result.program.save_asset(path)
    out = run_asset(path, inputs[0])["y"]
    with torch.no_grad():
        assert np.isfinite(out).all() and out.shape == model(samples[0]["x"]).shape


def test_fallbacks_are_reported(tmp_path: Path, sparsify_log: pytest.LogCaptureFixture) -> None:
    model = TinyTransformer().eval()
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    program = convert(model, {"ids": ids})
    calibration = collect_calibration(program, [{"ids": ids.numpy()}], max_gram_channels=100)
    result = sparsify_with_report(
        program, weight_num_threshold=512, calibration=calibration, algorithm="sparsegpt"
    )
    rows = {r.id: r for r in result.weights}
    assert rows["@main/w0"].algorithm == "magnitude"
    assert "gather_nd" in (rows["@main/w0"].reason or "")
    assert rows["@main/w1"].algorithm == "sparsegpt"
    down = rows["@main/w6"]  # 128 input channels > max_gram_channels
    assert down.algorithm == "wanda" and "max_gram_channels" in (down.reason or "")
    sparsify_log.clear()
    block = sparsify_with_report(
        program,
        block_size=4,
        weight_num_threshold=512,
        calibration=calibration,
        algorithm="sparsegpt",
    )
    assert {r.algorithm for r in block.weights if r.kind == "linear"} == {"wanda"}
    assert "sparsegpt does not do block sparsity" in sparsify_log.text


def test_statistics_of_another_program_do_not_fit(
    weight: np.ndarray, sparsify_log: pytest.LogCaptureFixture
) -> None:
    calibration = collect_calibration(linear_program(weight), scaled_inputs(1))
    other = linear_program(np.ones((IN, OUT), np.float32))  # in = 32 columns, stats have 48
    with pytest.raises(ValueError, match="calibration is from another program: weight @main/w0"):
        sparsify_with_report(other, weight_num_threshold=0, calibration=calibration)
    # a file of an earlier version records no shapes: the statistics just do not fit
    unrecorded = dataclasses.replace(calibration, shapes={})
    result = sparsify_with_report(other, weight_num_threshold=0, calibration=unrecorded)
    (row,) = result.weights
    assert row.algorithm == "magnitude" and "do not fit" in (row.reason or "")
    assert "do not fit" in sparsify_log.text


def test_loaded_calibration_prunes_identically(weight: np.ndarray, tmp_path: Path) -> None:
    program = linear_program(weight)
    calibration = collect_calibration(program, scaled_inputs(2))
    calibration.save(tmp_path / "c.npz")
    loaded = Calibration.load(tmp_path / "c.npz")
    a = sparsify_weights(
        program, weight_num_threshold=0, calibration=calibration, algorithm="sparsegpt"
    )
    b = sparsify_weights(program, weight_num_threshold=0, calibration=loaded, algorithm="sparsegpt")
    assert np.array_equal(
        read_back_linear(a, IN, np.float32, tmp_path / "a.aimodel"),
        read_back_linear(b, IN, np.float32, tmp_path / "b.aimodel"),
    )


def test_spec_calls_are_unchanged(weight: np.ndarray, asset_path: Path) -> None:
    program = linear_program(weight)
    plain = sparsify_weights(program, 0.5, None, None, None, None, 0, False)
    assert np.array_equal(
        read_back_linear(plain, IN, np.float32, asset_path), ref_magnitude(weight, 0.5)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"algorithm": "wanda"}, ValueError, "needs calibration"),
        ({"algorithm": "sparsegpt"}, ValueError, "needs calibration"),
        ({"algorithm": "obs"}, ValueError, "algorithm must be None or one of"),
        ({"algorithm": 3}, ValueError, "algorithm must be None or one of"),
        ({"calibration": {"@main/w0": 1}}, TypeError, "calibration must be a Calibration"),
    ],
)
def test_bad_calibration_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str, weight: np.ndarray
) -> None:
    program = linear_program(weight)
    before = str(program._module._mlir_module)
    with pytest.raises(error, match=match):
        sparsify_weights(program, **kwargs)  # type: ignore[arg-type]
    assert str(program._module._mlir_module) == before


def test_magnitude_with_calibration_ignores_it(weight: np.ndarray, asset_path: Path) -> None:
    program = linear_program(weight)
    calibration = collect_calibration(program, scaled_inputs(1))
    pruned = sparsify_weights(
        program, weight_num_threshold=0, calibration=calibration, algorithm="magnitude"
    )
    assert np.array_equal(
        read_back_linear(pruned, IN, np.float32, asset_path), ref_magnitude(weight, 0.5)
    )


def test_warnings_name_the_weight(weight: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    program = linear_program(weight)
    calibration = collect_calibration(program, scaled_inputs(1))
    sparsify_weights(
        program,
        block_size=4,
        weight_num_threshold=0,
        calibration=calibration,
        algorithm="sparsegpt",
    )
    assert "@main/w0" in caplog.text


def test_transposed_conv_sparsegpt_falls_back_to_wanda(tmp_path: Path) -> None:
    from tests.calibration.test_capture import Upsample

    torch.manual_seed(0)
    model = Upsample().eval()
    x = torch.randn(1, 6, 5, 5)
    program = convert(model, {"x": x})
    calibration = collect_calibration(program, [{"x": x.numpy()}])
    result = sparsify_with_report(
        program, weight_num_threshold=0, calibration=calibration, algorithm="sparsegpt"
    )
    (row,) = result.weights
    assert row.algorithm == "wanda" and "transposed convolution" in (row.reason or "")
    stats = calibration.stats[row.id]
    weight = model.up.weight.detach().numpy()  # [C_in, C_out/g, k, k]: input axis 0
    expected = ref_wanda(weight, input_norms(stats, weight.shape, 1, 0), 0.5, 1)
    path = tmp_path / "up.aimodel"
    result.program.save_asset(path)
    with torch.no_grad():
        model.up.weight.copy_(torch.from_numpy(expected))
        want = model(x).numpy()
    np.testing.assert_allclose(run_asset(path, {"x": x.numpy()})["y"], want, rtol=1e-4, atol=1e-5)
