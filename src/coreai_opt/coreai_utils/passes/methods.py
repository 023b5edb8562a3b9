"""The three passes as interchangeable per-weight methods: check options, decide, encode.

``compress_to_size`` gives each weight its own method (sparsify, quantize or palettize) and
options; this table lets it run each pass's own checks, decisions and numerics on one weight
at a time, so a weight compressed by the mix is bit-identical to the same weight compressed
by its pass with the same options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.passes.compress import prune
from coreai_opt.coreai_utils.passes.control import OVERRIDABLE, SPARSIFY_CLEARS, apply_values
from coreai_opt.coreai_utils.passes.options import Algorithm, SparsifyOptions, validate_options
from coreai_opt.coreai_utils.passes.palettize import (
    decide_palettize,
    encode_palettized,
    palettize_weights,
)
from coreai_opt.coreai_utils.passes.palettize_options import (
    PALETTIZE_OVERRIDABLE,
    validate_palettize_options,
)
from coreai_opt.coreai_utils.passes.plan import Mode, WeightPlan, plan_weight
from coreai_opt.coreai_utils.passes.quantize import (
    decide_quantize,
    encode_quantized,
    quantize_weights,
)
from coreai_opt.coreai_utils.passes.quantize_options import (
    QUANTIZE_CLEARS,
    QUANTIZE_OVERRIDABLE,
    validate_quantize_options,
)
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded
from coreai_opt.coreai_utils.passes.sparsify import encode_pruned, sparsify_weights

__all__ = ["METHODS", "Method"]


@dataclass(frozen=True)
class Method:
    """One pass seen per weight: the option ``keys`` a configuration may set and the pass's
    ``defaults`` for them (its signature's), ``validate(calibrated=..., **options)`` (the
    pass's own checks, same errors), ``decide(site, options, calibration)`` (read-only),
    ``encode(weight, decision)`` (the numbers and how to store them) and ``clears`` (the
    options a value clears, as in an override)."""

    name: str
    keys: tuple[str, ...]
    defaults: Mapping[str, object]
    validate: Callable[..., Any]
    decide: Callable[[WeightSite, Any, Calibration | None], Decision]
    encode: Callable[[np.ndarray, Decision], Encoded]
    clears: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def options(self, values: Mapping[str, object], *, calibrated: bool) -> Any:
        """The validated options record: ``values`` over the pass's defaults. ``ValueError``
        (``TypeError`` for a wrong type) for an unknown key or a bad value."""
        unknown = sorted(set(values) - set(self.keys))
        if unknown:
            msg = (
                f"{self.name}: unknown option {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(self.keys)}"
            )
            raise ValueError(msg)
        merged = apply_values(self.defaults, values, self.clears)
        missing = sorted(k for k in self.keys if k not in merged)
        if missing:
            msg = f"{self.name}: option {', '.join(map(repr, missing))} must be set"
            raise ValueError(msg)
        return self.validate(calibrated=calibrated, **merged)


def _defaults(function: Callable[..., object], keys: tuple[str, ...]) -> Mapping[str, object]:
    parameters = inspect.signature(function).parameters
    return MappingProxyType(
        {
            key: parameters[key].default
            for key in keys
            if key in parameters and parameters[key].default is not inspect.Parameter.empty
        }
    )


def _decide_sparsify(
    site: WeightSite, options: SparsifyOptions, calibration: Calibration | None
) -> Decision:
    plan = plan_weight(site, options, calibration)
    return Decision(
        site,
        plan.mode.value if plan.mode is not None else None,
        plan.reason,
        plan.warn,
        options,
        plan.algorithm.value,
        plan.stats,
    )


def _encode_sparsify(weight: np.ndarray, decision: Decision) -> Encoded:
    plan = WeightPlan(
        decision.site,
        Mode(decision.mode or Mode.UNSTRUCTURED),
        decision.reason,
        decision.warn,
        Algorithm(decision.algorithm or Algorithm.MAGNITUDE),
        decision.stats,
        decision.options,
    )
    encoded, _ = encode_pruned(prune(weight, plan, decision.options), plan)
    return encoded


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "sparsify": Method(
            "sparsify",
            OVERRIDABLE,
            _defaults(sparsify_weights, OVERRIDABLE),
            validate_options,
            _decide_sparsify,
            _encode_sparsify,
            SPARSIFY_CLEARS,
        ),
        "quantize": Method(
            "quantize",
            QUANTIZE_OVERRIDABLE,
            _defaults(quantize_weights, QUANTIZE_OVERRIDABLE),
            validate_quantize_options,
            decide_quantize,
            encode_quantized,
            QUANTIZE_CLEARS,
        ),
        "palettize": Method(
            "palettize",
            PALETTIZE_OVERRIDABLE,
            _defaults(palettize_weights, PALETTIZE_OVERRIDABLE),
            validate_palettize_options,
            decide_palettize,
            encode_palettized,
        ),
    }
)
"""The passes by name."""
