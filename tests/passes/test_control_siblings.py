"""exclude and overrides on quantize_weights and palettize_weights: the language-model recipe
in one call, checked on the Core AI runtime; and the errors, raised before anything runs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coreai_opt.coreai_utils import (
    DType,
    collect_calibration,
    palettize_weights,
    palettize_with_report,
    quantize_weights,
    quantize_with_report,
)
from coreai_opt.coreai_utils.numerics.blockwise import block_shape
from coreai_opt.coreai_utils.passes.palettize import expected_palettize_bytes, plan_palettize
from coreai_opt.coreai_utils.passes.quantize import expected_quantize_bytes, plan_quantize
from tests.calibration.test_tied_and_padding import TiedLM
from tests.helpers import linear_program, run_program
from tests.reference import ref_block_quantize
from tests.torch_models import convert, with_weights

TIED = "@main/w0"


@pytest.fixture(scope="module")
def tied() -> tuple[nn.Module, torch.Tensor, object]:
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 64, (1, 12), dtype=torch.int32)
    return model, ids, convert(model, {"ids": ids}, debug=True)


def test_the_language_model_recipe_in_one_quantize_call(
    tied: tuple[nn.Module, torch.Tensor, object], tmp_path: Path
) -> None:
    """int4 per block everywhere, int8 per channel for the tied embedding / head."""
    model, ids, program = tied
    result = quantize_with_report(
        program,  # type: ignore[arg-type]
        DType.INT4,
        granularity="per_block",
        block_size=16,
        weight_num_threshold=0,
        overrides={"kind:embedding": {"dtype": DType.INT8, "granularity": "per_channel"}},
    )
    rows = {row.id: row for row in result.weights}
    assert rows[TIED].joint == "int8" and rows[TIED].mode == "per_channel"
    assert rows[TIED].kind == "embedding"
    assert all(r.joint == "int4" for key, r in rows.items() if key != TIED and r.mode)

    def expected(name: str, _: nn.Module, w: np.ndarray) -> np.ndarray:
        if name in ("embed", "head"):
            return ref_block_quantize(w, (1, w.shape[1]), "int8", True)
        return ref_block_quantize(w, block_shape(w.shape, "per_block", 0, 1, 16), "int4", True)

    with torch.no_grad():
        want = with_weights(model, expected)(ids).numpy()
    got = run_program(result.program, {"ids": ids.numpy()}, tmp_path / "q.aimodel")["y"]  # type: ignore[arg-type]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_exclude_and_dense_overrides_and_plans(
    tied: tuple[nn.Module, torch.Tensor, object], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, program = tied
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    result = palettize_with_report(
        program,  # type: ignore[arg-type]
        n_bits=2,
        weight_num_threshold=0,
        exclude=["kind:embedding"],
        overrides={"*/Linear$1": {"n_bits": 4, "granularity": "per_channel"}, "nothing*": None},
    )
    rows = {row.id: row for row in result.weights}
    assert rows[TIED].mode is None and rows[TIED].reason == "excluded by kind:embedding"
    mixer = next(r for r in result.weights if r.path.endswith("Linear$1"))
    assert mixer.joint == "palettize4" and mixer.mode == "per_channel"
    assert "pattern 'nothing*' (exclude/overrides) matches no weight" in caplog.text
    plans = plan_palettize(program, n_bits=2, weight_num_threshold=0, exclude=["kind:embedding"])  # type: ignore[arg-type]
    assert [p.mode for p in plans] == [r.mode for r in result.weights if r.id == TIED] + [
        "per_tensor"
    ] * (len(plans) - 1)
    quantized = plan_quantize(program, DType.INT8, weight_num_threshold=0)  # type: ignore[arg-type]
    assert all(p.algorithm == "rtn" for p in quantized)


def test_calibrated_overrides_choose_the_algorithm_per_weight(
    tied: tuple[nn.Module, torch.Tensor, object],
) -> None:
    _, ids, program = tied
    calibration = collect_calibration(program, [{"ids": ids.numpy()}])  # type: ignore[arg-type]
    result = quantize_with_report(
        program,  # type: ignore[arg-type]
        DType.INT4,
        weight_num_threshold=0,
        calibration=calibration,
        overrides={"kind:embedding": {"algorithm": "rtn"}},
    )
    rows = {row.id: row for row in result.weights}
    assert rows[TIED].algorithm == "rtn"
    assert {r.algorithm for key, r in rows.items() if key != TIED} == {"gptq"}


def layer() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((24, 40)).astype(np.float32)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: quantize_weights(p, DType.INT8, algorithm="gptq"), ValueError,
         "algorithm='gptq' needs calibration"),
        (lambda p: quantize_weights(p, DType.INT8, algorithm="obs"), ValueError,
         "algorithm must be None or one of 'rtn', 'gptq'; got 'obs'"),
        (lambda p: palettize_weights(p, algorithm="weighted_kmeans"), ValueError,
         "algorithm='weighted_kmeans' needs calibration"),
        (lambda p: palettize_weights(p, algorithm="gptq"), ValueError,
         "algorithm must be None or one of 'kmeans', 'weighted_kmeans', 'obs'"),
        (lambda p: quantize_weights(p, DType.INT8, overrides={"*": {"n_bits": 4}}), ValueError,
         "overrides['*']: unknown option 'n_bits'; allowed: dtype, qscheme"),
        (lambda p: quantize_weights(p, DType.INT8, overrides={"*": {"dtype": "int3"}}),
         ValueError, "overrides['*']: dtype must be one of"),
        (lambda p: palettize_weights(p, overrides={"*": {"n_bits": 5}}), ValueError,
         "overrides['*']: n_bits must be one of"),
        (lambda p: palettize_weights(p, exclude=["kind:attention"]), ValueError,
         "unknown selector 'kind:attention'"),
        (lambda p: quantize_weights(p, DType.INT8, calibration="cal.npz"), TypeError,
         "calibration must be a Calibration or None"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_before_anything_changes(
    call: object, error: type[Exception], match: str
) -> None:
    program = linear_program(layer())
    before = str(program._module._mlir_module)
    with pytest.raises(error, match=re.escape(match)):
        call(program)  # type: ignore[operator]
    assert str(program._module._mlir_module) == before


def test_a_calibration_of_another_program_is_refused() -> None:
    other = linear_program(np.ones((24, 40), np.float32)[:, :32].copy())
    x = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    calibration = collect_calibration(other, [{"x": x}])
    program = linear_program(layer())
    for call in (
        lambda: quantize_weights(program, DType.INT8, calibration=calibration),
        lambda: palettize_weights(program, calibration=calibration),
    ):
        with pytest.raises(ValueError, match="calibration is from another program"):
            call()


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("quantize", {"dtype": DType.INT4, "granularity": "per_block", "block_size": 16}),
        ("quantize", {"dtype": DType.UINT8, "qscheme": "asymmetric"}),
        ("quantize", {"dtype": DType.FP8_E4M3FN, "granularity": "per_block", "block_size": 8,
                      "scale_dtype": DType.FP8_E8M0FNU}),
        ("quantize", {"dtype": DType.UINT4, "granularity": "per_tensor"}),
        ("palettize", {"n_bits": 3, "granularity": "per_grouped_channel", "group_size": 5}),
        ("palettize", {"n_bits": 4, "enable_per_channel_scale": True, "lut_dtype": DType.INT8}),
        ("palettize", {"n_bits": 2, "cluster_dim": 4, "granularity": "per_channel"}),
    ],
)  # fmt: skip
def test_the_plans_expected_bytes_are_the_stored_bytes(
    kind: str, options: dict[str, object]
) -> None:
    program = linear_program(layer())
    if kind == "quantize":
        (plan,) = plan_quantize(program, weight_num_threshold=0, **options)  # type: ignore[arg-type]
        (row,) = quantize_with_report(program, weight_num_threshold=0, **options).weights  # type: ignore[arg-type]
        assert expected_quantize_bytes(plan) == row.bytes_after
    else:
        (plan,) = plan_palettize(program, weight_num_threshold=0, **options)  # type: ignore[arg-type]
        (row,) = palettize_with_report(program, weight_num_threshold=0, **options).weights  # type: ignore[arg-type]
        assert expected_palettize_bytes(plan) == row.bytes_after
