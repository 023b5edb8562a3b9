"""The skeleton the dense-weight passes share: decide per weight (read-only: ``exclude`` and
``overrides`` resolved, the granularity, the algorithm and its statistics), then compress
and rewrite each one (the only mutation), with warnings and one outcome per weight."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from coreai._compiler.ir import Operation, Value
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.rewrite import replace_constant
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.memory import BytecodePages, return_free_memory
from coreai_opt.coreai_utils.numerics.activations import ActivationStats
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError
from coreai_opt.coreai_utils.passes.calibrated import check_calibration, release
from coreai_opt.coreai_utils.passes.control import (
    Control,
    Schema,
    dense_reason,
    resolve_all,
    validate_control,
)
from coreai_opt.coreai_utils.passes.outcomes import (
    COMPRESS_ERRORS,
    SparsifyResult,
    WeightOutcome,
    below_threshold,
    check_program,
    read_weight,
    warn_weight,
    working_copy,
)

__all__ = [
    "Decision",
    "Encoded",
    "PassOptions",
    "PassSpec",
    "Planned",
    "Settings",
    "apply_each",
    "decide_all",
    "joined",
    "run_weight_pass",
]

OptionsT = TypeVar("OptionsT")


class PassOptions(Protocol):
    """What the skeleton reads of a pass's options record."""

    @property
    def weight_num_threshold(self) -> int: ...


@dataclass(frozen=True)
class Settings(Generic[OptionsT]):
    """Validated arguments of one call: the call's options, the control, the calibration."""

    options: OptionsT
    control: Control[OptionsT]
    calibration: Calibration | None


@dataclass(frozen=True)
class PassSpec(Generic[OptionsT]):
    """What the skeleton needs of a pass: the option names an override may set (``keys``),
    their checks (``validate(calibrated=..., **options)``, raising like the pass's own
    arguments), the options that clear each other (``clears``) and, for the dense-weight
    passes, the decision for one weight (``decide(site, options, calibration)``)."""

    keys: tuple[str, ...]
    validate: Callable[..., OptionsT]
    clears: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    decide: Callable[[WeightSite, OptionsT, Calibration | None], Decision] | None = None

    def schema(self, calibrated: bool) -> Schema[OptionsT]:  # noqa: FBT001
        """The control schema of a call with or without calibration."""

        def validate(merged: dict[str, object]) -> OptionsT:
            return self.validate(calibrated=calibrated, **merged)

        return Schema(self.keys, validate, self.clears)

    def settings(
        self,
        program: object,
        calibration: object,
        exclude: object,
        overrides: object,
        call: Mapping[str, object],
    ) -> Settings[OptionsT]:
        """Validate a call before anything is touched (``call``: its ``locals()``, holding
        the options): the program, the calibration (of this program), the options,
        ``exclude`` and ``overrides``. Raises ``TypeError`` or ``ValueError`` naming the
        argument."""
        check_program(program)
        module = program._module._mlir_module  # type: ignore[attr-defined]  # noqa: SLF001
        check_calibration(calibration, find_weights(module))
        arguments = {name: call[name] for name in self.keys}
        rules = self.schema(calibration is not None)
        options = rules.validate(dict(arguments))
        control = validate_control(exclude, overrides, arguments, rules)
        return Settings(options, control, calibration)  # type: ignore[arg-type]

    def decisions(self, program: AIProgram, settings: Settings[OptionsT]) -> list[Decision]:
        """One decision per candidate weight of ``program`` under ``settings``."""
        decide = self.decide
        if decide is None:
            msg = "this pass decides per weight on its own"
            raise TypeError(msg)
        return decide_all(
            program,
            settings.control,
            settings.options,  # type: ignore[arg-type]
            lambda site, options: decide(site, options, settings.calibration),
        )


@dataclass(frozen=True)
class Decision:
    """What to do with one weight: ``mode`` (the granularity used), or None to leave it
    dense with ``reason``; ``reason`` with ``warn`` also notes a fallback. ``options`` are
    the weight's own (the call's, or the override ``rule``'s), ``algorithm`` the one used
    and ``stats`` its calibration statistics (None when it needs none)."""

    site: WeightSite
    mode: str | None
    reason: str | None = None
    warn: bool = False
    options: Any = None
    algorithm: str | None = None
    stats: ActivationStats | None = None
    rule: str | None = None


@dataclass(frozen=True)
class Encoded:
    """A compressed weight: how to emit its chain, its storage name, its stored bytes, and
    ``decoded()``: the dense weight the runtime rebuilds from it (in the weight's dtype)."""

    emit: Callable[[Operation], Value]
    joint: str
    bytes_after: int
    decoded: Callable[[], np.ndarray]


def joined(*parts: str | None) -> str | None:
    """The non-empty ``parts`` joined with ``; `` (None when there are none)."""
    return "; ".join(p for p in parts if p) or None


def decide_all(
    program: AIProgram,
    control: Control[Any],
    options: PassOptions,
    decide: Callable[[WeightSite, Any], Decision],
) -> list[Decision]:
    """One decision per candidate weight (read-only): ``exclude`` and ``overrides`` first,
    then below the weight's ``weight_num_threshold``, or without elements, it stays dense;
    else ``decide(site, its options)``."""
    module = program._module._mlir_module  # noqa: SLF001
    decisions = []
    for site, own, pattern in resolve_all(find_weights(module), control, options):
        if own is None:
            decisions.append(
                Decision(site, None, dense_reason(control, pattern or ""), rule=pattern)
            )
            continue
        reason = below_threshold(site, own.weight_num_threshold)
        decision = decide(site, own) if reason is None else Decision(site, None, reason)
        decisions.append(replace(decision, options=own, rule=pattern))
    return decisions


def run_weight_pass(
    program: AIProgram,
    *,
    in_place: object,
    decide: Callable[[AIProgram], list[Decision]],
    encode: Callable[[np.ndarray, Decision], Encoded],
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """Copy ``program`` unless ``in_place``, then decide and encode every candidate weight;
    the C heap's free memory goes back to the system at the end (:mod:`~coreai_opt.
    coreai_utils.memory`)."""
    target = working_copy(program, in_place)
    decisions = decide(target)
    outcomes = apply_each(
        target, decisions, lambda d: _apply(d, encode), _outcome, on_weight=on_weight
    )
    return_free_memory()
    return SparsifyResult(target, tuple(outcomes))


class Planned(Protocol):
    """What :func:`apply_each` reads of a per-weight decision (a :class:`Decision`, or
    sparsify's :class:`~coreai_opt.coreai_utils.passes.plan.WeightPlan`)."""

    @property
    def site(self) -> WeightSite: ...
    @property
    def mode(self) -> object: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def warn(self) -> bool: ...
    @property
    def stats(self) -> ActivationStats | None: ...


PlannedT = TypeVar("PlannedT", bound=Planned)


def apply_each(
    program: AIProgram,
    planned: Sequence[PlannedT],
    apply: Callable[[PlannedT], WeightOutcome],
    dense: Callable[[PlannedT], WeightOutcome],
    *,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> list[WeightOutcome]:
    """The per-weight loop every pass shares, in ``program`` (changed in place): in
    order, warn where a decision asks, ``apply`` the ones with a mode (``dense`` for the
    others), release each weight's statistics once used, give the input's mapped pages
    back as weights are read (:class:`~coreai_opt.coreai_utils.memory.BytecodePages`),
    report progress; verify the module at the end. One outcome per decision."""
    module = program._module._mlir_module  # noqa: SLF001
    outcomes: list[WeightOutcome] = []
    pages = BytecodePages()
    with module.context:
        for item in planned:
            if item.warn:
                warn_weight(item.site, item.reason)
            outcome = apply(item) if item.mode else dense(item)
            release(item.stats)
            if item.mode:  # its weight was read, maybe from a mapped asset
                pages.read(item.site.nbytes)
            outcomes.append(outcome)
            if on_weight is not None:
                on_weight(len(outcomes), len(planned), outcome)
        module.operation.verify()
    return outcomes


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
    before = site.nbytes
    return WeightOutcome.of(
        site,
        mode=decision.mode if encoded is not None else None,
        joint=encoded.joint if encoded is not None else None,
        reason=decision.reason,
        sparsity=None,
        bytes_before=before,
        bytes_after=encoded.bytes_after if encoded is not None else before,
        algorithm=decision.algorithm if encoded is not None else None,
    )
