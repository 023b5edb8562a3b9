"""What a pass reports per weight, and the small checks every pass shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.ir.constants import read_constant
from coreai_opt.coreai_utils.ir.detach import detached_copy
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.memory import dropping_bytecode_pages
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError, all_finite

__all__ = [
    "COMPRESS_ERRORS",
    "SparsifyResult",
    "WeightOutcome",
    "below_threshold",
    "check_program",
    "read_weight",
    "warn_weight",
    "working_copy",
]

COMPRESS_ERRORS = (ArithmeticError, MemoryError, ValueError)
"""What compressing one weight may raise: the weight is then left dense with a warning."""

_log = logging.getLogger("coreai_opt.coreai_utils.passes")


@dataclass(frozen=True)
class WeightOutcome:
    """What happened to one candidate weight (a report row).

    ``name`` is the weight's id with its source location, ``id`` the stable ``@graph/wK``,
    ``path`` its readable name (module call stack, else the id), ``source`` the innermost
    user-source ``file.py:line`` (None when the program records none).

    ``mode`` (the pruning) is None when the weight stayed dense, and ``reason`` then says why;
    ``joint`` names the storage of the kept values (``int8``..., ``palettize4``), None when
    they keep the weight's dtype; a
    compressed weight may still carry a ``reason`` noting a downgrade (block -> unstructured).
    ``sparsity`` is the achieved fraction of zeros, None for weights left dense (not read).
    ``bytes_after`` counts the stored data (values, mask, and any quantization metadata).
    ``algorithm`` is how the pruned elements were chosen (``magnitude``, ``wanda``,
    ``sparsegpt``), None for weights left dense; a fallback from the requested algorithm
    is explained in ``reason``.
    """

    name: str
    id: str
    path: str
    source: str | None
    shape: tuple[int, ...]
    dtype: str
    consumers: tuple[str, ...]
    kind: str
    mode: str | None
    joint: str | None
    reason: str | None
    sparsity: float | None
    bytes_before: int
    bytes_after: int
    algorithm: str | None = None

    @classmethod
    def of(cls, site: WeightSite, **result: Any) -> WeightOutcome:
        """The outcome for ``site``: its identity and shape fields, plus ``result`` (mode,
        joint, reason, sparsity, bytes, algorithm)."""
        return cls(
            name=site.name,
            id=site.id,
            path=site.path,
            source=site.source,
            shape=site.shape,
            dtype=str(site.dtype),
            consumers=site.consumers,
            kind=site.kind.value,
            **result,
        )


@dataclass(frozen=True)
class SparsifyResult:
    """The sparsified program and one outcome per candidate weight, in IR order."""

    program: AIProgram
    weights: tuple[WeightOutcome, ...]


def check_program(program: object) -> None:
    """``TypeError`` unless ``program`` is an ``AIProgram``."""
    if not isinstance(program, AIProgram):
        kind = type(program).__name__
        msg = f"coreai_program must be a coreai.authoring.AIProgram, got {kind}"
        raise TypeError(msg)


def working_copy(program: AIProgram, in_place: object) -> AIProgram:
    """``program`` itself when ``in_place``, else a copy in a context of its own (so that
    the data the pass adds is freed with the copy: :mod:`~coreai_opt.coreai_utils.ir.
    detach`; the pages of mapped bytecode read to write it are given back as it goes);
    ``TypeError`` for a non-bool."""
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)
    if in_place:
        return program
    with dropping_bytecode_pages():
        return detached_copy(program)


def below_threshold(site: WeightSite, threshold: int) -> str | None:
    """Why ``site`` stays dense for its size (below ``weight_num_threshold``, or no elements:
    nothing to compress), or None when it is large enough."""
    if site.size < threshold:
        return f"{site.size} elements, below weight_num_threshold={threshold}"
    if site.size == 0:
        return "no elements"
    return None


def read_weight(site: WeightSite, *, check_finite: bool = True) -> np.ndarray | str:
    """The weight's data, or why it cannot be compressed (unreadable; NaN or Inf, unless
    ``check_finite`` is False: the caller's numerics raise ``NonFiniteError`` instead)."""
    try:
        weight = read_constant(site.op, site.dtype)
    except ValueError as error:
        return f"could not read the constant: {error}"
    if check_finite and not all_finite(weight):
        return NonFiniteError.reason
    return weight


def warn_weight(site: WeightSite, message: str | None) -> None:
    """A logging warning that names the weight (readable path, id and location, shape,
    consumers)."""
    label = site.name if site.path == site.id else f"{site.path} ({site.name})"
    _log.warning(
        "weight %s (%s -> %s): %s",
        label,
        "x".join(map(str, site.shape)),
        ", ".join(site.consumers),
        message,
    )
