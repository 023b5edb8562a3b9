"""``compress_to_size``: the most accurate per-weight mix of the passes within a byte budget."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from numbers import Real

import numpy as np
from coreai._compiler.ir import Module
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import ArgumentTypeError
from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.numerics.allocation import allocate, smallest_total
from coreai_opt.coreai_utils.passes.auto.candidates import (
    DEFAULT_CANDIDATES,
    Candidate,
    Resolved,
    resolve_candidates,
)
from coreai_opt.coreai_utils.passes.auto.sensitivity import Option, WeightOptions, weigh
from coreai_opt.coreai_utils.passes.calibrated import check_calibration
from coreai_opt.coreai_utils.passes.control import check_pattern, matches
from coreai_opt.coreai_utils.passes.options import check_threshold
from coreai_opt.coreai_utils.passes.outcomes import SparsifyResult, WeightOutcome, check_program
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded, run_weight_pass

__all__ = [
    "SENSITIVITIES",
    "SizePlan",
    "SizeResult",
    "WeightChoice",
    "compress_to_size",
    "compress_to_size_with_report",
    "plan_to_size",
]

SENSITIVITIES = ("proxy",)
"""How each weight's error is estimated (``passes/auto/sensitivity.py``)."""

_log = logging.getLogger("coreai_opt.coreai_utils.passes")

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: ``weighing`` (one step per weight) then ``compressing``."""


@dataclass(frozen=True)
class WeightChoice:
    """One weight in the plan: the option chosen (``choice``: a candidate name or
    ``dense``), its stored bytes and estimated error, the dense bytes, every option that was
    weighed (name -> (bytes, error)), the candidates skipped for it (name -> why) and, when
    only dense was possible, why (``fixed``)."""

    site: WeightSite
    choice: str
    bytes: int
    error: float
    bytes_before: int
    weighed: tuple[tuple[str, int, float], ...]
    skipped: tuple[tuple[str, str], ...]
    fixed: str | None
    option: Option


@dataclass(frozen=True)
class SizePlan:
    """The allocation: per weight its choice (IR order), the ``budget``, the planned
    ``total_bytes`` (exact), the ``dense_bytes`` of every candidate weight, the
    ``smallest_bytes`` reachable with these candidates, the summed estimated error, and
    ``sensitivity`` (how errors were estimated; ``proxy (data-free)`` without
    calibration)."""

    weights: tuple[WeightChoice, ...]
    budget: int
    total_bytes: int
    dense_bytes: int
    smallest_bytes: int
    total_error: float
    sensitivity: str


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

    1. *weigh*: each candidate's pass decides for the weight (with its own fallbacks) and
       compresses it alone, as it would in the program, giving the exact stored bytes and
       an estimated error (``sensitivity="proxy"``: the mean squared error added to the
       weight's layer output per calibration row, ``trace(dW X^T X dW^T) / rows``; a
       ``gather_nd`` table adds the error of one looked-up row; without ``calibration``,
       unit-variance uncorrelated inputs, with a warning that what the inputs look like is
       lost). A candidate the weight cannot take (2:4 on an embedding table, a vector LUT on
       an indivisible axis...) is skipped for it, with the reason in the plan.
    2. *allocate*: the choice minimising the summed error with the total within the budget
       (a multiple-choice knapsack: Lagrangian descent over each weight's convex hull, then
       a greedy fill of the bytes left; never worse, in estimated error, than any single
       candidate applied to every weight when that fits; deterministic).
    3. *apply*: each weight compressed by its chosen pass with the chosen options (the same
       numbers as in step 1), one program out; it verifies, saves, loads and runs.

    With a calibration, pruning candidates that set no ``algorithm`` use SparseGPT,
    quantization GPTQ and palettization OBS rounding (the passes' calibrated defaults
    otherwise).

    Raises:
        TypeError: ``coreai_program`` is not an ``AIProgram``; an argument has the wrong type.
        ValueError: neither or both of ``target_bytes`` and ``target_ratio``; a budget of
            zero or less, or above the dense bytes; a budget below the smallest size the
            candidates reach (the message gives it); an empty or invalid candidate list; an
            unknown ``sensitivity``; a calibration of another program; a bad ``exclude``
            pattern; a negative ``weight_num_threshold``.
    """
    return compress_to_size_with_report(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
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
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    in_place: bool = False,
    on_progress: Progress | None = None,
) -> SizeResult:
    """:func:`compress_to_size`, also returning the outcomes and the plan it followed."""
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)
    plan = plan_to_size(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        weight_num_threshold=weight_num_threshold,
        exclude=exclude,
        on_progress=on_progress,
    )
    chosen = {row.site.id: row for row in plan.weights}

    def decide(program: AIProgram) -> list[Decision]:
        decisions = []
        for site in find_weights(_module(program)):
            row = chosen[site.id]
            decision = row.option.decision
            if decision is None:
                decisions.append(Decision(site, None, row.fixed or "chosen: dense"))
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

    result: SparsifyResult = run_weight_pass(
        coreai_program, in_place=in_place, decide=decide, encode=encode, on_weight=on_weight
    )
    return SizeResult(result.program, result.weights, plan)


def _module(program: AIProgram) -> Module:
    return program._module._mlir_module  # noqa: SLF001


def plan_to_size(
    coreai_program: AIProgram,
    target_bytes: int | None = None,
    *,
    target_ratio: float | None = None,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> SizePlan:
    """The plan :func:`compress_to_size` would follow (weighing reads every weight and
    compresses it in memory; the program is not changed). Same arguments and errors."""
    check_program(coreai_program)
    sites = find_weights(_module(coreai_program))
    check_calibration(calibration, sites)
    threshold = check_threshold(weight_num_threshold)
    patterns = _patterns(exclude)
    if sensitivity not in SENSITIVITIES:
        msg = f"sensitivity must be one of {', '.join(SENSITIVITIES)}; got {sensitivity!r}"
        raise ValueError(msg)
    dense = sum(site.size * site.dtype.itemsize for site in sites)
    budget = _budget(target_bytes, target_ratio, dense)
    resolved = resolve_candidates(
        candidates, calibrated=calibration is not None, weight_num_threshold=threshold
    )
    if calibration is None:
        _log.warning(
            "compress_to_size without calibration: each weight's error is estimated as if "
            "its inputs were uncorrelated with unit variance, so which inputs matter (and how "
            "large they are) is lost; pass a calibration for a better allocation"
        )

    def excluded(site: WeightSite) -> str | None:
        hit = next((p for p in patterns if matches(p, site)), None)
        return f"excluded by {hit}" if hit is not None else None

    def on_weight(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("weighing", done, total)

    weighed = weigh(
        sites, resolved, calibration, threshold=threshold, excluded=excluded, on_weight=on_weight
    )
    return _allocate(weighed, budget, dense, resolved, calibration is not None)


def _allocate(
    weighed: list[WeightOptions],
    budget: int,
    dense: int,
    resolved: tuple[Resolved, ...],
    calibrated: bool,  # noqa: FBT001
) -> SizePlan:
    sizes = [[o.bytes for o in w.options] for w in weighed]
    errors = [[o.error for o in w.options] for w in weighed]
    smallest = smallest_total(sizes)
    if smallest > budget:
        names = ", ".join(r.candidate.name for r in resolved)
        msg = (
            f"the budget of {budget} bytes cannot be reached: the smallest size with these "
            f"candidates ({names}) is {smallest} bytes ({dense / smallest:.2f}x smaller than "
            f"the {dense} dense bytes)"
        )
        raise ValueError(msg)
    # every weight at one candidate (dense where it does not apply), as the passes would do
    references = [
        [next((k for k, o in enumerate(w.options) if o.name == name), 0) for w in weighed]
        for name in (r.candidate.name for r in resolved)
    ]
    allocation = allocate(sizes, errors, budget, references)
    rows = []
    for w, index in zip(weighed, allocation.choice, strict=True):
        option = w.options[index]
        rows.append(
            WeightChoice(
                site=w.site,
                choice=option.name,
                bytes=option.bytes,
                error=option.error,
                bytes_before=w.site.size * w.site.dtype.itemsize,
                weighed=tuple((o.name, o.bytes, o.error) for o in w.options),
                skipped=w.skipped,
                fixed=w.fixed,
                option=option,
            )
        )
    return SizePlan(
        tuple(rows),
        budget,
        allocation.total_bytes,
        dense,
        smallest,
        allocation.total_error,
        "proxy" if calibrated else "proxy (data-free)",
    )


def _patterns(exclude: object) -> tuple[str, ...]:
    if isinstance(exclude, str):
        exclude = (exclude,)
    if not isinstance(exclude, Iterable):
        msg = f"exclude must be an iterable of patterns, got {exclude!r}"
        raise ArgumentTypeError(msg)
    return tuple(check_pattern(p, "exclude pattern") for p in exclude)


def _budget(target_bytes: object, target_ratio: object, dense: int) -> int:
    """The byte budget from exactly one of the two arguments (checked)."""
    if (target_bytes is None) == (target_ratio is None):
        msg = "give exactly one of target_bytes and target_ratio"
        raise ValueError(msg)
    if target_bytes is not None:
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
            msg = f"target_bytes must be an int, got {target_bytes!r}"
            raise ArgumentTypeError(msg)
        budget = target_bytes
        what = f"target_bytes={target_bytes}"
    else:
        if isinstance(target_ratio, bool) or not isinstance(target_ratio, Real):
            msg = f"target_ratio must be a real number, got {target_ratio!r}"
            raise ArgumentTypeError(msg)
        ratio = float(target_ratio)
        if not math.isfinite(ratio) or ratio <= 0:
            msg = f"target_ratio must be a positive finite number, got {target_ratio!r}"
            raise ValueError(msg)
        budget = math.floor(dense / ratio)
        what = f"target_ratio={target_ratio} ({budget} bytes)"
    if budget <= 0:
        msg = f"{what}: the budget must be more than 0 bytes"
        raise ValueError(msg)
    if budget > dense:
        msg = (
            f"{what} is larger than the {dense} bytes of the weights now: nothing to compress "
            "(ask for a ratio above 1 or fewer bytes)"
        )
        raise ValueError(msg)
    return budget
