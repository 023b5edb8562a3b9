"""Per-weight control: ``exclude`` patterns and ``overrides``, resolved before any weight is read.

A pattern is an ``fnmatch`` glob (case-sensitive) matched against a weight's id
(``@main/w3``) and its readable path (``BertModel$1/.../Linear$2``), or a kind selector
``kind:linear``, ``kind:conv``, ``kind:embedding`` (``kind:other`` too). ``exclude`` wins over
``overrides``; among overrides the first matching pattern, in the mapping's order, wins.

The same rules serve every pass; a :class:`Schema` says which options a pass lets an
override set, which ones clear each other, and how the merged options are validated (with
the top-level arguments' own errors, prefixed with the pattern).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from coreai_opt.coreai_utils.arguments import ArgumentTypeError
from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite

__all__ = [
    "OVERRIDABLE",
    "SPARSIFY_CLEARS",
    "Control",
    "Rule",
    "Schema",
    "apply_values",
    "check_pattern",
    "dense_reason",
    "matches",
    "resolve",
    "resolve_all",
    "unmatched",
    "validate_control",
]

OptionsT = TypeVar("OptionsT")

OVERRIDABLE = (
    "target_sparsity",
    "n_m_ratio",
    "block_size",
    "quantize_dtype",
    "palettize_nbits",
    "weight_num_threshold",
    "algorithm",
)
"""The options of ``sparsify_weights`` an override may set."""

SPARSIFY_CLEARS: Mapping[str, tuple[str, ...]] = {
    "target_sparsity": ("n_m_ratio",),
    "n_m_ratio": ("target_sparsity", "block_size"),
    "block_size": ("n_m_ratio",),
    "quantize_dtype": ("palettize_nbits",),
    "palettize_nbits": ("quantize_dtype",),
}
"""Setting one of these in an override clears the others unless the override sets them too."""
_KIND = "kind:"
_log = logging.getLogger("coreai_opt.coreai_utils.passes")


@dataclass(frozen=True)
class Schema(Generic[OptionsT]):
    """What an override may do in one pass: the option ``keys`` it may set, the options a
    value ``clears`` (mutually exclusive ones), and ``validate`` (merged options -> the
    pass's options record, raising like the pass's own argument checks)."""

    keys: tuple[str, ...]
    validate: Callable[[dict[str, object]], OptionsT]
    clears: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule(Generic[OptionsT]):
    """One override: the weights matching ``pattern`` get ``options``, or stay dense (None)."""

    pattern: str
    options: OptionsT | None


@dataclass(frozen=True)
class Control(Generic[OptionsT]):
    """Validated ``exclude`` patterns and override rules (in order)."""

    exclude: tuple[str, ...] = ()
    rules: tuple[Rule[OptionsT], ...] = ()

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.exclude + tuple(rule.pattern for rule in self.rules)


def check_pattern(pattern: object, where: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        msg = f"{where} must be a non-empty string pattern, got {pattern!r}"
        raise ArgumentTypeError(msg)
    if pattern.startswith(_KIND):
        kind = pattern[len(_KIND) :]
        if kind not in LayerKind._value2member_map_:
            allowed = ", ".join(f"{_KIND}{k.value}" for k in LayerKind)
            msg = f"{where}: unknown selector {pattern!r}; use one of {allowed}"
            raise ValueError(msg)
    return pattern


def matches(pattern: str, site: WeightSite) -> bool:
    """Whether ``pattern`` selects ``site`` (by kind, or by glob on its id or path)."""
    if pattern.startswith(_KIND):
        return site.kind.value == pattern[len(_KIND) :]
    return fnmatchcase(site.id, pattern) or fnmatchcase(site.path, pattern)


def apply_values(
    base: Mapping[str, object],
    values: Mapping[str, object],
    clears: Mapping[str, tuple[str, ...]] = SPARSIFY_CLEARS,
) -> dict[str, object]:
    """``base`` with ``values`` replacing its entries; a value for one of a mutually exclusive
    set clears the others unless ``values`` sets them too (``clears``; sparsify's by
    default: ``n_m_ratio`` clears ``target_sparsity`` and ``block_size``,
    ``target_sparsity`` and ``block_size`` clear ``n_m_ratio``, ``quantize_dtype`` and
    ``palettize_nbits`` clear each other)."""
    merged = dict(base)
    for key in values:
        for cleared in clears.get(key, ()):
            if cleared not in values:
                merged[cleared] = None
    merged.update(values)
    return merged


def validate_control(
    exclude: object,
    overrides: object,
    base: Mapping[str, object],
    schema: Schema[OptionsT],
) -> Control[OptionsT]:
    """Check ``exclude`` and ``overrides`` against the call's options ``base``.

    Each override's merged options are validated exactly like the top-level arguments
    (``schema.validate``); the error names the pattern. Raises ``TypeError`` (also a
    ``ValueError``) or ``ValueError``.
    """
    if isinstance(exclude, str):
        exclude = (exclude,)
    if not isinstance(exclude, Iterable):
        msg = f"exclude must be an iterable of patterns, got {exclude!r}"
        raise ArgumentTypeError(msg)
    excluded = tuple(check_pattern(p, "exclude pattern") for p in exclude)
    if overrides is None:
        return Control(excluded, ())
    if not isinstance(overrides, Mapping):
        msg = f"overrides must be a mapping of pattern -> options or None, got {overrides!r}"
        raise ArgumentTypeError(msg)
    rules: list[Rule[OptionsT]] = []
    for pattern, values in overrides.items():
        check_pattern(pattern, "overrides key")
        if values is None:
            rules.append(Rule(pattern, None))
            continue
        if not isinstance(values, Mapping):
            msg = f"overrides[{pattern!r}] must be a mapping of options or None, got {values!r}"
            raise ArgumentTypeError(msg)
        unknown = sorted(str(k) for k in values if k not in schema.keys)
        if unknown:
            msg = (
                f"overrides[{pattern!r}]: unknown option {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(schema.keys)}"
            )
            raise ValueError(msg)
        merged = apply_values(base, {str(k): v for k, v in values.items()}, schema.clears)
        try:
            options = schema.validate(merged)
        except ArgumentTypeError as error:
            raise ArgumentTypeError(f"overrides[{pattern!r}]: {error}") from None
        except ValueError as error:
            raise ValueError(f"overrides[{pattern!r}]: {error}") from None
        rules.append(Rule(pattern, options))
    return Control(excluded, tuple(rules))


def resolve(
    site: WeightSite, control: Control[OptionsT], options: OptionsT
) -> tuple[OptionsT | None, str | None]:
    """``(options, pattern)``: the options for ``site`` (None: leave it dense) and the pattern
    that decided them (None when the call's own options apply)."""
    for pattern in control.exclude:
        if matches(pattern, site):
            return None, pattern
    for rule in control.rules:
        if matches(rule.pattern, site):
            return rule.options, rule.pattern
    return options, None


def dense_reason(control: Control[OptionsT], pattern: str) -> str:
    """Why a weight that ``pattern`` leaves dense stays dense (for its report row)."""
    if pattern in control.exclude:
        return f"excluded by {pattern}"
    return f"left dense by override {pattern}"


def resolve_all(
    sites: list[WeightSite], control: Control[OptionsT], options: OptionsT
) -> list[tuple[WeightSite, OptionsT | None, str | None]]:
    """:func:`resolve` for every weight, in order; logs a warning for each pattern that
    matches no weight."""
    for unused in unmatched(control, sites):
        _log.warning("pattern %r (exclude/overrides) matches no weight", unused)
    return [(site, *resolve(site, control, options)) for site in sites]


def unmatched(control: Control[OptionsT], sites: list[WeightSite]) -> list[str]:
    """The patterns of ``control`` that select no weight, in order."""
    return [p for p in control.patterns if not any(matches(p, s) for s in sites)]
