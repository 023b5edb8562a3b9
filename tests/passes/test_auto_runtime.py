"""compress_to_size: within the budget to the byte, each weight exactly as its own pass
compresses it, run on the Core AI runtime; the errors, raised before anything is touched."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import (
    DEFAULT_CANDIDATES,
    Candidate,
    apply_choices,
    apply_plan,
    compress_to_size,
    compress_to_size_with_report,
    palettize_weights,
    plan_to_size,
    quantize_weights,
    sparsify_weights,
    weigh_candidates,
)
from coreai_opt.coreai_utils.ir.weights import find_weights
from tests.helpers import run_program
from tests.passes.auto_model import IDS, module_of, tiny_calibration, tiny_transformer
from tests.torch_models import MLP, convert

# the default ladder and 2:4 pruning, which an embedding table read by gather_nd cannot take
WITH_2_4 = (
    *DEFAULT_CANDIDATES,
    Candidate("2:4+int8", "sparsify", {"n_m_ratio": (2, 4), "quantize_dtype": "int8"}),
)


@pytest.fixture
def transformer() -> object:
    return tiny_transformer()


@pytest.fixture
def calibration() -> object:
    return tiny_calibration()


_module = module_of


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_fits_the_budget_exactly_and_runs(
    transformer: object, calibration: object, tmp_path: Path
) -> None:
    before = str(_module(transformer))
    result = compress_to_size_with_report(
        transformer, target_ratio=4.0, calibration=calibration, weight_num_threshold=0
    )
    plan = result.plan
    assert str(_module(transformer)) == before  # in_place=False leaves the input alone
    assert plan.budget == plan.dense_bytes // 4
    assert plan.total_bytes <= plan.budget
    assert sum(o.bytes_after for o in result.weights) == plan.total_bytes
    assert [o.id for o in result.weights] == [w.site.id for w in plan.weights]
    assert len({w.choice for w in plan.weights}) > 1  # a mix, not one configuration
    dense = run_program(transformer, {"ids": IDS[9]}, tmp_path / "dense.aimodel")["y"]
    small = run_program(result.program, {"ids": IDS[9]}, tmp_path / "auto.aimodel")["y"]
    assert _cosine(dense, small) > 0.95


def test_more_bytes_never_cost_accuracy(transformer: object, calibration: object) -> None:
    errors = [
        plan_to_size(
            transformer, target_ratio=ratio, calibration=calibration, weight_num_threshold=0
        ).total_error
        for ratio in (8.0, 6.0, 4.0, 2.0, 1.0)
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] == 0.0


def test_never_worse_than_one_candidate_for_all(transformer: object, calibration: object) -> None:
    candidates = [
        Candidate("int4", "quantize", {"dtype": "int4"}),
        Candidate("pal4", "palettize", {"n_bits": 4}),
        Candidate("int8", "quantize", {"dtype": "int8"}),
    ]
    uniform = plan_to_size(
        transformer,
        target_ratio=1.0,
        calibration=calibration,
        candidates=candidates[:1],
        weight_num_threshold=0,
    )
    size = sum(dict((n, b) for n, b, _ in w.weighed)["int4"] for w in uniform.weights)
    errors = sum(dict((n, e) for n, _, e in w.weighed)["int4"] for w in uniform.weights)
    mixed = plan_to_size(
        transformer,
        size,
        calibration=calibration,
        candidates=candidates,
        weight_num_threshold=0,
    )
    assert mixed.total_bytes <= size and mixed.total_error <= errors


def test_each_weight_is_what_its_own_pass_makes(tmp_path: Path) -> None:
    torch.manual_seed(1)
    program = convert(MLP().eval(), {"x": torch.zeros(1, 24)}, debug=True)
    paths = [site.path for site in find_weights(_module(program))]
    candidates = [
        Candidate("half", "sparsify", {"target_sparsity": 0.5}),
        Candidate("int8", "quantize", {"dtype": "int8"}),
        Candidate("pal4", "palettize", {"n_bits": 4, "granularity": "per_channel"}),
    ]
    result = compress_to_size_with_report(
        program, target_ratio=3.0, candidates=candidates, weight_num_threshold=0
    )
    chosen = {w.site.path: w.choice for w in result.plan.weights}
    assert set(chosen.values()) <= {"half", "int8", "pal4", "dense"}

    def others(name: str) -> list[str]:
        return [p for p in paths if chosen[p] != name]

    expected = sparsify_weights(program, exclude=others("half"), weight_num_threshold=0)
    expected = quantize_weights(
        expected, "int8", exclude=others("int8"), weight_num_threshold=0, in_place=True
    )
    expected = palettize_weights(
        expected,
        n_bits=4,
        granularity="per_channel",
        exclude=others("pal4"),
        weight_num_threshold=0,
        in_place=True,
    )
    x = {"x": np.random.default_rng(2).standard_normal((1, 24)).astype(np.float32)}
    got = run_program(result.program, x, tmp_path / "auto.aimodel")["y"]
    want = run_program(expected, x, tmp_path / "passes.aimodel")["y"]
    assert np.array_equal(got, want)


def test_skipped_candidates_and_excluded_weights_are_reported(
    transformer: object, calibration: object
) -> None:
    plan = plan_to_size(
        transformer,
        target_ratio=2.0,
        calibration=calibration,
        candidates=WITH_2_4,
        exclude=["*/Linear$7"],
        weight_num_threshold=0,
    )
    rows = {w.site.path: w for w in plan.weights}
    table = rows["TinyTransformer$1/Embedding$1"]
    assert dict(table.skipped)["2:4+int8"].startswith("n:m applies to linear and conv")
    head = rows["TinyTransformer$1/Linear$7"]
    assert head.choice == "dense" and head.fixed == "excluded by */Linear$7"
    assert plan.sensitivity == "proxy"


def test_without_calibration_the_error_is_data_free_with_a_warning(
    transformer: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="coreai_opt"):
        plan = plan_to_size(transformer, target_ratio=3.0, weight_num_threshold=0)
    assert plan.sensitivity == "proxy (data-free)" and plan.total_bytes <= plan.budget
    assert "uncorrelated with unit variance" in caplog.text


def test_in_place(transformer: object) -> None:
    program = copy.deepcopy(transformer)
    out = compress_to_size(program, target_ratio=2.0, weight_num_threshold=0, in_place=True)
    assert out is program


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "exactly one of target_bytes and target_ratio"),
        ({"target_bytes": 10, "target_ratio": 2.0}, ValueError, "exactly one"),
        ({"target_bytes": 0}, ValueError, "more than 0 bytes"),
        ({"target_bytes": -5}, ValueError, "more than 0 bytes"),
        ({"target_bytes": 1.5}, TypeError, "target_bytes must be an int"),
        ({"target_bytes": 10**9}, ValueError, "larger than the"),
        ({"target_ratio": 0.5}, ValueError, "larger than the"),
        ({"target_ratio": 0.0}, ValueError, "positive finite"),
        ({"target_ratio": float("nan")}, ValueError, "positive finite"),
        ({"target_ratio": "2"}, TypeError, "target_ratio must be a real number"),
        ({"target_ratio": 1000.0}, ValueError, r"cannot be reached: the smallest size"),
        ({"target_ratio": 2.0, "candidates": []}, ValueError, "candidates is empty"),
        ({"target_ratio": 2.0, "candidates": "int8"}, TypeError, "iterable of Candidate"),
        (
            {"target_ratio": 2.0, "candidates": [Candidate("x", "prune")]},
            ValueError,
            "candidate 'x': unknown method 'prune'",
        ),
        (
            {"target_ratio": 2.0, "candidates": [Candidate("x", "quantize", {"bits": 4})]},
            ValueError,
            "candidate 'x': quantize: unknown option 'bits'",
        ),
        (
            {"target_ratio": 2.0, "candidates": [Candidate("x", "quantize", {"dtype": "int3"})]},
            ValueError,
            "candidate 'x'",
        ),
        (
            {"target_ratio": 2.0, "candidates": [Candidate("x", "quantize")]},
            ValueError,
            "candidate 'x': quantize: option 'dtype' must be set",
        ),
        (
            {
                "target_ratio": 2.0,
                "candidates": [Candidate("x", "palettize"), Candidate("x", "palettize")],
            },
            ValueError,
            "candidate 'x' appears twice",
        ),
        (
            {
                "target_ratio": 2.0,
                "candidates": [Candidate("x", "palettize", {"weight_num_threshold": 0})],
            },
            ValueError,
            "weight_num_threshold is the call's",
        ),
        (
            {"target_ratio": 2.0, "candidates": [Candidate("x", "palettize", match="kind:fc")]},
            ValueError,
            "unknown selector 'kind:fc'",
        ),
        ({"target_ratio": 2.0, "sensitivity": "magic"}, ValueError, "sensitivity must be"),
        ({"target_ratio": 2.0, "exclude": [""]}, TypeError, "non-empty string pattern"),
        ({"target_ratio": 2.0, "weight_num_threshold": -1}, ValueError, "weight_num_threshold"),
        ({"target_ratio": 2.0, "in_place": "yes"}, TypeError, "in_place must be a bool"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    transformer: object, kwargs: dict[str, object], error: type, message: str
) -> None:
    before = str(_module(transformer))
    with pytest.raises(error, match=message):
        compress_to_size(
            transformer, weight_num_threshold=kwargs.pop("weight_num_threshold", 0), **kwargs
        )  # type: ignore[arg-type]
    assert str(_module(transformer)) == before


def test_a_program_is_required() -> None:
    with pytest.raises(TypeError, match="AIProgram"):
        compress_to_size(object(), target_ratio=2.0)  # type: ignore[arg-type]


def test_one_weighing_serves_every_budget_and_choices_apply_again(
    transformer: object, calibration: object, tmp_path: Path
) -> None:
    weighing = weigh_candidates(transformer, calibration=calibration, weight_num_threshold=0)
    plan = weighing.plan(target_ratio=5.0)
    again = plan_to_size(
        transformer, target_ratio=5.0, calibration=calibration, weight_num_threshold=0
    )
    assert plan.choices == again.choices and plan.total_bytes == again.total_bytes
    assert weighing.plan(weighing.smallest_bytes).total_bytes == weighing.smallest_bytes
    applied = apply_plan(transformer, plan)
    replayed = apply_choices(
        transformer, plan.choices, calibration=calibration, weight_num_threshold=0
    )
    assert replayed.plan.total_bytes == plan.total_bytes == applied.plan.total_bytes
    assert replayed.plan.choices == plan.choices
    ids = {"ids": IDS[10]}
    first = run_program(applied.program, ids, tmp_path / "plan.aimodel")["y"]
    second = run_program(replayed.program, ids, tmp_path / "choices.aimodel")["y"]
    assert np.array_equal(first, second)


def test_a_plan_or_choices_that_do_not_fit_the_program_are_refused(
    transformer: object, calibration: object
) -> None:
    plan = plan_to_size(transformer, target_ratio=3.0, calibration=calibration)
    applied = apply_plan(transformer, plan)
    with pytest.raises(ValueError, match="the plan is for another program"):
        apply_plan(applied.program, plan)
    with pytest.raises(ValueError, match="no weight '@main/w99'"):
        apply_choices(transformer, {"@main/w99": "int8"})
    with pytest.raises(ValueError, match="unknown candidate 'int9'"):
        apply_choices(transformer, {"@main/w0": "int9"})
    with pytest.raises(ValueError, match="2:4\\+int8 does not apply: n:m applies to linear"):
        apply_choices(
            transformer, {"@main/w0": "2:4+int8"}, candidates=WITH_2_4, weight_num_threshold=0
        )
