"""compress_to_size's last check: the plan against the best configurations of one candidate
that fit (uniform, or uniform with weights a step down), run on the Core AI runtime; the
one closest to the dense outputs is kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import (
    DEFAULT_CANDIDATES,
    Weighing,
    apply_choices,
    check_plan,
    compress_to_size_with_report,
    plan_to_size,
    weigh_candidates,
)
from coreai_opt.coreai_utils.passes.auto.check import CHECK_SAMPLES, rivals, run_check
from coreai_opt.coreai_utils.runtime import run_asset
from tests.passes.auto_model import IDS, module_of, tiny_calibration, tiny_transformer

SAMPLES = [{"ids": ids} for ids in IDS[:8]]


def _weighing() -> Weighing:
    return weigh_candidates(
        tiny_transformer(), calibration=tiny_calibration(), probes=0, weight_num_threshold=0
    )


def _output_error(choices: dict[str, str], tmp_path: Path) -> float:
    """The measured check's error, computed apart: the configuration applied by the passes,
    run on the first CHECK_SAMPLES samples, mean squared difference from the dense outputs."""
    program = apply_choices(
        tiny_transformer(), choices, calibration=tiny_calibration(), weight_num_threshold=0
    ).program
    dense_path, path = tmp_path / "dense.aimodel", tmp_path / "mix.aimodel"
    tiny_transformer().save_asset(dense_path)  # type: ignore[attr-defined]
    program.save_asset(path)
    total = 0.0
    for sample in SAMPLES[:CHECK_SAMPLES]:
        dense, got = run_asset(dense_path, sample), run_asset(path, sample)
        for name, value in dense.items():
            total += float(np.mean((got[name].astype(np.float64) - value) ** 2))
    return total / CHECK_SAMPLES


@pytest.mark.parametrize("ratio", [6, 8])  # 8: both rivals are stepped down to fit
def test_the_check_runs_each_configuration_and_keeps_the_closest(
    tmp_path: Path, ratio: float
) -> None:
    transformer, weighing = tiny_transformer(), _weighing()
    before = str(module_of(transformer))
    plan = weighing.plan(target_ratio=ratio)
    checked = check_plan(transformer, weighing, plan, SAMPLES, function="main")
    assert str(module_of(transformer)) == before  # the runs use a private copy
    names = [run.name for run in checked.checked]
    expected = ["plan", *(name for name, _ in rivals(weighing, plan, 2))]
    assert names == expected and len(names) == 3
    configurations = {"plan": plan, **dict(rivals(weighing, plan, 2))}
    for run in checked.checked:
        configuration = configurations[run.name]
        assert run.total_bytes == configuration.total_bytes <= plan.budget
        alone = _output_error(configuration.choices, tmp_path)
        assert run.error == pytest.approx(alone, rel=1e-6)
    best = min(checked.checked, key=lambda run: run.error)
    assert checked.kept == best.name
    assert checked.choices == configurations[best.name].choices
    assert checked.budget == plan.budget and checked.total_bytes <= plan.budget


def test_a_configuration_measured_closer_replaces_the_plan_and_a_tie_keeps_it() -> None:
    weighing = _weighing()
    plan = weighing.plan(target_ratio=6)
    two = rivals(weighing, plan, 2)

    def measured(*errors: float) -> object:
        values = iter(errors)
        return lambda replaced: next(values)

    kept = run_check(weighing, plan, measured(2.0, 1.0, 3.0), 2)
    assert kept.kept == two[0][0] and kept.choices == two[0][1].choices
    assert [run.error for run in kept.checked] == [2.0, 1.0, 3.0]
    kept = run_check(weighing, plan, measured(1.0, 1.0, 0.5), 2)
    assert kept.kept == two[1][0]
    kept = run_check(weighing, plan, measured(1.0, 1.0, 2.0), 2)
    assert kept.kept == "plan" and kept.choices == plan.choices


def test_rivals_fit_the_budget_rank_by_estimate_and_are_not_the_plan() -> None:
    weighing = _weighing()
    for ratio in (3, 4.5, 6, 8):
        plan = weighing.plan(target_ratio=ratio)
        every = rivals(weighing, plan, 100)
        assert every, ratio
        assert all(u.total_bytes <= plan.budget for _, u in every)
        assert all(u.choices != plan.choices for _, u in every)
        estimates = [u.total_error for _, u in every]
        assert estimates == sorted(estimates)
        assert rivals(weighing, plan, 1) == every[:1]
        assert rivals(weighing, plan, 0) == []
    plan = weighing.plan(target_ratio=8)
    stepped = [(name, u) for name, u in rivals(weighing, plan, 100) if "step down" in name]
    assert len(stepped) >= 2
    for name, rival in stepped:
        candidate = name.split(",")[0].removeprefix("uniform ")
        uniform = weighing.uniform_plan(candidate, plan.budget)
        assert uniform.total_bytes > plan.budget >= rival.total_bytes
        pairs = zip(uniform.weights, rival.weights, strict=True)
        moved = [(u, r) for u, r in pairs if u.choice != r.choice]
        plural = "" if len(moved) == 1 else "s"
        assert name == f"uniform {candidate}, {len(moved)} weight{plural} a step down"
        assert all(r.bytes < u.bytes for u, r in moved)
    names = [r.candidate.name for r in weighing.resolved]
    for budget in (weighing.uniform_plan(name, 0).total_bytes for name in names):
        plan = weighing.plan(budget)  # at each uniform size: uniform ones keep their names
        uniform = {
            name: u.choices
            for name in names
            if (u := weighing.uniform_plan(name, budget)).total_bytes <= budget
        }
        every = rivals(weighing, plan, 100)
        assert len({str(r.choices) for _, r in every}) == len(every)
        for name, rival in every:
            if "step down" in name:
                assert rival.choices not in uniform.values(), name
            else:
                assert uniform[name.removeprefix("uniform ")] == rival.choices
    tightest = weighing.plan(target_bytes=weighing.smallest_bytes)
    assert rivals(weighing, tightest, 2) == []
    unchecked = check_plan(tiny_transformer(), weighing, tightest, SAMPLES)
    assert unchecked is tightest and unchecked.checked == () and unchecked.kept == "plan"


def test_a_stepped_configuration_equal_to_a_uniform_one_goes_by_its_name() -> None:
    # two candidates in this order: "wide" a little larger than int4 on every weight, so
    # "wide" a step down on every weight is uniform int4, which fits at int4's size
    chosen = [c for c in DEFAULT_CANDIDATES if c.name in ("int4-block32", "int4")]
    weighing = weigh_candidates(
        tiny_transformer(),
        calibration=tiny_calibration(),
        candidates=chosen,
        probes=0,
        weight_num_threshold=0,
    )
    weights = []
    for w in weighing.weights:
        small = next(o for o in w.options if o.name == "int4")
        wide = replace(small, name="int4-block32", bytes=small.bytes + 64, error=small.error / 2)
        options = tuple(wide if o.name == "int4-block32" else o for o in w.options)
        weights.append(replace(w, options=options))
    weighing = replace(weighing, weights=tuple(weights))
    uniform = weighing.uniform_plan("int4", 0)
    stepped = weighing.stepped_plan("int4-block32", uniform.total_bytes)
    assert stepped is not None and stepped.choices == uniform.choices
    plan = replace(weighing.plan(uniform.total_bytes), weights=())  # a plan that is neither
    named = {name: rival.choices for name, rival in rivals(weighing, plan, 100)}
    assert named == {"uniform int4": uniform.choices}


def test_compress_to_size_checks_with_samples_unless_told_not_to() -> None:
    transformer, calibration = tiny_transformer(), tiny_calibration()
    kwargs = {"calibration": calibration, "weight_num_threshold": 0, "probes": 0}
    result = compress_to_size_with_report(transformer, target_ratio=6, samples=SAMPLES, **kwargs)
    assert result.plan.checked[0].name == "plan"
    assert len(result.plan.checked) == 3
    applied = sum(outcome.bytes_after for outcome in result.weights)
    assert applied == result.plan.total_bytes <= result.plan.budget
    assert {row.site.id: row.choice for row in result.plan.weights} == result.plan.choices
    for unchecked in (
        plan_to_size(transformer, target_ratio=6, samples=SAMPLES, check_uniform=0, **kwargs),
        plan_to_size(transformer, target_ratio=6, **kwargs),
    ):
        assert unchecked.checked == () and unchecked.kept == "plan"


def test_check_samples_are_what_the_check_runs(tmp_path: Path) -> None:
    transformer, calibration = tiny_transformer(), tiny_calibration()
    held_out = [{"ids": ids} for ids in IDS[9:]]  # not in the calibration
    kwargs = {"calibration": calibration, "weight_num_threshold": 0, "probes": 0}
    plan = plan_to_size(
        transformer, target_ratio=6, samples=SAMPLES, check_samples=held_out, **kwargs
    )
    weighing = _weighing()
    again = check_plan(transformer, weighing, weighing.plan(target_ratio=6), held_out)
    assert [(r.name, r.error) for r in plan.checked] == [(r.name, r.error) for r in again.checked]
    on_calibration = check_plan(transformer, weighing, weighing.plan(target_ratio=6), SAMPLES)
    assert [r.error for r in on_calibration.checked] != [r.error for r in again.checked]
    # without samples for the weighing, the check still runs on its own ones
    alone = plan_to_size(transformer, target_ratio=6, check_samples=held_out, **kwargs)
    assert [r.name for r in alone.checked][:1] == ["plan"]


def test_check_samples_that_do_not_fit_are_refused_before_the_weighing() -> None:
    wrong = [{"ids": IDS[0].astype(np.int64)}]
    with pytest.raises(ValueError, match="ids"):
        plan_to_size(tiny_transformer(), target_ratio=4, check_samples=wrong)
    with pytest.raises(ValueError, match="missing input 'ids'"):
        plan_to_size(tiny_transformer(), target_ratio=4, check_samples=[{"x": IDS[0]}])


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [(-1, ValueError, "check_uniform must be 0"), ("2", TypeError, "check_uniform must be an int")],
)
def test_bad_check_uniform_is_refused(value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        plan_to_size(tiny_transformer(), target_ratio=4, samples=SAMPLES, check_uniform=value)
    weighing = _weighing()
    plan = weighing.plan(target_ratio=4)
    with pytest.raises(error, match=message):
        check_plan(tiny_transformer(), weighing, plan, SAMPLES, check_uniform=value)
