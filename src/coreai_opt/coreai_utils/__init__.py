"""Core AI program utilities: ``sparsify_weights`` and the storage ``DType``s.

The pass is imported lazily, so ``DType`` and ``coreai_opt.coreai_utils.numerics`` can be
used without loading the Core AI bindings.

Public surface:
  * ``sparsify_weights`` (the spec'd API) and ``sparsify_with_report`` (same arguments,
    returns a ``SparsifyResult``: the program and one ``WeightOutcome`` per candidate);
  * ``collect_calibration`` and ``Calibration``: activation statistics from the runtime for
    calibration-aware pruning (``algorithm="wanda"`` or ``"sparsegpt"``);
  * ``quantize_weights`` and ``palettize_weights`` (and their ``*_with_report``): the
    sibling passes for dense weights; ``QScheme`` and ``CompressionGranularity``;
  * ``compress_to_size`` (and ``compress_to_size_with_report``, ``plan_to_size``; its
    steps ``weigh_candidates`` -> ``Weighing.plan`` -> ``check_plan`` -> ``apply_plan``, and
    ``apply_choices``): the most accurate per-weight mix of the three passes within a byte
    budget, from the ``Candidate`` configurations (``DEFAULT_CANDIDATES`` by default);
  * ``DType``;
  * modules ``runtime`` (run a saved asset) and ``validation`` (seeded example inputs,
    output comparison).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.schemes import CompressionGranularity, QScheme

if TYPE_CHECKING:
    from coreai_opt.coreai_utils.calibration import Calibration, collect_calibration
    from coreai_opt.coreai_utils.passes.auto import (
        DEFAULT_CANDIDATES,
        Candidate,
        SizePlan,
        SizeResult,
        Weighing,
        apply_choices,
        apply_plan,
        check_plan,
        compress_to_size,
        compress_to_size_with_report,
        plan_to_size,
        weigh_candidates,
    )
    from coreai_opt.coreai_utils.passes.palettize import palettize_weights, palettize_with_report
    from coreai_opt.coreai_utils.passes.quantize import quantize_weights, quantize_with_report
    from coreai_opt.coreai_utils.passes.sparsify import (
        SparsifyResult,
        WeightOutcome,
        sparsify_weights,
        sparsify_with_report,
    )

__all__ = [
    "DEFAULT_CANDIDATES",
    "Calibration",
    "Candidate",
    "CompressionGranularity",
    "DType",
    "QScheme",
    "SizePlan",
    "SizeResult",
    "SparsifyResult",
    "Weighing",
    "WeightOutcome",
    "apply_choices",
    "apply_plan",
    "check_plan",
    "collect_calibration",
    "compress_to_size",
    "compress_to_size_with_report",
    "palettize_weights",
    "palettize_with_report",
    "plan_to_size",
    "quantize_weights",
    "quantize_with_report",
    "sparsify_weights",
    "sparsify_with_report",
    "weigh_candidates",
]

_LAZY = {"SparsifyResult", "WeightOutcome", "sparsify_weights", "sparsify_with_report"}
_CALIBRATION = {"Calibration", "collect_calibration"}
_QUANTIZE = {"quantize_weights", "quantize_with_report"}
_PALETTIZE = {"palettize_weights", "palettize_with_report"}
_AUTO = {
    "DEFAULT_CANDIDATES",
    "Candidate",
    "SizePlan",
    "SizeResult",
    "Weighing",
    "apply_choices",
    "apply_plan",
    "check_plan",
    "compress_to_size",
    "compress_to_size_with_report",
    "plan_to_size",
    "weigh_candidates",
}


def __getattr__(name: str) -> Any:
    if name in _AUTO:
        from coreai_opt.coreai_utils.passes import auto  # noqa: PLC0415

        return getattr(auto, name)
    if name in _PALETTIZE:
        from coreai_opt.coreai_utils.passes import palettize  # noqa: PLC0415

        return getattr(palettize, name)
    if name in _QUANTIZE:
        from coreai_opt.coreai_utils.passes import quantize  # noqa: PLC0415

        return getattr(quantize, name)
    if name in _CALIBRATION:
        from coreai_opt.coreai_utils import calibration  # noqa: PLC0415

        return getattr(calibration, name)
    if name in _LAZY:
        from coreai_opt.coreai_utils.passes import sparsify  # noqa: PLC0415

        return getattr(sparsify, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
