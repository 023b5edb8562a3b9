"""The configurations ``compress_to_size`` chooses from: plain options records of the passes.

A :class:`Candidate` names a pass (``sparsify``, ``quantize`` or ``palettize``) and the
options of that pass it sets (the keyword arguments of ``sparsify_weights`` and so on, values
as the pass takes them: ``DType.INT4`` or ``"int4"``); the pass's defaults fill the rest.
``match`` restricts it to some weights (patterns as in ``exclude``: globs on a weight's id
or path, or ``kind:`` selectors). ``weight_num_threshold`` is the call's, never a
candidate's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from coreai_opt.coreai_utils.arguments import ArgumentTypeError
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.passes.control import check_pattern, matches
from coreai_opt.coreai_utils.passes.methods import METHODS, Method

__all__ = [
    "CALIBRATED_ALGORITHMS",
    "DEFAULT_CANDIDATES",
    "Candidate",
    "Resolved",
    "resolve_candidates",
]


@dataclass(frozen=True)
class Candidate:
    """One configuration: ``name`` (unique, for the report), the pass (``method``), the
    options it sets, and the weights it is offered to (``match``; empty: every weight)."""

    name: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    match: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.match, str):  # one pattern
            object.__setattr__(self, "match", (self.match,))


def _grouped(n_bits: int) -> dict[str, Any]:
    return {"n_bits": n_bits, "granularity": "per_grouped_channel", "group_size": 16}


DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("int8", "quantize", {"dtype": "int8", "granularity": "per_channel"}),
    Candidate("palettize6", "palettize", _grouped(6)),
    Candidate("int4-block32", "quantize", {"dtype": "int4", "granularity": "per_block"}),
    Candidate("palettize4", "palettize", _grouped(4)),
    Candidate("int4", "quantize", {"dtype": "int4", "granularity": "per_channel"}),
    Candidate("palettize3", "palettize", _grouped(3)),
    Candidate("50%+int8", "sparsify", {"target_sparsity": 0.5, "quantize_dtype": "int8"}),
    Candidate("75%+int8", "sparsify", {"target_sparsity": 0.75, "quantize_dtype": "int8"}),
)
"""The default ladder, most to least accurate in bits per weight (dense is always offered):
int8 per channel (8 bits), palettize 6 bits (LUTs per 16 output channels), int4 per block of
32 inputs (4 bits and a scale per 32), palettize 4 bits grouped, int4 per channel, palettize
3 bits grouped, and pruning with int8 values (a 1-bit mask plus 8 bits per kept value):
50 % (5 bits) and 75 % (3 bits). Where the kind of a weight rules one out (an n:m candidate
on an embedding table read only by ``gather_nd``), it is skipped for that weight and the
report says why.

2:4 pruning is not in the ladder: it stores exactly the bytes of 50 % (a mask bit per value,
half the values kept) and every 2:4 mask is a 50 % mask, so its error is no lower and the
allocation never chose it on the bench models; weighing it cost a SparseGPT sweep per
weight (each non-LUT candidate alone took 7.7-10.0 s of SmolLM2-135M's weighing). Add it
(``n_m_ratio=(2, 4)``) where the hardware runs 2:4 faster; ``auto`` weighs only bytes and
error."""

CALIBRATED_ALGORITHMS: Mapping[str, str] = MappingProxyType({"sparsify": "sparsegpt"})
"""The algorithm a candidate that sets none gets when there is a calibration, where it is not
the pass's own default: SparseGPT for pruning (measured better than Wanda on every bench
model); GPTQ and OBS rounding are quantize's and palettize's own calibrated defaults."""


@dataclass(frozen=True)
class Resolved:
    """A checked candidate: its pass and validated options record."""

    candidate: Candidate
    method: Method
    options: Any

    def offered_to(self, site: WeightSite) -> bool:
        patterns = self.candidate.match
        return not patterns or any(matches(p, site) for p in patterns)


def resolve_candidates(
    candidates: object, *, calibrated: bool, weight_num_threshold: int
) -> tuple[Resolved, ...]:
    """Check ``candidates`` (an iterable of :class:`Candidate`) and validate each one's
    options with its pass's own checks. ``ValueError`` (``TypeError`` for wrong types)
    naming the candidate: an empty list, a repeated name, an unknown pass or option, a bad
    value, a ``weight_num_threshold`` in a candidate, a bad ``match`` pattern."""
    if isinstance(candidates, (str, bytes, Mapping)) or not isinstance(candidates, Iterable):
        msg = f"candidates must be an iterable of Candidate, got {type(candidates).__name__}"
        raise ArgumentTypeError(msg)
    listed = list(candidates)
    if not listed:
        msg = "candidates is empty: give at least one configuration"
        raise ValueError(msg)
    resolved: list[Resolved] = []
    names: set[str] = set()
    for candidate in listed:
        if not isinstance(candidate, Candidate):
            msg = f"candidates must hold Candidate records, got {type(candidate).__name__}"
            raise ArgumentTypeError(msg)
        resolved.append(
            _resolve(
                candidate,
                calibrated=calibrated,
                threshold=weight_num_threshold,
                names=names,
            )
        )
    return tuple(resolved)


def _resolve(
    candidate: Candidate, *, calibrated: bool, threshold: int, names: set[str]
) -> Resolved:
    name = candidate.name
    if not isinstance(name, str) or not name or name == "dense":
        msg = f"candidate name must be a non-empty string other than 'dense', got {name!r}"
        raise ValueError(msg)
    if name in names:
        msg = f"candidate {name!r} appears twice"
        raise ValueError(msg)
    names.add(name)
    method = METHODS.get(candidate.method)
    if method is None:
        msg = (
            f"candidate {name!r}: unknown method {candidate.method!r}; "
            f"use one of {', '.join(METHODS)}"
        )
        raise ValueError(msg)
    if not isinstance(candidate.options, Mapping):
        msg = f"candidate {name!r}: options must be a mapping, got {candidate.options!r}"
        raise ArgumentTypeError(msg)
    values = dict(candidate.options)
    if "weight_num_threshold" in values:
        msg = f"candidate {name!r}: weight_num_threshold is the call's, not a candidate's"
        raise ValueError(msg)
    values["weight_num_threshold"] = threshold
    if calibrated and values.get("algorithm") is None and method.name in CALIBRATED_ALGORITHMS:
        values["algorithm"] = CALIBRATED_ALGORITHMS[method.name]
    try:
        for pattern in candidate.match:
            check_pattern(pattern, "match pattern")
        options = method.options(values, calibrated=calibrated)
    except ArgumentTypeError as error:
        raise ArgumentTypeError(f"candidate {name!r}: {error}") from None
    except ValueError as error:
        raise ValueError(f"candidate {name!r}: {error}") from None
    return Resolved(candidate, method, options)
