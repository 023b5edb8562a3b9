"""Compress to a size: weigh every candidate configuration per weight, allocate, check, apply."""

from __future__ import annotations

from coreai_opt.coreai_utils.passes.auto.candidates import DEFAULT_CANDIDATES, Candidate
from coreai_opt.coreai_utils.passes.auto.check import DEFAULT_CHECKS, check_plan
from coreai_opt.coreai_utils.passes.auto.plan import CheckedRun, SizePlan, Weighing, WeightChoice
from coreai_opt.coreai_utils.passes.auto.size import (
    SizeResult,
    apply_choices,
    apply_plan,
    compress_to_size,
    compress_to_size_with_report,
    plan_to_size,
    weigh_candidates,
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_CHECKS",
    "Candidate",
    "CheckedRun",
    "SizePlan",
    "SizeResult",
    "Weighing",
    "WeightChoice",
    "apply_choices",
    "apply_plan",
    "check_plan",
    "compress_to_size",
    "compress_to_size_with_report",
    "plan_to_size",
    "weigh_candidates",
]
