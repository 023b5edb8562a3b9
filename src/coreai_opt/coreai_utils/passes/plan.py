"""Decide, without touching the IR, what happens to each weight constant."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.numerics.activations import ActivationStats
from coreai_opt.coreai_utils.passes.calibrated import no_gram, offered
from coreai_opt.coreai_utils.passes.options import Algorithm, SparsifyOptions
from coreai_opt.coreai_utils.passes.outcomes import below_threshold

__all__ = ["Mode", "WeightPlan", "expected_bytes", "plan_weight"]


class Mode(StrEnum):
    """The sparsity pattern applied to a weight (how its zeros are chosen is the algorithm)."""

    UNSTRUCTURED = "unstructured"
    BLOCK = "block"
    N_M = "n:m"


@dataclass(frozen=True)
class WeightPlan:
    """What to do with one weight: a ``mode``, or the ``reason`` it stays dense.

    ``warn`` says whether the reason (or a downgrade of the requested mode, also given in
    ``reason``) deserves a warning to the user. ``algorithm`` chooses the pruned elements;
    ``stats`` are the weight's activation statistics when it is wanda or sparsegpt (a
    fallback from the requested algorithm is noted in ``reason``). ``options`` are the
    weight's own (the call's, or an override's: ``rule`` names its pattern); None when
    ``exclude`` or an override leaves it dense.
    """

    site: WeightSite
    mode: Mode | None
    reason: str | None = None
    warn: bool = False
    algorithm: Algorithm = Algorithm.MAGNITUDE
    stats: ActivationStats | None = None
    options: SparsifyOptions | None = None
    rule: str | None = None


def plan_weight(
    site: WeightSite, options: SparsifyOptions, calibration: Calibration | None = None
) -> WeightPlan:
    """The plan for ``site`` under ``options`` (and ``calibration`` for wanda/sparsegpt)."""
    plan = replace(_plan_mode(site, options), options=options)
    if plan.mode is None or options.algorithm is Algorithm.MAGNITUDE or calibration is None:
        return plan
    algorithm, stats, note, warn = _plan_algorithm(site, plan.mode, options, calibration)
    reason = "; ".join(r for r in (plan.reason, note) if r) or None
    return replace(plan, algorithm=algorithm, stats=stats, reason=reason, warn=plan.warn or warn)


def _plan_algorithm(
    site: WeightSite, mode: Mode, options: SparsifyOptions, calibration: Calibration
) -> tuple[Algorithm, ActivationStats | None, str | None, bool]:
    """``(algorithm, stats, fallback note, warn)`` following sparsegpt -> wanda -> magnitude;
    the note also says what the statistics leave out (a tied head's lookup, padding)."""
    wanted = options.algorithm
    offer = offered(site, calibration)
    if offer.stats is None:
        return Algorithm.MAGNITUDE, None, f"{wanted.value}: {offer.why}; magnitude used", offer.warn
    stats, note = offer.stats, offer.note
    if wanted is Algorithm.WANDA:
        return Algorithm.WANDA, stats, note, False
    if mode is Mode.BLOCK:
        why = "sparsegpt does not do block sparsity; wanda used"
        return Algorithm.WANDA, stats, _joined(note, why), True
    missing_gram = no_gram(stats)
    if missing_gram is not None:
        why = f"sparsegpt: {missing_gram}; wanda used"
        return Algorithm.WANDA, stats, _joined(note, why), False
    return Algorithm.SPARSEGPT, stats, note, False


def _joined(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None


def _plan_mode(site: WeightSite, options: SparsifyOptions) -> WeightPlan:
    """The mode for ``site`` under ``options`` (or why it stays dense)."""
    small = below_threshold(site, options.weight_num_threshold)
    if small is not None:
        return WeightPlan(site, None, small)
    if options.n_m_ratio is not None:
        return _plan_n_m(site, options.n_m_ratio[1])
    if options.block_size is not None:
        return _plan_block(site, options.block_size)
    return WeightPlan(site, Mode.UNSTRUCTURED)


def _plan_n_m(site: WeightSite, m: int) -> WeightPlan:
    if not site.structured or site.in_axis is None:
        reason = f"n:m applies to linear and conv weights only, not {site.kind.value}"
        return WeightPlan(site, None, reason, warn=True)
    channels = site.shape[site.in_axis]
    if m > channels:
        reason = f"m={m} exceeds the {channels} input channels (axis {site.in_axis})"
        return WeightPlan(site, None, reason, warn=True)
    return WeightPlan(site, Mode.N_M)


def _plan_block(site: WeightSite, block_size: int) -> WeightPlan:
    if not site.structured or site.out_axis is None:
        reason = (
            "block sparsity applies to linear and conv weights only; "
            f"{site.kind.value} weight pruned unstructured"
        )
        return WeightPlan(site, Mode.UNSTRUCTURED, reason, warn=True)
    channels = site.shape[site.out_axis]
    if block_size > channels:
        reason = (
            f"block_size={block_size} exceeds the {channels} output channels (axis {site.out_axis})"
        )
        return WeightPlan(site, None, reason, warn=True)
    return WeightPlan(site, Mode.BLOCK)


def expected_bytes(plan: WeightPlan) -> int:
    """The weight's expected stored bytes under ``plan`` (an estimate made without its data:
    values assumed non-zero, a partial n:m group counted as full).

    Dense: its own bytes. Compressed: the bit mask, plus the kept values in their storage
    type (the weight's float type, one byte each when quantized with a scale per output
    channel, ``nbits`` each plus a ``2**nbits`` LUT when palettized).
    """
    site, options = plan.site, plan.options
    itemsize = site.dtype.itemsize
    if plan.mode is None or options is None:
        return site.size * itemsize
    if options.n_m_ratio is not None and plan.mode is Mode.N_M:
        n, m = options.n_m_ratio
        kept = site.size - site.size * n // m
    else:
        kept = site.size - math.floor(site.size * (options.target_sparsity or 0.0))
    stored = -(-site.size // 8)
    if options.quantize_dtype is not None:
        channels = site.shape[site.out_axis] if site.out_axis is not None else 1
        return stored + kept + channels * itemsize
    if options.palettize_nbits is not None:
        nbits = options.palettize_nbits
        return stored + -(-kept * nbits // 8) + (1 << nbits) * itemsize
    return stored + kept * itemsize
