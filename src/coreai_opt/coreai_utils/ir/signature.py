"""The inputs of a program's graphs: names, static shapes, element types, index bounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coreai._compiler.ir import (
    DictAttr,
    IntegerType,
    Module,
    Operation,
    StringAttr,
    Type,
    Value,
)

from coreai_opt.coreai_utils.ir.constants import float_dtype, tensor_type
from coreai_opt.coreai_utils.ir.weights import walk

__all__ = ["InputSpec", "graph_inputs", "graph_names", "graphs_by_path", "runtime_function"]

# ops through which an index tensor keeps its values (only its shape or layout changes)
_VALUE_PRESERVING = frozenset(
    {
        "coreai.reshape",
        "coreai.expand_dims",
        "coreai.shrink_dims",
        "coreai.transpose",
        "coreai.broadcast_to",
        "coreai.broadcast_in_dims",
        "coreai.cast",
        "coreai.slice_",
        "coreai.tile",
        "coreai.concat",
    },
)


@dataclass(frozen=True)
class InputSpec:
    """One graph input. ``high`` bounds integer inputs that index tables: valid values are
    ``[0, high)``; None when nothing bounds them."""

    name: str
    shape: tuple[int, ...] | None
    dtype: np.dtype | None
    high: int | None


def _dtype(element: Type) -> np.dtype | None:
    """numpy dtype of a float (f32/f16/bf16) or integer element type; None otherwise."""
    if IntegerType.isinstance(element):
        integer = IntegerType(element)
        if integer.width == 1:
            return np.dtype(np.bool_)
        kind = "u" if integer.is_unsigned else "i"
        return np.dtype(f"{kind}{max(1, integer.width // 8)}")
    return float_dtype(element)


def graphs_by_path(module: Module) -> dict[str, Operation]:
    """Graphs by dotted path: ``main``, or ``ns.inner`` inside ``udml.namespace @ns``."""
    graphs = {}
    for op, scope in walk(module.operation):
        if op.name == "coreai.graph" and "sym_name" in op.attributes:
            name = str(op.attributes["sym_name"]).strip('"')
            graphs[f"{scope}.{name}" if scope else name] = op
    return graphs


def graph_names(module: Module) -> list[str]:
    """Dotted paths of the public (non-private) graphs of the module, in IR order."""
    return [name for name, op in graphs_by_path(module).items() if "priv" not in op.attributes]


def runtime_function(path: str) -> str:
    """The name the Core AI runtime gives the graph at dotted ``path`` (``ns.inner`` ->
    ``ns_inner``)."""
    return path.replace(".", "_")


def _index_bound(value: Value, seen: set[int] | None = None) -> int | None:
    """Smallest table extent that ``value`` indexes through ``gather_nd``, if any."""
    seen = set() if seen is None else seen
    bounds: list[int] = []
    for use in value.uses:
        owner = use.owner.operation
        if id(owner) in seen:
            continue
        seen.add(id(owner))
        if owner.name == "coreai.gather_nd" and use.operand_number == 1:
            table = tensor_type(owner.operands[0].type)
            indices = tensor_type(value.type)
            if table is not None and indices is not None and indices.shape:
                depth = indices.shape[-1]
                bounds.extend(table.shape[:depth])
        elif owner.name in _VALUE_PRESERVING:
            inner = _index_bound(owner.results[0], seen)
            if inner is not None:
                bounds.append(inner)
    return min(bounds) if bounds else None


def graph_inputs(module: Module, name: str) -> list[InputSpec]:
    """The inputs of the graph at dotted path ``name`` in order; ``KeyError`` if unknown."""
    graphs = graphs_by_path(module)
    if name not in graphs:
        msg = f"no graph named {name!r}; the module has {sorted(graphs)}"
        raise KeyError(msg)
    graph = graphs[name]
    arguments = graph.regions[0].blocks[0].arguments
    attrs = graph.attributes["arg_attrs"] if "arg_attrs" in graph.attributes else None  # noqa: SIM401
    specs = []
    for index, argument in enumerate(arguments):
        arg_name = f"input_{index}"
        if attrs is not None:
            entry = DictAttr(attrs[index])
            if "coreai.name" in entry:
                arg_name = StringAttr(entry["coreai.name"]).value
        ranked = tensor_type(argument.type)
        dtype = _dtype(ranked.element_type) if ranked is not None else None
        high = _index_bound(argument) if dtype is not None and dtype.kind in "iu" else None
        specs.append(
            InputSpec(
                name=arg_name,
                shape=tuple(ranked.shape) if ranked is not None else None,
                dtype=dtype,
                high=high,
            ),
        )
    return specs
