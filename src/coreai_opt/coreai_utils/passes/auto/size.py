"""``compress_to_size``: the most accurate per-weight mix of the passes within a byte budget.

Three steps, each public: :func:`weigh_candidates` (every weight under every candidate:
exact bytes and an estimated error; the slow one), :meth:`Weighing.plan` (the allocation for
a budget; instant) and :func:`apply_plan` (the program compressed as planned).
:func:`compress_to_size` does all three; :func:`apply_choices` applies an allocation kept
from an earlier plan or report without weighing again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from coreai._compiler.ir import Module
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import ArgumentTypeError
from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.passes.auto.candidates import (
    DEFAULT_CANDIDATES,
    Candidate,
    Resolved,
    resolve_candidates,
)
from coreai_opt.coreai_utils.passes.auto.measured import MeasuredError
from coreai_opt.coreai_utils.passes.auto.plan import SizePlan, Weighing, WeightChoice
from coreai_opt.coreai_utils.passes.auto.sensitivity import DENSE, Option, weigh
from coreai_opt.coreai_utils.passes.calibrated import check_calibration
from coreai_opt.coreai_utils.passes.control import check_pattern, matches
from coreai_opt.coreai_utils.passes.options import check_threshold
from coreai_opt.coreai_utils.passes.outcomes import WeightOutcome, below_threshold, check_program
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded, run_weight_pass

__all__ = [
    "SENSITIVITIES",
    "SizeResult",
    "apply_choices",
    "apply_plan",
    "compress_to_size",
    "compress_to_size_with_report",
    "plan_to_size",
    "weigh_candidates",
]

SENSITIVITIES = ("proxy", "measured")
"""How each weight's error is estimated: from the calibration statistics
(``passes/auto/sensitivity.py``) or on the runtime (``passes/auto/measured.py``)."""

_log = logging.getLogger("coreai_opt.coreai_utils.passes")

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: ``weighing`` (one step per weight) then ``compressing``."""


@dataclass(frozen=True)
class SizeResult:
    """The compressed program, one outcome per candidate weight (as the passes report them,
    ``weights``), and the plan it followed."""

    program: AIProgram
    weights: tuple[WeightOutcome, ...]
    plan: SizePlan


def compress_to_size(
    coreai_program: AIProgram,
    target_bytes: int | None = None,
    *,
    target_ratio: float | None = None,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    in_place: bool = False,
) -> AIProgram:
    """Compress each weight with the configuration that keeps the model most accurate for
    the bytes, so that all the weights together fit a budget.

    The budget is on the stored weight data: the bytes of every candidate weight (the
    constants the three passes would consider, as their reports count them: values, masks,
    codes, scales, LUTs), compressed or not. Give ``target_bytes`` or ``target_ratio``
    (the dense bytes of those weights divided by the ratio, rounded down).

    Every weight of at least ``weight_num_threshold`` elements and not matching ``exclude``
    is compressed with exactly one of the ``candidates`` offered to it, or left dense (dense
    is always an option). Steps:

    1. *weigh* (:func:`weigh_candidates`): each candidate's pass decides for the weight
       (with its own fallbacks) and compresses it alone, as it would in the program, giving
       the exact stored bytes and an estimated error (``sensitivity="proxy"``: the mean
       squared error added to the weight's layer output per calibration row,
       ``trace(dW X^T X dW^T) / rows``; a ``gather_nd`` table adds the error of one
       looked-up row; without ``calibration``, unit-variance uncorrelated inputs, with a
       warning that what the inputs look like is lost; ``sensitivity="measured"``: the
       program run on the Core AI runtime with only that weight compressed, on the first
       four ``samples``, the mean squared difference from the dense outputs, summed over
       the outputs: one run per weight and candidate, minutes on a small model and hours
       on a language model). A candidate the weight cannot take
       (2:4 on an embedding table, a vector LUT on an indivisible axis...) is skipped for
       it, with the reason in the plan.
    2. *allocate* (:meth:`Weighing.plan`): the choice minimising the summed error with the
       total within the budget (a multiple-choice knapsack: exact on small models, else a
       Lagrangian descent over each weight's convex hull and a greedy fill of the bytes
       left; never worse, in estimated error, than any single candidate applied to every
       weight when that fits; deterministic).
    3. *apply* (:func:`apply_plan`): each weight compressed by its chosen pass with the
       chosen options (the same numbers as in step 1), one program out; it verifies, saves,
       loads and runs.

    With a calibration, pruning candidates that set no ``algorithm`` use SparseGPT,
    quantization GPTQ and palettization OBS rounding (the passes' calibrated defaults
    otherwise).

    Raises:
        TypeError: ``coreai_program`` is not an ``AIProgram``; an argument has the wrong type.
        ValueError: neither or both of ``target_bytes`` and ``target_ratio``; a budget of
            zero or less, or above the dense bytes; a budget below the smallest size the
            candidates reach (the message gives it); an empty or invalid candidate list; an
            unknown ``sensitivity``, or ``"measured"`` without ``samples`` (or with samples
            that do not fit the function); a calibration of another program; a bad
            ``exclude`` pattern; a negative ``weight_num_threshold``.
    """
    return compress_to_size_with_report(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        weight_num_threshold=weight_num_threshold,
        exclude=exclude,
        in_place=in_place,
    ).program


def compress_to_size_with_report(
    coreai_program: AIProgram,
    target_bytes: int | None = None,
    *,
    target_ratio: float | None = None,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    in_place: bool = False,
    on_progress: Progress | None = None,
) -> SizeResult:
    """:func:`compress_to_size`, also returning the outcomes and the plan it followed.
    ``on_progress(stage, done, total)`` follows the weighing, then the compression."""
    _check_in_place(in_place)
    plan = plan_to_size(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        weight_num_threshold=weight_num_threshold,
        exclude=exclude,
        on_progress=on_progress,
    )
    return apply_plan(coreai_program, plan, in_place=in_place, on_progress=on_progress)


def plan_to_size(
    coreai_program: AIProgram,
    target_bytes: int | None = None,
    *,
    target_ratio: float | None = None,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> SizePlan:
    """The plan :func:`compress_to_size` would follow (weighing reads every weight and
    compresses it in memory; the program is not changed). Same arguments and errors; the
    budget is checked before the weighing, except against the smallest reachable size."""
    check_program(coreai_program)
    dense = sum(site.size * site.dtype.itemsize for site in find_weights(_module(coreai_program)))
    Weighing((), dense, (), sensitivity).plan(target_bytes, target_ratio=target_ratio)
    weighing = weigh_candidates(
        coreai_program,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        weight_num_threshold=weight_num_threshold,
        exclude=exclude,
        on_progress=on_progress,
    )
    return weighing.plan(target_bytes, target_ratio=target_ratio)


def weigh_candidates(
    coreai_program: AIProgram,
    *,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> Weighing:
    """Step 1 of :func:`compress_to_size` on its own: every weight's options (exact bytes,
    estimated error), ready for :meth:`Weighing.plan` at any number of budgets. Reads every
    weight; changes nothing. Errors as :func:`compress_to_size` (but for the budget)."""
    check_program(coreai_program)
    sites = find_weights(_module(coreai_program))
    check_calibration(calibration, sites)
    threshold = check_threshold(weight_num_threshold)
    patterns = _patterns(exclude)
    if sensitivity not in SENSITIVITIES:
        msg = f"sensitivity must be one of {', '.join(SENSITIVITIES)}; got {sensitivity!r}"
        raise ValueError(msg)
    if sensitivity == "measured" and samples is None:
        msg = "sensitivity='measured' needs samples: inputs of the function to run"
        raise ValueError(msg)
    resolved = resolve_candidates(
        candidates, calibrated=calibration is not None, weight_num_threshold=threshold
    )
    if calibration is None and sensitivity == "proxy":
        _log.warning(
            "compress_to_size without calibration: each weight's error is estimated as if "
            "its inputs were uncorrelated with unit variance, so which inputs matter (and how "
            "large they are) is lost; pass a calibration for a better allocation"
        )
    measure = None
    if sensitivity == "measured" and samples is not None:
        function = calibration.function if calibration is not None else "main"
        measure = MeasuredError(coreai_program, samples, function)

    def excluded(site: WeightSite) -> str | None:
        hit = next((p for p in patterns if matches(p, site)), None)
        return f"excluded by {hit}" if hit is not None else None

    def on_weight(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("weighing", done, total)

    try:
        weighed = weigh(
            sites,
            resolved,
            calibration,
            threshold=threshold,
            excluded=excluded,
            on_weight=on_weight,
            measure=measure,
        )
    finally:
        if measure is not None:
            measure.close()
    dense = sum(site.size * site.dtype.itemsize for site in sites)
    data_free = calibration is None and sensitivity == "proxy"
    how = f"{sensitivity} (data-free)" if data_free else sensitivity
    return Weighing(tuple(weighed), dense, resolved, how)


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
    _check_in_place(in_place)
    chosen = {row.site.id: row for row in plan.weights}
    _check_same_weights(coreai_program, {i: row.site for i, row in chosen.items()})

    def decide(program: AIProgram) -> list[Decision]:
        decisions = []
        for site in find_weights(_module(program)):
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
    _check_in_place(in_place)
    sites = find_weights(_module(coreai_program))
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
    dense = sum(site.size * site.dtype.itemsize for site in sites)
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
    before = site.size * site.dtype.itemsize
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
    sites = find_weights(_module(program))
    here = {site.id: site.shape for site in sites}
    there = {weight_id: site.shape for weight_id, site in planned.items()}
    if here != there:
        msg = (
            "the plan is for another program: its weights (ids and shapes) differ from this "
            "program's (apply it to the program it was weighed on, or an unchanged copy)"
        )
        raise ValueError(msg)


def _check_in_place(in_place: object) -> None:
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)


def _module(program: AIProgram) -> Module:
    return program._module._mlir_module  # noqa: SLF001


def _patterns(exclude: object) -> tuple[str, ...]:
    if isinstance(exclude, str):
        exclude = (exclude,)
    if not isinstance(exclude, Iterable):
        msg = f"exclude must be an iterable of patterns, got {exclude!r}"
        raise ArgumentTypeError(msg)
    return tuple(check_pattern(p, "exclude pattern") for p in exclude)
