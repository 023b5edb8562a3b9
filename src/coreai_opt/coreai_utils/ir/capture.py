"""Find the activation operand of every weight's consumers, and expose it as an extra output.

A *tap* is one activation value that multiplies a weight: the other operand of a matmul
(through the weight's transposes), the input of a convolution (already padded: Core AI
convolutions take a separately padded input), or the input of a transposed convolution.
:func:`find_taps` lists them per weight without touching the IR; :func:`expose_taps`
rewrites a (scratch) module so that an entry graph also returns them: a tap inside a
private graph is returned by that graph and threaded out through every ``coreai.invoke``
of it, up to the entry graph (one output per invocation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from coreai._compiler.ir import (
    ArrayAttr,
    DictAttr,
    FunctionType,
    InsertionPoint,
    Module,
    Operation,
    StringAttr,
    TypeAttr,
    Value,
)

from coreai_opt.coreai_utils.ir.constants import int_operand, tensor_type
from coreai_opt.coreai_utils.ir.signature import graphs_by_path
from coreai_opt.coreai_utils.ir.weights import (
    CONV_TRANSPOSES,
    CONVS,
    GATHERS,
    MATMULS,
    TRANSPOSE,
    WeightSite,
    walk,
)
from coreai_opt.coreai_utils.numerics.activations import StatsLayout

__all__ = ["Tap", "TapPlan", "expose_taps", "find_taps", "graph_path_of"]

_SYMBOL = re.compile(r"@([\w$.-]+)")


@dataclass(frozen=True)
class Tap:
    """One activation operand of a weight's consumer and how to reduce it.

    ``layout`` LINEAR: ``axis`` is the activation's contraction axis; CONV: ``kernel``,
    ``stride``, ``dilation``, ``groups`` of the convolution (input ``[N, C, spatial...]``);
    CHANNELS: ``axis`` is the channel axis. ``columns`` is the statistics' column count and
    ``groups`` their group count. ``graph`` is the dotted path of the graph holding it.
    """

    value: Value
    graph: str
    layout: StatsLayout
    axis: int
    columns: int
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[object, ...]:
        """Taps with equal keys reduce to the same statistics (q, k and v share an input)."""
        return (self.value, self.layout, self.axis, self.kernel, self.stride, self.dilation)

    @property
    def nbytes(self) -> int:
        ranked = tensor_type(self.value.type)
        if ranked is None:
            return 0
        bits = int(getattr(ranked.element_type, "width", 32))
        return int(math.prod(ranked.shape) * max(bits, 8) // 8)


@dataclass(frozen=True)
class TapPlan:
    """The taps of one weight, or the ``reason`` it has none the capture can see.

    A weight with several consumers is captured through those that have an activation; the
    others (a ``gather_nd`` lookup of a tied embedding, a consumer the capture does not
    see) contribute nothing and block nothing: ``note`` then says what was left out.
    """

    site: WeightSite
    taps: tuple[Tap, ...]
    reason: str | None
    note: str | None = None


def graph_path_of(op: Operation) -> str:
    """Dotted symbol path of the graph that holds ``op`` (``main``, ``ns.inner``)."""
    names: list[str] = []
    parent = op.parent
    while parent is not None and parent.name != "builtin.module":
        if "sym_name" in parent.attributes:
            names.append(StringAttr(parent.attributes["sym_name"]).value)
        parent = parent.parent
    return ".".join(reversed(names))


def _matmul_tap(owner: Operation, index: int, rank: int) -> Tap | str:
    if rank != 2:
        return f"a rank-{rank} matmul operand (batched weight) is not captured"
    other = owner.operands[1 - index]
    other_type = tensor_type(other.type)
    if other_type is None or len(other_type.shape) < 2:
        return "the matmul's activation has no static shape"
    # x @ w contracts the last axis of x; w @ x the one before it
    axis = len(other_type.shape) - 1 if index == 1 else len(other_type.shape) - 2
    graph = graph_path_of(owner)
    return Tap(other, graph, StatsLayout.LINEAR, axis, other_type.shape[axis])


def _conv_tap(owner: Operation, site: WeightSite) -> Tap | str:
    stride, dilation, groups = (int_operand(owner, i) for i in (2, 3, 4))
    if stride is None or dilation is None or groups is None:
        return "the convolution's stride, dilation or groups are not constants"
    kernel = site.shape[2:]
    return Tap(
        owner.operands[0],
        graph_path_of(owner),
        StatsLayout.CONV,
        1,
        site.shape[1] * math.prod(kernel),
        groups=groups[0],
        kernel=kernel,
        stride=stride,
        dilation=dilation,
    )


_LOOKUP = "the gather_nd lookup (no activation)"


def _use_taps(
    owner: Operation, index: int, rank: int, site: WeightSite, *, through_transpose: bool
) -> tuple[list[Tap], list[str]]:
    """Taps of one use of the weight (or of a transpose of it, ``through_transpose``), and
    why the uses without one have none."""
    name = owner.name
    found: Tap | str
    if name == TRANSPOSE and index == 0:
        return _taps_of(owner.results[0], site, through_transpose=True)
    if name in MATMULS:
        found = _matmul_tap(owner, index, rank)
    elif name in CONVS and index == 1 and not through_transpose:
        found = _conv_tap(owner, site)
    elif name in CONV_TRANSPOSES and index == 1 and not through_transpose:
        found = Tap(owner.operands[0], graph_path_of(owner), StatsLayout.CHANNELS, 1, site.shape[0])
    elif name in GATHERS:
        found = _LOOKUP
    else:
        found = f"used by {name}, which the capture does not see"
    return ([found], []) if isinstance(found, Tap) else ([], [found])


def _taps_of(
    value: Value, site: WeightSite, *, through_transpose: bool
) -> tuple[list[Tap], list[str]]:
    """Taps of every use of ``value`` (the weight, or a transpose of it), and the reasons of
    the uses without one."""
    ranked = tensor_type(value.type)
    rank = len(ranked.shape) if ranked is not None else 0
    taps: list[Tap] = []
    reasons: list[str] = []
    for operand in value.uses:
        found, why = _use_taps(
            operand.owner.operation,
            operand.operand_number,
            rank,
            site,
            through_transpose=through_transpose,
        )
        taps.extend(found)
        reasons.extend(why)
    return taps, reasons


def find_taps(sites: list[WeightSite]) -> list[TapPlan]:
    """The taps of each weight (read-only): those of every consumer that has an activation,
    with a note naming the others; a reason when none has."""
    plans = []
    for site in sites:
        taps, reasons = _taps_of(site.op.results[0], site, through_transpose=False)
        unique = list(dict.fromkeys(reasons))
        if not taps:
            if not unique:
                reason = "no consumer to capture"
            elif unique == [_LOOKUP]:
                reason = "read by gather_nd only (an embedding lookup): no activation to capture"
            else:
                reason = "; ".join(unique)
            plans.append(TapPlan(site, (), reason))
        elif unique == [_LOOKUP]:
            note = "calibrated through its matmul; the gather_nd lookup has no activation"
            plans.append(TapPlan(site, tuple(taps), None, note))
        elif unique:
            total = len(taps) + len(reasons)
            note = f"calibrated through {len(taps)} of {total} consumers; {'; '.join(unique)}"
            plans.append(TapPlan(site, tuple(taps), None, note))
        else:
            plans.append(TapPlan(site, tuple(taps), None))
    return plans


def _terminator(graph: Operation) -> Operation:
    block = graph.regions[0].blocks[0]
    return list(block.operations)[-1].operation


def _add_outputs(graph: Operation, values: list[Value], names: list[str]) -> None:
    """Append ``values`` to ``graph``'s results, named ``names``."""
    output = _terminator(graph)
    with graph.context, output.location, InsertionPoint(output):
        Operation.create(output.name, operands=[*output.operands, *values])
    output.erase()
    old_type = FunctionType(TypeAttr(graph.attributes["function_type"]).value)
    new_type = FunctionType.get(
        list(old_type.inputs), [*old_type.results, *(v.type for v in values)]
    )
    graph.attributes["function_type"] = TypeAttr.get(new_type)
    if "res_attrs" in graph.attributes:
        old = list(ArrayAttr(graph.attributes["res_attrs"]))
        extra = [
            DictAttr.get({"coreai.name": StringAttr.get(n)}, context=graph.context) for n in names
        ]
        graph.attributes["res_attrs"] = ArrayAttr.get(old + extra, context=graph.context)


def _callee(invoke: Operation) -> str:
    return ".".join(_SYMBOL.findall(str(invoke.attributes["callee"])))


def _extend_invoke(invoke: Operation, extra: list[Value]) -> list[Value]:
    """Recreate ``invoke`` with results for ``extra`` (values returned by the callee)."""
    attributes = {a.name: a.attr for a in invoke.attributes}
    if "res_attrs" in attributes:
        old = list(ArrayAttr(attributes["res_attrs"]))
        empty = DictAttr.get({}, context=invoke.context)
        attributes["res_attrs"] = ArrayAttr.get(old + [empty] * len(extra), context=invoke.context)
    with invoke.context, invoke.location, InsertionPoint(invoke):
        new = Operation.create(
            invoke.name,
            results=[*(r.type for r in invoke.results), *(v.type for v in extra)],
            operands=list(invoke.operands),
            attributes=attributes,
        )
    count = len(invoke.results)
    for old_result, new_result in zip(invoke.results, new.results, strict=False):
        old_result.replace_all_uses_with(new_result)
    invoke.erase()
    return list(new.results)[count:]


def expose_taps(module: Module, taps: list[Tap], entry: str) -> dict[int, list[str]]:
    """Make graph ``entry`` of ``module`` also return every tap; in place.

    Returns, per index into ``taps``, the names of the entry outputs that carry it (one per
    path of invocations from ``entry``; none if the entry does not reach it).
    """
    graphs = graphs_by_path(module)
    counter = iter(range(1 << 30))
    carried: dict[int, list[str]] = {}
    # pending[graph] = [(tap index, value in that graph)]
    pending: dict[str, list[tuple[int, Value]]] = {}
    for index, tap in enumerate(taps):
        pending.setdefault(tap.graph, []).append((index, tap.value))
    rounds = 0  # one round per level of invocation; more than the graph count means a cycle
    while pending and rounds <= len(graphs):
        rounds += 1
        next_pending: dict[str, list[tuple[int, Value]]] = {}
        for path, items in pending.items():
            graph = graphs.get(path)
            if graph is None:
                continue
            names = [f"__calibration_{next(counter)}" for _ in items]
            _add_outputs(graph, [v for _, v in items], names)
            if path == entry:
                for (index, _), name in zip(items, names, strict=True):
                    carried.setdefault(index, []).append(name)
                continue
            for op, caller in list(walk(module.operation)):
                if op.name != "coreai.invoke" or _callee(op) != path:
                    continue
                new_values = _extend_invoke(op, [v for _, v in items])
                next_pending.setdefault(caller, []).extend(
                    (index, value) for (index, _), value in zip(items, new_values, strict=True)
                )
        pending = next_pending
    return carried
