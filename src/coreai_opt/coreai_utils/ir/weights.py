"""Find the weight constants of a module, what consumes them, and their channel axes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from coreai._compiler.ir import Module, Operation, Value

from coreai_opt.coreai_utils.ir.constants import float_dtype, int_operand, tensor_type
from coreai_opt.coreai_utils.ir.names import source_info, unique_paths

__all__ = [
    "CONVS",
    "CONV_TRANSPOSES",
    "GATHERS",
    "MATMULS",
    "TRANSPOSE",
    "LayerKind",
    "WeightSite",
    "find_weights",
    "walk",
]

MATMULS = frozenset({"coreai.batch_matmul", "coreai.decomposable.broadcasting_batch_matmul"})
CONVS = frozenset({"coreai.conv2d", "coreai.conv3d"})
CONV_TRANSPOSES = frozenset({"coreai.conv_transpose2d", "coreai.conv_transpose3d"})
GATHERS = frozenset({"coreai.gather_nd"})
TRANSPOSE = "coreai.transpose"


class LayerKind(StrEnum):
    """How a weight is used, which decides the structured modes that apply to it."""

    LINEAR = "linear"
    CONV = "conv"
    EMBEDDING = "embedding"
    OTHER = "other"


@dataclass(frozen=True)
class _Use:
    kind: LayerKind
    out_axis: int | None
    in_axis: int | None
    structured: bool = False  # a matmul or convolution reads it (tied: also a lookup)


@dataclass(frozen=True)
class WeightSite:
    """A float constant whose every consumer is a weight-consuming op.

    ``id`` is ``@<graph symbol path>/w<k>``, the k-th weight of that graph in IR order (stable
    for a program; calibration statistics are keyed by it); ``name`` is the id followed by
    `` at file:line:col`` when the op's location names a source file (the model's own code
    rather than torch's when both are recorded). ``path`` is the readable name: the module
    call stack recorded by coreai-torch, outermost first, joined with ``/``
    (``BertModel$1/BertEncoder$1/BertLayer$3/.../Linear$2``), else the id; unique within the
    program (a repeated call stack gets ``#2``, ``#3``... in IR order). ``source`` is the
    innermost user-source location as ``file.py:line``, or None.

    ``out_axis``/``in_axis`` are axes of the constant itself (after mapping through any
    transposes), or None when the consumers do not determine them or disagree.

    ``kind`` is ``embedding`` for a table read by ``gather_nd``, also when a matmul reads it
    too (a tied embedding / LM head, as small language models have); ``structured`` says
    whether a matmul or convolution reads it along known axes, so that the structured
    sparsity modes (n:m, block) apply: true for linear and conv weights and for a tied
    embedding / head.
    """

    op: Operation
    id: str
    name: str
    path: str
    source: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    consumers: tuple[str, ...]
    kind: LayerKind
    out_axis: int | None
    in_axis: int | None
    structured: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """The weight's bytes, dense in its own type."""
        return self.size * self.dtype.itemsize


def _symbol(op: Operation) -> str | None:
    if "sym_name" not in op.attributes:
        return None
    return str(op.attributes["sym_name"]).strip('"')


def walk(operation: Operation, scope: str = "") -> Iterator[tuple[Operation, str]]:
    """Every op nested in ``operation`` with the dotted symbol path of its enclosing graph."""
    for region in operation.regions:
        for block in region.blocks:
            for child in block.operations:
                op = child.operation
                yield op, scope
                symbol = _symbol(op)
                inner = f"{scope}.{symbol}" if scope and symbol else symbol or scope
                yield from walk(op, inner)


def _uses_of(value: Value) -> list[_Use] | None:
    """How each use of ``value`` consumes it as a weight; None if some use is not a weight use.

    Weight uses (the spec's ``_OPS_WEIGHT_NEED_COMPRESSION``): either operand of a matmul,
    the weight of a (transposed) convolution, the table of ``gather_nd``, a ``transpose``.
    """
    ranked = tensor_type(value.type)
    rank = len(ranked.shape) if ranked is not None else 0
    uses: list[_Use] = []
    for operand in value.uses:
        owner = operand.owner.operation
        name, index = owner.name, operand.operand_number
        if name in MATMULS and rank >= 2:
            # y = x @ w: w is [..., in, out]; y = w @ x: w is [..., out, in].
            out_axis, in_axis = (rank - 1, rank - 2) if index == 1 else (rank - 2, rank - 1)
            uses.append(_Use(LayerKind.LINEAR, out_axis, in_axis, structured=True))
        elif name in CONVS and index == 1:
            uses.append(_Use(LayerKind.CONV, 0, 1, structured=True))
        elif name in CONV_TRANSPOSES and index == 1:
            uses.append(_Use(LayerKind.CONV, 1, 0, structured=True))
        elif name in GATHERS and index == 0:
            uses.append(_Use(LayerKind.EMBEDDING, 0, 1 if rank >= 2 else None))
        elif name == TRANSPOSE and index == 0:
            uses.append(_through_transpose(owner))
        else:
            return None
    return uses


def _through_transpose(op: Operation) -> _Use:
    """The use of a transpose's input, from how its result is used (axes mapped back)."""
    perm = int_operand(op, 1)
    inner = _uses_of(op.results[0])
    if perm is None or not inner:
        return _Use(LayerKind.OTHER, None, None)
    merged = _merge(inner)

    def back(axis: int | None) -> int | None:
        return None if axis is None else perm[axis]

    return _Use(
        merged.kind, back(merged.out_axis), back(merged.in_axis), structured=merged.structured
    )


def _merge(uses: list[_Use]) -> _Use:
    """One use for all: axes only when every use agrees; ``embedding`` when a lookup reads
    it (even beside a matmul: a tied embedding / head), else conv, else linear."""
    kinds = {u.kind for u in uses}
    axes = {(u.out_axis, u.in_axis) for u in uses}
    if len(axes) != 1 or LayerKind.OTHER in kinds:
        return _Use(LayerKind.OTHER, None, None)
    out_axis, in_axis = axes.pop()
    structured = any(u.structured for u in uses)
    for kind in (LayerKind.EMBEDDING, LayerKind.CONV, LayerKind.LINEAR):
        if kind in kinds:
            return _Use(kind, out_axis, in_axis, structured=structured)
    return _Use(LayerKind.OTHER, None, None)


def find_weights(module: Module) -> list[WeightSite]:
    """Every float (f32/f16/bf16), statically shaped constant used only as a weight.

    Walks all graphs of the module, nested regions included, in IR order. Constants with
    no uses, integer constants and constants with any other consumer are not listed.
    """
    sites: list[WeightSite] = []
    ordinals: dict[str, int] = {}
    for op, scope in walk(module.operation):
        if op.name != "coreai.constant" or len(op.results) != 1:
            continue
        result = op.results[0]
        ranked = tensor_type(result.type)
        dtype = float_dtype(ranked.element_type) if ranked else None
        if ranked is None or dtype is None:
            continue
        uses = _uses_of(result)
        if not uses:
            continue
        merged = _merge(uses)
        ordinal = ordinals[scope] = ordinals.get(scope, -1) + 1
        name = f"@{scope or 'module'}/w{ordinal}"
        info = source_info(op)
        consumers = tuple(sorted({operand.owner.operation.name for operand in result.uses}))
        sites.append(
            WeightSite(
                op=op,
                id=name,
                name=f"{name} at {info.location}" if info.location else name,
                path=info.path or name,
                source=info.source,
                shape=tuple(ranked.shape),
                dtype=dtype,
                consumers=consumers,
                kind=merged.kind,
                out_axis=merged.out_axis,
                in_axis=merged.in_axis,
                structured=merged.structured,
            ),
        )
    paths = unique_paths([site.path for site in sites])
    return [replace(site, path=path) for site, path in zip(sites, paths, strict=True)]
