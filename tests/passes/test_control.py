"""exclude and overrides: which weights get what, checked on the Core AI runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coreai_opt.coreai_utils import collect_calibration, sparsify_with_report
from coreai_opt.coreai_utils.passes import outcomes
from coreai_opt.coreai_utils.passes.sparsify import plan_sparsify
from tests.helpers import run_program
from tests.reference import ref_magnitude, ref_nm
from tests.torch_models import TinyTransformer, convert, with_weights

THRESHOLD = 512
# TinyTransformer's linears in call order: q k v o up down lm_head
LINEARS = ("q", "k", "v", "o", "up", "down", "lm_head")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer().eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(
        0, 64, (2, 8), dtype=torch.int32, generator=torch.Generator().manual_seed(1)
    )


@pytest.fixture(scope="module")
def program(model: nn.Module, ids: torch.Tensor) -> object:
    return convert(model, {"ids": ids}, debug=True)


def path_of(name: str) -> str:
    if name == "embed":
        return "TinyTransformer$1/Embedding$1"
    return f"TinyTransformer$1/Linear${LINEARS.index(name) + 1}"


def check_runtime(
    result: object, model: nn.Module, ids: torch.Tensor, prune: dict[str, object], path: Path
) -> None:
    """The compressed program's output equals torch's with the expected pruned weights."""

    def transform(name: str, _: nn.Module, w: np.ndarray) -> np.ndarray:
        rule = prune.get(name)
        if rule is None:
            return w
        if isinstance(rule, tuple):
            return ref_nm(w, *rule, axis=1)
        return ref_magnitude(w, float(rule))  # type: ignore[arg-type]

    expected = with_weights(model, transform)
    with torch.no_grad():
        want = expected(ids).numpy()
    got = run_program(result.program, {"ids": ids.numpy()}, path)["y"]  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_embedding_dense_attention_30_mlp_60(
    program: object, model: nn.Module, ids: torch.Tensor, asset_path: Path
) -> None:
    result = sparsify_with_report(
        program,  # type: ignore[arg-type]
        weight_num_threshold=THRESHOLD,
        overrides={
            "kind:embedding": None,
            "*/Linear$[1234]": {"target_sparsity": 0.3},
            "*/Linear$[56]": {"target_sparsity": 0.6},
        },
    )
    rows = {r.path: r for r in result.weights}
    assert rows[path_of("embed")].mode is None
    assert rows[path_of("embed")].reason == "left dense by override kind:embedding"
    got = [rows[path_of(n)].sparsity for n in LINEARS]
    assert got == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.5], abs=1e-3)
    prune = {n: 0.3 for n in ("q", "k", "v", "o")} | {"up": 0.6, "down": 0.6, "lm_head": 0.5}
    check_runtime(result, model, ids, prune, asset_path)


def test_first_matching_override_wins_and_exclude_wins_over_all(
    program: object, model: nn.Module, ids: torch.Tensor, asset_path: Path
) -> None:
    result = sparsify_with_report(
        program,  # type: ignore[arg-type]
        weight_num_threshold=THRESHOLD,
        exclude="*/Linear$7",
        overrides={
            "*/Linear*": {"target_sparsity": 0.25},
            "*/Linear$1": {"target_sparsity": 0.9},
            "kind:linear": None,
        },
    )
    rows = {r.path: r for r in result.weights}
    assert rows[path_of("q")].sparsity == 0.25
    assert rows[path_of("lm_head")].reason == "excluded by */Linear$7"
    assert rows[path_of("embed")].sparsity == 0.5  # no override matches: the call's options
    prune = {n: 0.25 for n in LINEARS[:-1]} | {"embed": 0.5}
    check_runtime(result, model, ids, prune, asset_path)


def test_patterns_match_ids_too_and_exclusive_options_are_replaced(
    program: object, model: nn.Module, ids: torch.Tensor, asset_path: Path
) -> None:
    result = sparsify_with_report(
        program,  # type: ignore[arg-type]
        weight_num_threshold=THRESHOLD,
        palettize_nbits=None,
        overrides={"@main/w[1-6]": {"n_m_ratio": (2, 4)}},  # clears target_sparsity
    )
    rows = {r.id: r for r in result.weights}
    modes = [rows[f"@main/w{k}"].mode for k in range(8)]
    assert modes == ["unstructured"] + ["n:m"] * 6 + ["unstructured"]
    prune = {n: (2, 4) for n in LINEARS[:-1]} | {"embed": 0.5, "lm_head": 0.5}
    check_runtime(result, model, ids, prune, asset_path)


def test_override_joint_storage(program: object) -> None:
    result = sparsify_with_report(
        program,  # type: ignore[arg-type]
        weight_num_threshold=THRESHOLD,
        palettize_nbits=4,
        overrides={"*/Linear$7": {"quantize_dtype": "int8"}},  # clears palettize_nbits
    )
    joints = {r.path: r.joint for r in result.weights}
    assert joints[path_of("lm_head")] == "int8" and joints[path_of("q")] == "palettize4"


def test_override_algorithm_with_calibration(program: object, ids: torch.Tensor) -> None:
    calibration = collect_calibration(program, [{"ids": ids.numpy()}])  # type: ignore[arg-type]
    result = sparsify_with_report(
        program,  # type: ignore[arg-type]
        weight_num_threshold=THRESHOLD,
        calibration=calibration,
        overrides={
            "*/Linear$7": {"algorithm": "sparsegpt"},
            "*/Linear$1": {"algorithm": "magnitude"},
        },
    )
    algorithms = {r.path: r.algorithm for r in result.weights}
    assert algorithms[path_of("lm_head")] == "sparsegpt"
    assert algorithms[path_of("q")] == "magnitude"
    assert algorithms[path_of("k")] == "wanda"


def test_unmatched_pattern_warns(program: object, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    sparsify_with_report(
        program,  # type: ignore[arg-type]
        exclude=["*Attention*"],
        overrides={"kind:conv": None},
    )
    assert "pattern '*Attention*' (exclude/overrides) matches no weight" in caplog.text
    assert "pattern 'kind:conv'" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"overrides": {"*": {"target_sparsity": 2}}},
            ValueError,
            r"overrides\['\*'\]: target_sparsity must be in \[0, 1\]",
        ),
        (
            {"overrides": {"*": {"n_m_ratio": (5, 4)}}},
            ValueError,
            r"overrides\['\*'\]: n_m_ratio needs n in \[0, m\]",
        ),
        (
            {"overrides": {"*": {"sparsity": 0.5}}},
            ValueError,
            r"overrides\['\*'\]: unknown option 'sparsity'",
        ),
        (
            {"overrides": {"*": {"algorithm": "wanda"}}},
            ValueError,
            r"overrides\['\*'\]: algorithm='wanda' needs calibration",
        ),
        (
            {"overrides": {"*": {"quantize_dtype": "int4"}}},
            ValueError,
            r"overrides\['\*'\]: quantize_dtype must be",
        ),
        (
            {"overrides": {"*": 0.5}},
            TypeError,
            r"overrides\['\*'\] must be a mapping of options or None",
        ),
        ({"overrides": ["*"]}, TypeError, "overrides must be a mapping"),
        ({"overrides": {3: None}}, TypeError, "overrides key must be a non-empty string pattern"),
        ({"overrides": {"kind:attention": None}}, ValueError, "unknown selector 'kind:attention'"),
        ({"exclude": 5}, TypeError, "exclude must be an iterable of patterns"),
        ({"exclude": [""]}, TypeError, "exclude pattern must be a non-empty string"),
    ],
)
def test_bad_control_arguments(
    program: object, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    before = str(program._module._mlir_module)  # type: ignore[attr-defined]
    with pytest.raises(error, match=match):
        sparsify_with_report(program, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        plan_sparsify(program, **kwargs)  # type: ignore[arg-type]
    assert str(program._module._mlir_module) == before  # type: ignore[attr-defined]


def test_plan_reads_no_weight_data(program: object, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(*_: object) -> None:
        raise AssertionError("plan_sparsify read a weight")

    expected = sparsify_with_report(
        program,
        weight_num_threshold=THRESHOLD,
        overrides={"kind:embedding": None},  # type: ignore[arg-type]
    )
    monkeypatch.setattr(outcomes, "read_constant", no_reading)
    plans = plan_sparsify(
        program,
        weight_num_threshold=THRESHOLD,
        overrides={"kind:embedding": None},  # type: ignore[arg-type]
    )
    assert [p.mode.value if p.mode else None for p in plans] == [r.mode for r in expected.weights]
    assert [p.rule for p in plans][:2] == ["kind:embedding", None]
