"""Step 3 of ``compress_to_size``: the program compressed as a plan (or kept choices) says."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from coreai._compiler.ir import Module
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.passes.auto.candidates import (
    DEFAULT_CANDIDATES,
    Candidate,
    Resolved,
    resolve_candidates,
)
from coreai_opt.coreai_utils.passes.auto.plan import SizePlan, WeightChoice
from coreai_opt.coreai_utils.passes.auto.sensitivity import DENSE, Option
from coreai_opt.coreai_utils.passes.calibrated import check_calibration
from coreai_opt.coreai_utils.passes.options import check_threshold
from coreai_opt.coreai_utils.passes.outcomes import WeightOutcome, below_threshold, check_program
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded, run_weight_pass

__all__ = ["Progress", "SizeResult", "apply_choices", "apply_plan", "check_in_place", "module_of"]

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: ``weighing`` (one step per weight), ``probing`` (one per
runtime run), ``checking`` (one per configuration run), then ``compressing``."""


@dataclass(frozen=True)
class SizeResult:
    """The compressed program, one outcome per candidate weight (as the passes report them,
    ``weights``), and the plan it followed."""

    program: AIProgram
    weights: tuple[WeightOutcome, ...]
    plan: SizePlan


def apply_plan(
    coreai_program: AIProgram,
    plan: SizePlan,
    *,
    in_place: bool = False,
    on_progress: Progress | None = None,
) -> SizeResult:
    """Step 3 of :func:`compress_to_size`: compress ``coreai_program`` (the weighed program,
    or an unchanged copy) as ``plan`` says. ``ValueError`` when its weights are not the
    plan's (another program, or one already compressed)."""
    check_program(coreai_program)
    check_in_place(in_place)
    chosen = {row.site.id: row for row in plan.weights}
    _check_same_weights(coreai_program, {i: row.site for i, row in chosen.items()})

    def decide(program: AIProgram) -> list[Decision]:
        decisions = []
        for site in find_weights(module_of(program)):
            row = chosen[site.id]
            decision = row.option.decision
            if decision is None:
                decisions.append(Decision(site, None, row.fixed or f"chosen: {DENSE}"))
            else:  # the weighed decision, on this program's constant
                decisions.append(replace(decision, site=site))
        return decisions

    def encode(weight: np.ndarray, decision: Decision) -> Encoded:
        resolved = chosen[decision.site.id].option.resolved
        if resolved is None:  # unreachable: dense weights are not encoded
            msg = "a dense choice has nothing to encode"
            raise ValueError(msg)
        return resolved.method.encode(weight, decision)

    def on_weight(done: int, total: int, _: object) -> None:
        if on_progress is not None:
            on_progress("compressing", done, total)

    result = run_weight_pass(
        coreai_program, in_place=in_place, decide=decide, encode=encode, on_weight=on_weight
    )
    return SizeResult(result.program, result.weights, plan)


def apply_choices(
    coreai_program: AIProgram,
    choices: Mapping[str, str],
    *,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    weight_num_threshold: int = 1024,
    in_place: bool = False,
    on_progress: Progress | None = None,
) -> SizeResult:
    """Compress ``coreai_program`` with the configuration ``choices`` names for each weight
    (weight id -> candidate name or ``dense``; a plan's :attr:`SizePlan.choices`, or a
    report's), without weighing: the weights' passes decide and compress as in
    :func:`apply_plan` (the same numbers, given the same calibration and candidates). The
    returned plan has the actual bytes and no error estimates (0). Weights not named stay
    dense, and so do those below ``weight_num_threshold`` (whatever they are given).
    ``ValueError`` for an unknown weight id or candidate name, or a candidate that does not
    apply to its weight."""
    check_program(coreai_program)
    check_in_place(in_place)
    sites = find_weights(module_of(coreai_program))
    check_calibration(calibration, sites)
    threshold = check_threshold(weight_num_threshold)
    resolved = resolve_candidates(
        candidates, calibrated=calibration is not None, weight_num_threshold=threshold
    )
    by_name = {r.candidate.name: r for r in resolved}
    known = {site.id for site in sites}
    for weight_id, name in choices.items():
        if weight_id not in known:
            msg = f"choices: no weight {weight_id!r} in this program"
            raise ValueError(msg)
        if name != DENSE and name not in by_name:
            msg = f"choices[{weight_id!r}]: unknown candidate {name!r}"
            raise ValueError(msg)
    rows = [
        _chosen(site, choices.get(site.id, DENSE), by_name, calibration, threshold)
        for site in sites
    ]
    dense = sum(site.nbytes for site in sites)
    provisional = SizePlan(tuple(rows), dense, 0, dense, 0, 0.0, "none (applied choices)", resolved)
    result = apply_plan(coreai_program, provisional, in_place=in_place, on_progress=on_progress)
    actual = tuple(
        replace(row, bytes=outcome.bytes_after)
        for row, outcome in zip(rows, result.weights, strict=True)
    )
    total = sum(row.bytes for row in actual)
    plan = replace(provisional, weights=actual, budget=total, total_bytes=total)
    return SizeResult(result.program, result.weights, plan)


def _chosen(
    site: WeightSite,
    name: str,
    by_name: Mapping[str, Resolved],
    calibration: Calibration | None,
    threshold: int,
) -> WeightChoice:
    """The plan row for ``site`` compressed with candidate ``name`` (bytes filled in once
    applied); ``ValueError`` when the candidate does not apply to the weight."""
    before = site.nbytes
    option = Option(DENSE, before, 0.0)
    small = below_threshold(site, threshold)
    if small is not None:
        return WeightChoice(site, DENSE, before, 0.0, before, (), (), small, option)
    if name != DENSE:
        resolved = by_name[name]
        decision = resolved.method.decide(site, resolved.options, calibration)
        if decision.mode is None:
            msg = f"choices[{site.id!r}]: {name} does not apply: {decision.reason}"
            raise ValueError(msg)
        option = Option(name, before, 0.0, resolved, replace(decision, options=resolved.options))
    return WeightChoice(site, name, before, 0.0, before, (), (), None, option)


def _check_same_weights(program: AIProgram, planned: Mapping[str, WeightSite]) -> None:
    sites = find_weights(module_of(program))
    here = {site.id: site.shape for site in sites}
    there = {weight_id: site.shape for weight_id, site in planned.items()}
    if here != there:
        msg = (
            "the plan is for another program: its weights (ids and shapes) differ from this "
            "program's (apply it to the program it was weighed on, or an unchanged copy)"
        )
        raise ValueError(msg)


def check_in_place(in_place: object) -> None:
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)


def module_of(program: AIProgram) -> Module:
    return program._module._mlir_module  # noqa: SLF001
