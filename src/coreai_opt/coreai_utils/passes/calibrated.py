"""What a calibration offers one weight: statistics that fit it, or why there are none.

Shared by the three passes (read-only): the sparsify plan (Wanda, SparseGPT), quantize
(GPTQ) and palettize (weighted k-means, OBS rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite
from coreai_opt.coreai_utils.memory import drop_array_pages
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout

__all__ = ["Offer", "check_calibration", "no_gram", "offered", "release"]


@dataclass(frozen=True)
class Offer:
    """The weight's ``stats`` (None when there are none that fit, ``why`` then says why and
    ``warn`` whether that deserves a warning), and ``note``: what the statistics leave out
    (consumers without an activation, padding kept), for the report."""

    stats: ActivationStats | None
    why: str | None = None
    warn: bool = False
    note: str | None = None


def _fits(site: WeightSite, stats: ActivationStats) -> bool:
    """Whether ``stats`` describe the inputs of a weight of this shape and axes."""
    if site.out_axis is None or site.in_axis is None:
        return False
    if stats.layout is StatsLayout.CONV:
        return (
            site.kind is LayerKind.CONV
            and (site.out_axis, site.in_axis) == (0, 1)
            and stats.columns == math.prod(site.shape[1:])
            and site.shape[0] % stats.groups == 0
        )
    if stats.layout is StatsLayout.LINEAR and len(site.shape) != 2:
        return False
    return stats.groups == 1 and stats.columns == site.shape[site.in_axis]


def offered(site: WeightSite, calibration: Calibration) -> Offer:
    """The statistics ``calibration`` has for ``site`` (module docstring)."""
    stats = calibration.stats.get(site.id)
    if stats is None:
        why = calibration.missing.get(site.id, "no calibration statistics for this weight")
        return Offer(None, why)
    if not _fits(site, stats):
        return Offer(None, "the calibration statistics do not fit this weight", warn=True)
    notes = [calibration.notes.get(site.id), calibration.unmasked.get(site.id)]
    return Offer(stats, note="; ".join(n for n in notes if n) or None)


def no_gram(stats: ActivationStats) -> str | None:
    """Why ``stats`` have no ``X^T X`` (None when they have one)."""
    if stats.gram is not None:
        return None
    if stats.layout is StatsLayout.CHANNELS:
        return "no X^T X (per-channel statistics only: transposed convolution)"
    return f"no X^T X ({stats.columns} input columns, above max_gram_channels)"


def check_calibration(calibration: object, sites: Sequence[WeightSite]) -> None:
    """``TypeError`` unless ``calibration`` is None or a :class:`Calibration`;
    ``ValueError`` when it was collected on another program: a weight it describes has
    another shape here, or none of its weights is in this program."""
    if calibration is None:
        return
    if not isinstance(calibration, Calibration):
        msg = f"calibration must be a Calibration or None, got {type(calibration).__name__}"
        raise TypeError(msg)
    by_id = {site.id: site for site in sites}
    for weight_id, shape in calibration.shapes.items():
        site = by_id.get(weight_id)
        if site is not None and tuple(site.shape) != tuple(shape):
            here = "x".join(map(str, site.shape))
            there = "x".join(map(str, shape))
            msg = (
                f"calibration is from another program: weight {weight_id} is {here} here "
                f"but {there} in the calibration"
            )
            raise ValueError(msg)
    known = set(calibration.stats) | set(calibration.missing)
    if known and sites and not known & set(by_id):
        msg = "calibration is from another program: none of its weights is in this program"
        raise ValueError(msg)


def release(stats: ActivationStats | None) -> None:
    """Give back the resident pages of ``stats`` read from a file (statistics parked by a
    capture with ``max_stats_bytes``): called once a weight is done with them, so that the
    pages of one weight's statistics are resident at a time. Others are left alone."""
    if stats is not None:
        drop_array_pages(stats.sq_sum, stats.gram)
