"""``compress_to_size``: the most accurate per-weight mix of the passes within a byte budget.

Four steps, each public: :func:`weigh_candidates` (every weight under every candidate:
exact bytes and an estimated error; the slow one), :meth:`Weighing.plan` (the allocation for
a budget; instant), :func:`~coreai_opt.coreai_utils.passes.auto.check.check_plan` (the plan
against the best configurations of a single candidate that fit, on the runtime;
``check.py``) and :func:`apply_plan` (the program compressed as planned; ``apply.py``).
:func:`compress_to_size` does all three; :func:`apply_choices` applies an allocation kept
from an earlier plan or report without weighing again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import ArgumentTypeError, check_int
from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.calibration.samples import check_samples as check_inputs
from coreai_opt.coreai_utils.ir.signature import graph_inputs
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.passes.auto.apply import (
    Progress,
    SizeResult,
    apply_choices,
    apply_plan,
    check_in_place,
    module_of,
)
from coreai_opt.coreai_utils.passes.auto.candidates import (
    DEFAULT_CANDIDATES,
    Candidate,
    resolve_candidates,
)
from coreai_opt.coreai_utils.passes.auto.check import (
    CHECK_SAMPLES,
    DEFAULT_CHECKS,
    check_plan,
    check_uniform_count,
)
from coreai_opt.coreai_utils.passes.auto.gains import DEFAULT_PROBES, apply_gains
from coreai_opt.coreai_utils.passes.auto.measured import MeasuredError
from coreai_opt.coreai_utils.passes.auto.plan import SizePlan, Weighing
from coreai_opt.coreai_utils.passes.auto.sensitivity import weigh
from coreai_opt.coreai_utils.passes.calibrated import check_calibration
from coreai_opt.coreai_utils.passes.control import check_pattern, matches
from coreai_opt.coreai_utils.passes.options import check_threshold
from coreai_opt.coreai_utils.passes.outcomes import check_program

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


def compress_to_size(
    coreai_program: AIProgram,
    target_bytes: int | None = None,
    *,
    target_ratio: float | None = None,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    probes: int = DEFAULT_PROBES,
    check_uniform: int = DEFAULT_CHECKS,
    check_samples: Sequence[Mapping[str, object]] | None = None,
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
       warning that what the inputs look like is lost; with ``samples``, ``probes`` runtime
       runs calibrate it across layers: groups of consecutive weights are compressed at a
       middle option together and each group's proxy errors are scaled to the measured
       output error, see ``passes/auto/gains.py``; without samples or with ``probes=0`` it
       stays layer-local, with a warning; ``sensitivity="measured"``: the
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
    3. *check* (with ``check_samples`` or ``samples``, and ``check_uniform`` > 0;
       ``passes/auto/check.py``): the allocation minimises a sum of per-weight estimates,
       and many weights compressed at once need not add up; so the plan is run on the
       runtime next to the ``check_uniform`` single-candidate configurations that fit the
       budget with the lowest summed estimates (each candidate on every weight that takes
       it, dense elsewhere; when that exceeds the budget, weights a step down each until it
       fits), and the one closest to the dense outputs (mean squared difference) is kept,
       the plan on a tie. Give ``check_samples``: inputs the calibration did not see (the
       first eight are run). Without them the first eight ``samples`` are, on which fitted
       options look better than elsewhere, and the more so the more freedom they had:
       the check then keeps what is at least as good as the best of these configurations,
       but can replace a better plan (module doc of ``check.py``). One more
       compression and runtime run per configuration; :attr:`SizePlan.checked` and
       :attr:`SizePlan.kept` say what was run and kept.
    4. *apply* (:func:`apply_plan`): each weight compressed by its chosen pass with the
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
            that do not fit the function); ``check_samples`` that do not fit the function;
            a negative ``probes`` or ``check_uniform``; a
            calibration of another
            program; a bad ``exclude`` pattern; a negative ``weight_num_threshold``.
    """
    return compress_to_size_with_report(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        probes=probes,
        check_uniform=check_uniform,
        check_samples=check_samples,
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
    probes: int = DEFAULT_PROBES,
    check_uniform: int = DEFAULT_CHECKS,
    check_samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    in_place: bool = False,
    on_progress: Progress | None = None,
) -> SizeResult:
    """:func:`compress_to_size`, also returning the outcomes and the plan it followed.
    ``on_progress(stage, done, total)`` follows the weighing, the probes, the check, then
    the compression."""
    check_in_place(in_place)
    plan = plan_to_size(
        coreai_program,
        target_bytes,
        target_ratio=target_ratio,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        probes=probes,
        check_uniform=check_uniform,
        check_samples=check_samples,
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
    probes: int = DEFAULT_PROBES,
    check_uniform: int = DEFAULT_CHECKS,
    check_samples: Sequence[Mapping[str, object]] | None = None,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> SizePlan:
    """The plan :func:`compress_to_size` would follow (weighing reads every weight and
    compresses it in memory; the runtime runs use a private copy; the program is not
    changed). Same arguments and errors; the budget is checked before the weighing, except
    against the smallest reachable size."""
    check_program(coreai_program)
    dense = sum(site.size * site.dtype.itemsize for site in find_weights(module_of(coreai_program)))
    Weighing((), dense, (), sensitivity).plan(target_bytes, target_ratio=target_ratio)
    count = check_uniform_count(check_uniform)
    function = calibration.function if isinstance(calibration, Calibration) else "main"
    checked_on = check_samples if check_samples is not None else samples
    if checked_on is not None and count > 0:  # refused now, not after the weighing
        first = list(checked_on)[:CHECK_SAMPLES]
        check_inputs(graph_inputs(module_of(coreai_program), function), first, function)
    weighing = weigh_candidates(
        coreai_program,
        calibration=calibration,
        candidates=candidates,
        sensitivity=sensitivity,
        samples=samples,
        probes=probes,
        weight_num_threshold=weight_num_threshold,
        exclude=exclude,
        on_progress=on_progress,
    )
    plan = weighing.plan(target_bytes, target_ratio=target_ratio)
    if checked_on is not None and count > 0:
        plan = check_plan(
            coreai_program,
            weighing,
            plan,
            checked_on,
            function=function,
            check_uniform=count,
            on_progress=on_progress,
        )
    return plan


def weigh_candidates(
    coreai_program: AIProgram,
    *,
    calibration: Calibration | None = None,
    candidates: Iterable[Candidate] = DEFAULT_CANDIDATES,
    sensitivity: str = "proxy",
    samples: Sequence[Mapping[str, object]] | None = None,
    probes: int = DEFAULT_PROBES,
    weight_num_threshold: int = 1024,
    exclude: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> Weighing:
    """Step 1 of :func:`compress_to_size` on its own: every weight's options (exact bytes,
    estimated error), ready for :meth:`Weighing.plan` at any number of budgets. Reads every
    weight; changes nothing. Errors as :func:`compress_to_size` (but for the budget)."""
    check_program(coreai_program)
    sites = find_weights(module_of(coreai_program))
    check_calibration(calibration, sites)
    threshold = check_threshold(weight_num_threshold)
    patterns = _patterns(exclude)
    if sensitivity not in SENSITIVITIES:
        msg = f"sensitivity must be one of {', '.join(SENSITIVITIES)}; got {sensitivity!r}"
        raise ValueError(msg)
    if sensitivity == "measured" and samples is None:
        msg = "sensitivity='measured' needs samples: inputs of the function to run"
        raise ValueError(msg)
    probes = check_int("probes", probes, 0, "0 (no calibration across layers) or more")
    resolved = resolve_candidates(
        candidates, calibrated=calibration is not None, weight_num_threshold=threshold
    )
    if calibration is None and sensitivity == "proxy":
        _log.warning(
            "compress_to_size without calibration: each weight's error is estimated as if "
            "its inputs were uncorrelated with unit variance, so which inputs matter (and how "
            "large they are) is lost; pass a calibration for a better allocation"
        )
    probing = sensitivity == "proxy" and samples is not None and probes > 0
    if sensitivity == "proxy" and not probing:
        _log.warning(
            "compress_to_size: the proxy is not calibrated across layers (%s), so how an "
            "error in one layer reaches the outputs is not known and weights are compared "
            "by their own layer's error only; give samples and probes > 0 for a few runtime "
            "runs that fix that",
            "probes=0" if samples is not None else "no samples",
        )
    measure = None
    if samples is not None and (sensitivity == "measured" or probing):
        function = calibration.function if calibration is not None else "main"
        measure = MeasuredError(coreai_program, samples, function)

    def excluded(site: WeightSite) -> str | None:
        hit = next((p for p in patterns if matches(p, site)), None)
        return f"excluded by {hit}" if hit is not None else None

    def on_weight(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("weighing", done, total)

    def on_probe(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("probing", done, total)

    try:
        weighed = weigh(
            sites,
            resolved,
            calibration,
            threshold=threshold,
            excluded=excluded,
            on_weight=on_weight,
            measure=measure if sensitivity == "measured" else None,
        )
        runs = 0
        if probing and measure is not None:
            weighed, runs = apply_gains(weighed, calibration, probes, measure.together, on_probe)
    finally:
        if measure is not None:
            measure.close()
    dense = sum(site.size * site.dtype.itemsize for site in sites)
    how = sensitivity
    if sensitivity == "proxy":
        data_free = " (data-free)" if calibration is None else ""
        scale = f", calibrated across layers by {runs} runtime runs" if probing else ""
        how = f"proxy{data_free}{scale}"
    return Weighing(tuple(weighed), dense, resolved, how)


def _patterns(exclude: object) -> tuple[str, ...]:
    if isinstance(exclude, str):
        exclude = (exclude,)
    if not isinstance(exclude, Iterable):
        msg = f"exclude must be an iterable of patterns, got {exclude!r}"
        raise ArgumentTypeError(msg)
    return tuple(check_pattern(p, "exclude pattern") for p in exclude)
