"""An allocation of candidate configurations to weights under a byte budget.

:class:`Weighing` holds every weight's options (from ``sensitivity.weigh``); its
:meth:`~Weighing.plan` turns a budget into a :class:`SizePlan` in well under a second, so
one weighing serves many budgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

from coreai_opt.coreai_utils.arguments import ArgumentTypeError
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.numerics.allocation import allocate, smallest_total, step_down
from coreai_opt.coreai_utils.passes.auto.candidates import Resolved
from coreai_opt.coreai_utils.passes.auto.sensitivity import Option, WeightOptions

__all__ = ["CheckedRun", "SizePlan", "Weighing", "WeightChoice"]


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
class CheckedRun:
    """One configuration run on the runtime by the plan's last check (``check.py``):
    ``name`` (``plan``: the allocation; ``uniform <candidate>``, with ``, <n> weights a step
    down`` when it was made to fit), its total stored bytes and its measured output error."""

    name: str
    total_bytes: int
    error: float


@dataclass(frozen=True)
class SizePlan:
    """The allocation: per weight its choice (IR order), the ``budget``, the planned
    ``total_bytes`` (exact), the ``dense_bytes`` of every candidate weight, the
    ``smallest_bytes`` reachable with these candidates, the summed estimated error, and
    ``sensitivity`` (how errors were estimated; ``proxy (data-free)`` without
    calibration). ``checked``: the runs of the last check, when there was one (the
    allocation's first), and ``kept``: the one these rows are (``plan`` when unchecked)."""

    weights: tuple[WeightChoice, ...]
    budget: int
    total_bytes: int
    dense_bytes: int
    smallest_bytes: int
    total_error: float
    sensitivity: str
    resolved: tuple[Resolved, ...] = ()
    checked: tuple[CheckedRun, ...] = ()
    kept: str = "plan"

    @property
    def choices(self) -> dict[str, str]:
        """Weight id -> the chosen candidate's name (or ``dense``): the allocation alone,
        to keep or to apply again with :func:`apply_choices`."""
        return {row.site.id: row.choice for row in self.weights}


@dataclass(frozen=True)
class Weighing:
    """Every candidate weight's options (IR order), the dense bytes of all of them, the
    checked candidates, and how the errors were estimated (``sensitivity``)."""

    weights: tuple[WeightOptions, ...]
    dense_bytes: int
    resolved: tuple[Resolved, ...]
    sensitivity: str

    @property
    def smallest_bytes(self) -> int:
        """The fewest bytes these candidates reach: every weight at its smallest option."""
        return smallest_total([[o.bytes for o in w.options] for w in self.weights])

    def plan(
        self, target_bytes: int | None = None, *, target_ratio: float | None = None
    ) -> SizePlan:
        """The allocation for a budget: ``target_bytes``, or the dense bytes divided by
        ``target_ratio`` (rounded down). ``ValueError`` (``TypeError`` for wrong types) for
        neither or both, a budget of 0 or less or above the dense bytes, or below the
        smallest size the candidates reach (the message gives it)."""
        budget = _budget(target_bytes, target_ratio, self.dense_bytes)
        return _allocate(self, budget)

    def uniform(self, name: str) -> list[int]:
        """Each weight's option index for candidate ``name`` applied to every weight that
        took it (dense, index 0, for the others): the configuration a pass alone gives."""
        return [
            next((k for k, o in enumerate(w.options) if o.name == name), 0) for w in self.weights
        ]

    def uniform_plan(self, name: str, budget: int) -> SizePlan:
        """:meth:`uniform` as a plan for ``budget`` (its bytes may exceed it)."""
        choice = self.uniform(name)
        options = [w.options[k] for w, k in zip(self.weights, choice, strict=True)]
        total = sum(o.bytes for o in options)
        return _plan(self, choice, budget, total, sum(o.error for o in options))

    def stepped_plan(self, name: str, budget: int) -> SizePlan | None:
        """:meth:`uniform` for a budget it exceeds, made to fit by moving weights one step
        each to a smaller option, those adding the least estimated error per byte saved
        first (``numerics.allocation.step_down``): the configuration next to the uniform
        one, for a budget between uniform sizes. None when the uniform configuration fits
        or does not fit even with every weight a step down."""
        start = self.uniform(name)
        stepped = step_down(*_table(self), start, budget)
        if stepped is None or list(stepped.choice) == start:  # start itself when it fits
            return None
        return _plan(self, stepped.choice, budget, stepped.total_bytes, stepped.total_error)


def _table(weighing: Weighing) -> tuple[list[list[int]], list[list[float]]]:
    """Every weight's options' bytes and estimated errors, as the allocation takes them."""
    sizes = [[o.bytes for o in w.options] for w in weighing.weights]
    errors = [[o.error for o in w.options] for w in weighing.weights]
    return sizes, errors


def _allocate(weighing: Weighing, budget: int) -> SizePlan:
    dense, resolved = weighing.dense_bytes, weighing.resolved
    sizes, errors = _table(weighing)
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
    references = [weighing.uniform(r.candidate.name) for r in resolved]
    allocation = allocate(sizes, errors, budget, references)
    return _plan(
        weighing, allocation.choice, budget, allocation.total_bytes, allocation.total_error
    )


def _plan(
    weighing: Weighing,
    choice: Sequence[int],
    budget: int,
    total_bytes: int,
    total_error: float,
) -> SizePlan:
    """The plan with option ``choice[i]`` for weight ``i``."""
    rows = []
    for w, index in zip(weighing.weights, choice, strict=True):
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
        total_bytes,
        weighing.dense_bytes,
        weighing.smallest_bytes,
        total_error,
        weighing.sensitivity,
        weighing.resolved,
    )


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
