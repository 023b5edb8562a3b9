"""The last step of planning: the allocation against the configurations of a single
candidate that fit, run on the Core AI runtime.

The allocation minimises a *sum* of per-weight estimates. When a tight budget moves many
weights at once, their errors need not add up (SmolLM2-135M at the int4-per-channel size:
a mix with a third of the weights at 3-bit LUTs, better than uniform 4-bit LUTs of the same
bytes by its summed estimate, gave perplexity 35.91 against their 33.62 on held-out text).
So the plan is run on the runtime next to the ``check_uniform`` rivals of lowest summed
estimate, on the first samples (the mean squared difference from the dense outputs, summed
over the outputs, as ``sensitivity="measured"`` and the probes), and the one with the
lowest measured error is kept; a tie keeps the plan. The rivals, one per candidate:

- ``uniform <candidate>``: the candidate on every weight that takes it, dense elsewhere,
  as its pass alone would compress the model, when that fits the budget;
- ``uniform <candidate>, <n> weights a step down``, when it does not: the same, with
  weights moved one step each to a smaller option (the least estimated error added per
  byte saved first) until it fits (:meth:`Weighing.stepped_plan`). A budget seldom lands
  on a uniform size; between two of them this is the rival next to the larger one, with
  little room for the estimates' errors to steer (SmolLM2-135M at 0.8x the int4-per-
  block-32 size, 1.6 % under uniform 4-bit LUTs: docs/studies.md). A candidate whose every
  weight a step down still does not fit has no rival.

A rival whose choices are the plan's, or an earlier rival's, is not run twice.

Which samples: inputs the calibration did not see (``check_samples``; the first
:data:`CHECK_SAMPLES`). On the calibration samples themselves, fitted options (GPTQ,
SparseGPT, OBS rounding) look better than elsewhere, and the more so the more freedom the
fit had, so the comparison leans towards them: measured on SmolLM2-135M at the int4-per-
block-32 size, the check on four calibration windows kept uniform int4 per block 32 (held-out
perplexity 30.18) over a plan at 29.25; on all-MiniLM-L6-v2 at the palettize-4 size it
kept uniform palettize 4 (mean cosine 0.9845) over a plan at 0.9894. It still never keeps
less than the best uniform configuration it ran, as measured there.

What it costs: one compression of every weight and one runtime run per configuration run.
A metric that turns on thresholds (a classifier's top-1) can disagree with the output
error it compares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import check_int
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.numerics.parallel import parallel_map
from coreai_opt.coreai_utils.passes.auto.measured import MeasuredError
from coreai_opt.coreai_utils.passes.auto.plan import CheckedRun, SizePlan, Weighing, WeightChoice
from coreai_opt.coreai_utils.passes.outcomes import check_program, read_weight
from coreai_opt.coreai_utils.passes.runner import Encoded

__all__ = [
    "CHECK_SAMPLES",
    "DEFAULT_CHECKS",
    "check_plan",
    "check_uniform_count",
    "rivals",
    "run_check",
]

DEFAULT_CHECKS = 2
"""How many uniform configurations the plan is run against by default (when samples are
given): the two that fit with the lowest summed estimates."""

CHECK_SAMPLES = 8
"""How many of the given samples :func:`check_plan` runs (8 held-out inputs: the plan and
a uniform configuration often differ by a few percent of output error)."""

Together = Callable[[Sequence[tuple[WeightSite, Encoded]]], float]
"""The measured output error with several weights compressed at once."""


def check_uniform_count(value: object) -> int:
    """``check_uniform`` checked: an int, 0 (no check) or more."""
    return check_int("check_uniform", value, 0, "0 (no check on the runtime) or more")


def check_plan(
    coreai_program: AIProgram,
    weighing: Weighing,
    plan: SizePlan,
    samples: Sequence[Mapping[str, object]],
    *,
    function: str = "main",
    check_uniform: int = DEFAULT_CHECKS,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SizePlan:
    """``plan`` (from ``weighing`` of ``coreai_program``) against the ``check_uniform``
    best-estimated uniform configurations that fit its budget, run on the first
    :data:`CHECK_SAMPLES` of ``samples`` (inputs of ``function`` the calibration did not
    see, ideally): the one of lowest measured output error, with every run in
    :attr:`SizePlan.checked` (module doc). The program is not changed.
    ``on_progress("checking", done, total)`` after each run. ``ValueError`` for samples
    that do not fit the function or a negative ``check_uniform``."""
    check_program(coreai_program)
    count = check_uniform_count(check_uniform)
    if not rivals(weighing, plan, count):
        return plan
    measure = MeasuredError(coreai_program, samples, function, CHECK_SAMPLES)
    try:
        return run_check(weighing, plan, measure.together, count, on_progress)
    finally:
        measure.close()


def rivals(weighing: Weighing, plan: SizePlan, count: int) -> list[tuple[str, SizePlan]]:
    """The ``count`` configurations (name, plan) next to a single candidate that fit
    ``plan``'s budget with the lowest summed estimated error (ties by the candidates'
    order), other than the plan itself and each other: per candidate, the uniform one
    (``uniform <candidate>``) when it fits, else the uniform one with weights a step down
    until it fits (``uniform <candidate>, <n> weights a step down``; module doc). A
    stepped configuration equal to a uniform one that fits goes by the uniform one's name."""
    fitting, stepped = [], []
    for order, resolved in enumerate(weighing.resolved):
        name = resolved.candidate.name
        uniform = weighing.uniform_plan(name, plan.budget)
        if uniform.total_bytes <= plan.budget:
            fitting.append((uniform.total_error, order, f"uniform {name}", uniform))
            continue
        rival = weighing.stepped_plan(name, plan.budget)
        if rival is not None:
            pairs = zip(uniform.weights, rival.weights, strict=True)
            moved = sum(a.choice != b.choice for a, b in pairs)
            label = f"uniform {name}, {moved} weight{'' if moved == 1 else 's'} a step down"
            stepped.append((rival.total_error, order, label, rival))
    chosen: list[tuple[float, int, str, SizePlan]] = []
    seen = [plan.choices]
    for entry in fitting + stepped:  # the uniform ones first, so they keep their names
        if entry[3].choices not in seen:
            seen.append(entry[3].choices)
            chosen.append(entry)
    chosen.sort(key=lambda entry: entry[:2])
    return [(label, rival) for _, _, label, rival in chosen[:count]]


def run_check(
    weighing: Weighing,
    plan: SizePlan,
    together: Together,
    count: int,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SizePlan:
    """:func:`check_plan` with a measure of one's own (``together``: the output error with
    the given weights replaced)."""
    contenders = [("plan", plan)]
    contenders += rivals(weighing, plan, count)
    if len(contenders) == 1:
        return plan
    runs = []
    for done, (name, contender) in enumerate(contenders, start=1):
        replaced = _encoded(contender.weights)
        runs.append(CheckedRun(name, contender.total_bytes, together(replaced)))
        del replaced
        if on_progress is not None:
            on_progress("checking", done, len(contenders))
    best = min(range(len(runs)), key=lambda k: (runs[k].error, k))
    return replace(contenders[best][1], checked=tuple(runs), kept=runs[best].name)


def _encoded(rows: Sequence[WeightChoice]) -> list[tuple[WeightSite, Encoded]]:
    """Every compressed row's weight encoded as its option says (on the shared pool)."""

    def encode(row: WeightChoice) -> tuple[WeightSite, Encoded]:
        resolved, decision = row.option.resolved, row.option.decision
        weight = read_weight(row.site)
        if resolved is None or decision is None or isinstance(weight, str):
            msg = f"{row.site.id}: nothing to encode"  # unreachable: weighed options
            raise ValueError(msg)
        return row.site, resolved.method.encode(weight, decision)

    return parallel_map(encode, [row for row in rows if row.option.resolved is not None])
