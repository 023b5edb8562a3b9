"""Decide, without touching the IR, what happens to each weight constant."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite
from coreai_opt.coreai_utils.passes.options import SparsifyOptions

__all__ = ["Mode", "WeightPlan", "plan_weight"]

_STRUCTURED_KINDS = (LayerKind.LINEAR, LayerKind.CONV)


class Mode(str, Enum):
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
        reason = f"{site.size} elements, below weight_num_threshold={options.weight_num_threshold}"
        return WeightPlan(site, None, reason)
    structured = site.kind in _STRUCTURED_KINDS
    if options.n_m_ratio is not None:
        n, m = options.n_m_ratio
        if not structured or site.in_axis is None:
            return WeightPlan(site, None, f"n:m applies to linear and conv weights only, not {site.kind.value}", warn=True)
        channels = site.shape[site.in_axis]
        if m > channels:
            return WeightPlan(site, None, f"m={m} exceeds the {channels} input channels (axis {site.in_axis})", warn=True)
        return WeightPlan(site, Mode.N_M)
    if options.block_size is not None:
        if not structured or site.out_axis is None:
            reason = f"block sparsity applies to linear and conv weights only; {site.kind.value} weight pruned unstructured"
            return WeightPlan(site, Mode.MAGNITUDE, reason, warn=True)
        channels = site.shape[site.out_axis]
        if options.block_size > channels:
            reason = f"block_size={options.block_size} exceeds the {channels} output channels (axis {site.out_axis})"
            return WeightPlan(site, None, reason, warn=True)
        return WeightPlan(site, Mode.BLOCK)
    return WeightPlan(site, Mode.MAGNITUDE)
