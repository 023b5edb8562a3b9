"""The skeleton the dense-weight passes share: decide per weight (read-only), then compress
and rewrite each one (the only mutation), with warnings and one outcome per weight."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from coreai._compiler.ir import Operation, Value
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.ir.rewrite import replace_constant
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError
from coreai_opt.coreai_utils.passes.outcomes import (
    COMPRESS_ERRORS,
    SparsifyResult,
    WeightOutcome,
    below_threshold,
    read_weight,
    warn_weight,
    working_copy,
)

__all__ = ["Decision", "Encoded", "decide_all", "run_weight_pass"]


@dataclass(frozen=True)
class Decision:
    """What to do with one weight: ``mode`` (the granularity used), or None to leave it
    dense with ``reason``; ``reason`` with ``warn`` also notes a fallback."""

    site: WeightSite
    mode: str | None
    reason: str | None = None
    warn: bool = False


@dataclass(frozen=True)
class Encoded:
    """A compressed weight: how to emit its chain, its storage name, its stored bytes."""

    emit: Callable[[Operation], Value]
    joint: str
    bytes_after: int


def decide_all(
    program: AIProgram, threshold: int, decide: Callable[[WeightSite], Decision]
) -> list[Decision]:
    """One decision per candidate weight (read-only): below ``threshold``, or without
    elements, it stays dense."""
    module = program._module._mlir_module  # noqa: SLF001
    decisions = []
    for site in find_weights(module):
        reason = below_threshold(site, threshold)
        decisions.append(decide(site) if reason is None else Decision(site, None, reason))
    return decisions


def run_weight_pass(
    program: AIProgram,
    *,
    in_place: object,
    threshold: int,
    decide: Callable[[WeightSite], Decision],
    encode: Callable[[np.ndarray, Decision], Encoded],
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """Copy ``program`` unless ``in_place``, then decide and encode every candidate weight."""
    target = working_copy(program, in_place)
    module = target._module._mlir_module  # noqa: SLF001
    decisions = decide_all(target, threshold, decide)
    outcomes: list[WeightOutcome] = []
    with module.context:
        for decision in decisions:
            if decision.warn:
                warn_weight(decision.site, decision.reason)
            outcome = _apply(decision, encode) if decision.mode else _outcome(decision)
            outcomes.append(outcome)
            if on_weight is not None:
                on_weight(len(outcomes), len(decisions), outcome)
        module.operation.verify()
    return SparsifyResult(target, tuple(outcomes))


def _apply(decision: Decision, encode: Callable[[np.ndarray, Decision], Encoded]) -> WeightOutcome:
    site = decision.site
    # the numerics find NaN and Inf in the reductions they compute anyway: one read less
    weight = read_weight(site, check_finite=False)
    if isinstance(weight, str):
        return _skip(decision, weight)
    try:
        encoded = encode(weight, decision)
    except NonFiniteError as error:
        return _skip(decision, str(error))
    except COMPRESS_ERRORS as error:
        return _skip(decision, f"could not compress: {type(error).__name__}: {error}")
    del weight
    replace_constant(site.op, encoded.emit(site.op))
    return _outcome(decision, encoded)


def _skip(decision: Decision, reason: str) -> WeightOutcome:
    warn_weight(decision.site, f"{reason}; left dense")
    return _outcome(Decision(decision.site, None, reason))


def _outcome(decision: Decision, encoded: Encoded | None = None) -> WeightOutcome:
    site = decision.site
    before = site.size * site.dtype.itemsize
    return WeightOutcome.of(
        site,
        mode=decision.mode if encoded is not None else None,
        joint=encoded.joint if encoded is not None else None,
        reason=decision.reason,
        sparsity=None,
        bytes_before=before,
        bytes_after=encoded.bytes_after if encoded is not None else before,
        algorithm=None,
    )
