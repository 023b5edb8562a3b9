"""Compress to a size: weigh every candidate configuration per weight, allocate, apply."""

from __future__ import annotations

from coreai_opt.coreai_utils.passes.auto.candidates import DEFAULT_CANDIDATES, Candidate
from coreai_opt.coreai_utils.passes.auto.size import (
    SizePlan,
    SizeResult,
    WeightChoice,
    compress_to_size,
    compress_to_size_with_report,
    plan_to_size,
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "Candidate",
    "SizePlan",
    "SizeResult",
    "WeightChoice",
    "compress_to_size",
    "compress_to_size_with_report",
    "plan_to_size",
]
