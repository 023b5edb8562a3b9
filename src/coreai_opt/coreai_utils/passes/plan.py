"""Decide, without touching the IR, what happens to each weight constant."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite
from coreai_opt.coreai_utils.passes.options import SparsifyOptions

__all__ = ["Mode", "WeightPlan", "plan_weight"]

_STRUCTURED_KINDS = (LayerKind.LINEAR, LayerKind.CONV)


class Mode(StrEnum):
    """The pruning applied to a weight."""

    MAGNITUDE = "magnitude"
    BLOCK = "block"
    N_M = "n:m"


@dataclass(frozen=True)
class WeightPlan:
    """What to do with one weight: a ``mode``, or the ``reason`` it stays dense.

    ``warn`` says whether the reason (or a downgrade of the requested mode, also given in
    ``reason``) deserves a warning to the user.
    """

    site: WeightSite
    mode: Mode | None
    reason: str | None = None
    warn: bool = False


def plan_weight(site: WeightSite, options: SparsifyOptions) -> WeightPlan:
    """The plan for ``site`` under ``options``."""
    if site.size < options.weight_num_threshold:
        threshold = options.weight_num_threshold
        return WeightPlan(
            site, None, f"{site.size} elements, below weight_num_threshold={threshold}"
        )
    if options.n_m_ratio is not None:
        return _plan_n_m(site, options.n_m_ratio[1])
    if options.block_size is not None:
        return _plan_block(site, options.block_size)
    return WeightPlan(site, Mode.MAGNITUDE)


def _plan_n_m(site: WeightSite, m: int) -> WeightPlan:
    if site.kind not in _STRUCTURED_KINDS or site.in_axis is None:
        reason = f"n:m applies to linear and conv weights only, not {site.kind.value}"
        return WeightPlan(site, None, reason, warn=True)
    channels = site.shape[site.in_axis]
    if m > channels:
        reason = f"m={m} exceeds the {channels} input channels (axis {site.in_axis})"
        return WeightPlan(site, None, reason, warn=True)
    return WeightPlan(site, Mode.N_M)


def _plan_block(site: WeightSite, block_size: int) -> WeightPlan:
    if site.kind not in _STRUCTURED_KINDS or site.out_axis is None:
        reason = (
            "block sparsity applies to linear and conv weights only; "
            f"{site.kind.value} weight pruned unstructured"
        )
        return WeightPlan(site, Mode.MAGNITUDE, reason, warn=True)
    channels = site.shape[site.out_axis]
    if block_size > channels:
        reason = (
            f"block_size={block_size} exceeds the {channels} output channels (axis {site.out_axis})"
        )
        return WeightPlan(site, None, reason, warn=True)
    return WeightPlan(site, Mode.BLOCK)
