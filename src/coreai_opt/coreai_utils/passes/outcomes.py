"""What a pass reports per weight, and the small checks every pass shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.ir.weights import WeightSite

__all__ = ["SparsifyResult", "WeightOutcome", "check_program", "warn_weight"]

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
