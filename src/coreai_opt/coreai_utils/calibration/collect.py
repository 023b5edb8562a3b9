"""Capture activation statistics on the Core AI runtime: run a copy of the program whose
weights' activation operands are also outputs, and reduce them sample by sample."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import check_int
from coreai_opt.coreai_utils.calibration.padding import unmappable
from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.calibration.samples import check_padding_mask, check_samples
from coreai_opt.coreai_utils.calibration.spill import (
    RowSpill,
    check_disk,
    park,
    spill_plan,
    with_gram,
)
from coreai_opt.coreai_utils.ir.capture import Tap, TapPlan, expose_taps, find_taps
from coreai_opt.coreai_utils.ir.detach import detached_copy
from coreai_opt.coreai_utils.ir.signature import InputSpec, graph_inputs, runtime_function
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.memory import dropping_bytecode_pages, return_free_memory
from coreai_opt.coreai_utils.numerics.activations import (
    ActivationStats,
    StatsLayout,
    conv_patches,
    empty_stats,
    linear_rows,
)
from coreai_opt.coreai_utils.runtime import run_samples

__all__ = [
    "CARRY_BYTES",
    "DEFAULT_MAX_CAPTURE_BYTES",
    "DEFAULT_MAX_GRAM_CHANNELS",
    "calibration_outline",
    "collect_calibration",
]

DEFAULT_MAX_GRAM_CHANNELS = 8192
DEFAULT_MAX_CAPTURE_BYTES = 512 << 20
CARRY_BYTES = 16 << 20
"""At most this many bytes of buffered rows, over all activations, are carried from one
sample to the next; above it every activation is reduced before the next sample runs. The
statistics objects buffer rows so that the Gram update runs on blocks of rows; without a
bound on their sum, the buffers grew with the number of samples (all-MiniLM-L6-v2, 32
samples: +56 MiB at 32 samples over 8). Reducing after every sample instead cost 1.5x the
capture's time there (5.7 s against 3.9 s for 32 samples)."""
_NON_NEGATIVE = "a non-negative int"


def _empty_for(tap: Tap, max_gram_channels: int) -> ActivationStats:
    """Zeroed statistics for ``tap`` (:func:`~.spill.with_gram` says whether with ``X^T X``)."""
    gram = with_gram(tap, max_gram_channels)
    return empty_stats(tap.layout, tap.groups, tap.columns, with_gram=gram)


def _unique_taps(plans: list[TapPlan]) -> tuple[dict[tuple[object, ...], int], list[Tap]]:
    """The distinct taps of ``plans`` in order, and each key's index among them."""
    unique: dict[tuple[object, ...], int] = {}
    taps: list[Tap] = []
    for plan in plans:
        for tap in plan.taps:
            if tap.key not in unique:
                unique[tap.key] = len(taps)
                taps.append(tap)
    return unique, taps


def _commit(stats: ActivationStats) -> None:
    """Write the pages of ``stats`` now. ``np.zeros`` leaves them untouched until the first
    reduction, which for few samples came after the compiled copy was released: the peak
    then looked lower for 8 samples than for 32 (all-MiniLM-L6-v2: 58 MiB). Written at the
    first sample, the peak is the same for any number of samples, and a machine short of
    memory finds out before most of the runtime work."""
    stats.sq_sum.fill(0.0)
    if stats.gram is not None:
        stats.gram.fill(0.0)


@dataclass(frozen=True)
class _Reduction:
    """How a tap's outputs become rows, without its IR value (which would keep the
    capture's copy of the program, and the file behind it, alive while the runtime runs)."""

    layout: StatsLayout
    axis: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]

    @classmethod
    def of(cls, tap: Tap) -> _Reduction:
        return cls(tap.layout, tap.axis, tap.groups, tap.kernel, tap.stride, tap.dilation)


def _rows(tap: _Reduction, activation: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The tap's rows (``[groups, n, columns]``), only those where ``keep`` (one flag per
    row, from the padding mask) is true when given."""
    if tap.layout is StatsLayout.CONV:
        return conv_patches(activation, tap.kernel, tap.stride, tap.dilation, tap.groups)
    rows = linear_rows(activation, tap.axis)
    return rows if keep is None else rows[:, keep]


def _groups(plans: list[TapPlan], budget: int) -> list[list[TapPlan]]:
    """Weights in IR order, split so that one run's new outputs stay within ``budget``
    bytes per sample (a weight whose taps alone exceed it gets a run of its own)."""
    groups: list[list[TapPlan]] = []
    current: list[TapPlan] = []
    seen: set[tuple[object, ...]] = set()
    size = 0
    for plan in plans:
        new = [t for t in plan.taps if t.key not in seen]
        extra = sum(t.nbytes for t in new)
        if current and size + extra > budget:
            groups.append(current)
            current, seen, size = [], set(), 0
            new, extra = list(plan.taps), sum(t.nbytes for t in plan.taps)
        current.append(plan)
        seen.update(t.key for t in new)
        size += extra
    if current:
        groups.append(current)
    return groups


def collect_calibration(
    program: AIProgram,
    samples: Iterable[Mapping[str, object]],
    *,
    function: str = "main",
    max_gram_channels: int = DEFAULT_MAX_GRAM_CHANNELS,
    max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES,
    on_sample: Callable[[int, int], None] | None = None,
    padding_mask: str | None = None,
    max_stats_bytes: int | None = None,
) -> Calibration:
    """Run ``program``'s ``function`` on ``samples`` and reduce every weight's activations.

    For each candidate weight (as :func:`sparsify_weights` finds them) the activation operand
    of each consumer is captured on the Core AI runtime: the other operand of a matmul
    (``x @ W^T`` from torch ``Linear``, ``W @ x``, batched/broadcast matmuls: every vector
    along the contraction axis is a row), the (padded) input of a convolution as unfolded
    patches (``C_in/groups * prod(kernel)`` columns per group; stride, dilation and groups
    from the op), or the input of a transposed convolution (per-channel sums only). Per
    weight: the sum of squares per column and the row count (Wanda) and, when the weight
    has at most ``max_gram_channels`` columns, ``X^T X`` in float64 (SparseGPT). A weight
    used by several consumers accumulates over all of them; weights in private graphs are
    reached through their ``coreai.invoke``s. Embedding tables (``gather_nd``) and weights
    the capture cannot see get a reason in ``Calibration.missing`` instead.

    ``samples`` is an iterable of dicts ``input name -> array`` with the function's exact
    dtypes and static shapes; it is checked in full before anything runs (wrong, missing or
    extra names, dtypes or shapes raise ``ValueError`` naming the input). The input program
    is not modified: a copy with extra outputs is saved to a temporary directory and run.

    Memory: samples are reduced one at a time, and does not grow with their number. Peak
    extra memory is the runtime's compiled copy of the program, one sample's extra outputs
    (at most ``max_capture_bytes``, default 512 MiB, unless one weight's own activations are
    larger; above that, weights are captured over several runs, each compiling its own
    copy), the unfolded patches of the largest convolution input, their rows in float64
    while they are reduced (at most :data:`CARRY_BYTES` of them are kept for the next
    sample), plus the statistics: ``8 * columns`` bytes per distinct activation and
    ``8 * columns**2`` per Gram (weights reading the same activation share them).

    ``max_stats_bytes`` (default None: no bound) bounds the statistics held in memory. In
    IR order, an activation's statistics accumulate in memory while they fit; the rows of
    the others go to a file in the temporary directory (``TMPDIR``) as the runtime returns
    them, and are reduced there once the runtime is done, one activation at a time, in the
    same blocks: the sums are bit-identical to an unbounded capture. Every ``X^T X`` is
    then moved to a file and mapped read-only (the passes read one weight's at a time and
    give its pages back). Disk: the spilled rows (in the activations' own type) and every
    ``X^T X``. All of it is freed with the returned :class:`Calibration`.

    Disk: besides those, the temporary directory holds two copies of the weights while the
    runtime runs (the asset it runs, and its compiled form); when it lacks the room for all
    of it, ``ValueError`` before anything runs.

    While the capture's copy is written and saved, the pages of mapped bytecode files (the
    input as the Core AI loader maps it, the copy) are given back as they are read (Linux):
    that step holds one copy of the weights, the one ``save_asset`` reads back to hash it.
    While the runtime runs, it holds its own asset's pages (file-backed) besides the
    statistics.

    Raises:
        TypeError: ``program`` is not an ``AIProgram``, or a sample is not a dict.
        ValueError: ``function`` does not exist; a sample does not match its inputs;
            ``samples`` is empty; ``max_gram_channels`` or ``max_capture_bytes`` is not a
            non-negative int, ``max_stats_bytes`` neither that nor None; the temporary
            directory has too little room (see Disk); ``padding_mask`` is
            not an input of ``function``, not of an integer or bool dtype, not of a static
            shape of rank 1 or more, or of a shape no weight's activation rows map onto.
    """
    if not isinstance(program, AIProgram):
        msg = f"program must be a coreai.authoring.AIProgram, got {type(program).__name__}"
        raise TypeError(msg)
    max_gram_channels = check_int("max_gram_channels", max_gram_channels, 0, _NON_NEGATIVE)
    max_capture_bytes = check_int("max_capture_bytes", max_capture_bytes, 0, _NON_NEGATIVE)
    if max_stats_bytes is not None:
        max_stats_bytes = check_int("max_stats_bytes", max_stats_bytes, 0, _NON_NEGATIVE)
    module = program._module._mlir_module  # noqa: SLF001
    try:
        specs = graph_inputs(module, function)
    except KeyError as error:
        raise ValueError(f"function {function!r} not found: {error.args[0]}") from None
    mask = check_padding_mask(specs, padding_mask, function)
    checked = check_samples(specs, samples, function)
    plans = find_taps(find_weights(module))
    missing = {p.site.id: p.reason for p in plans if p.reason is not None}
    notes = {p.site.id: p.note for p in plans if p.note is not None}
    shapes = {p.site.id: p.site.shape for p in plans}
    capturable = [p for p in plans if p.reason is None]
    unmasked = _unmasked(capturable, mask)
    stats: dict[str, ActivationStats] = {}
    runs = _groups(capturable, max_capture_bytes)
    weight_bytes = sum(p.site.nbytes for p in plans)
    spills = []
    for run in runs:
        _, taps = _unique_taps(run)
        spills.append((taps, spill_plan(taps, max_gram_channels, max_stats_bytes)))
    check_disk(spills, len(checked), max_gram_channels, max_stats_bytes, weight_bytes)
    total = len(checked) * len(runs)
    done = 0
    for run, (_, spilled) in zip(runs, spills, strict=True):

        def progress(count: int) -> None:
            if on_sample is not None:
                on_sample(count, total)

        capture = _Capture(function, max_gram_channels, mask, spilled)
        reduced, unreached = capture.run(program, {p.site.id for p in run}, checked, done, progress)
        done += len(checked)
        if max_stats_bytes is not None:  # what the next run holds must fit the budget again
            reduced = _parked(reduced)
        stats.update(reduced)
        missing.update(unreached)
    unmasked = {key: why for key, why in unmasked.items() if key in stats}
    name = None if mask is None else mask.name
    return_free_memory()
    return Calibration(function, len(checked), stats, missing, notes, name, unmasked, shapes)


def _parked(reduced: dict[str, ActivationStats]) -> dict[str, ActivationStats]:
    """``reduced`` with every statistics object parked once (weights may share one)."""
    parked: dict[int, ActivationStats] = {}
    for stats in reduced.values():
        if id(stats) not in parked:
            parked[id(stats)] = park(stats)
    return {key: parked[id(stats)] for key, stats in reduced.items()}


def _unmasked(capturable: list[TapPlan], mask: InputSpec | None) -> dict[str, str]:
    """Why each weight whose activation rows ``mask`` does not map onto keeps its padding;
    ``ValueError`` when that is every weight."""
    unmasked: dict[str, str] = {}
    if mask is None or mask.shape is None:
        return unmasked
    for plan in capturable:
        why = next((r for t in plan.taps if (r := unmappable(t, mask.shape))), None)
        if why is not None:
            unmasked[plan.site.id] = f"padding kept: {why}"
    if capturable and len(unmasked) == len(capturable):
        shape = "x".join(map(str, mask.shape))
        msg = (
            f"padding_mask {mask.name!r} ({shape}) maps onto no weight's activation rows "
            "(a matmul activation whose axes other than the contraction axis have its "
            "shape); nothing would be masked"
        )
        raise ValueError(msg)
    return unmasked


def calibration_outline(
    program: AIProgram,
    *,
    function: str = "main",
    max_gram_channels: int = DEFAULT_MAX_GRAM_CHANNELS,
) -> Calibration:
    """What :func:`collect_calibration` would capture, without running anything.

    Every weight it could capture gets statistics of the right layout and shape, all zero
    (``samples`` is 0); the others are in ``missing`` with the reason. For dry runs that
    show which algorithm each weight would get. Whether ``function`` reaches a weight is
    not checked.
    """
    module = program._module._mlir_module  # noqa: SLF001
    plans = find_taps(find_weights(module))
    stats: dict[str, ActivationStats] = {}
    for plan in plans:
        if plan.reason is None:
            stats[plan.site.id] = _empty_for(plan.taps[0], max_gram_channels)
    missing = {p.site.id: p.reason for p in plans if p.reason is not None}
    notes = {p.site.id: p.note for p in plans if p.note is not None}
    shapes = {p.site.id: p.site.shape for p in plans}
    return Calibration(function, 0, stats, missing, notes, shapes=shapes)


@dataclass(frozen=True)
class _Capture:
    """How each run captures: ``spilled`` says which of its distinct taps (in order) spill
    their rows to disk rather than accumulate in memory."""

    function: str
    max_gram_channels: int
    mask: InputSpec | None
    spilled: list[bool]

    def run(
        self,
        program: AIProgram,
        ids: set[str],
        samples: list[dict[str, np.ndarray]],
        done: int,
        progress: Callable[[int], None],
    ) -> tuple[dict[str, ActivationStats], dict[str, str]]:
        """One run: expose the taps of weights ``ids`` in a copy, run every sample, reduce
        (without the rows of padded positions where the mask input maps onto them)."""
        with ExitStack() as stack:  # one file for the run's spilled rows, if any spill
            spill_file = (
                stack.enter_context(tempfile.TemporaryFile()) if any(self.spilled) else None
            )
            with dropping_bytecode_pages():  # the input's pages, read once to write the copy
                scratch = detached_copy(program)  # file-backed: no second copy of the weights
            module = scratch._module._mlir_module  # noqa: SLF001
            plans = [p for p in find_taps(find_weights(module)) if p.site.id in ids]
            unique, taps = _unique_taps(plans)
            with module.context:
                carried = expose_taps(module, taps, self.function)
                module.operation.verify()
            accumulators: list[ActivationStats | RowSpill] = [
                RowSpill(tap.layout, tap.groups, tap.columns, spill_file)
                if spill and spill_file is not None
                else _empty_for(tap, self.max_gram_channels)
                for tap, spill in zip(taps, self.spilled, strict=True)
            ]
            mask = self.mask
            mapped = [
                mask is not None and mask.shape is not None and unmappable(tap, mask.shape) is None
                for tap in taps
            ]
            weights = [(p.site.id, [unique[t.key] for t in p.taps]) for p in plans]
            reductions = [_Reduction.of(tap) for tap in taps]
            with tempfile.TemporaryDirectory(prefix="coreai-calibration-") as scratch_dir:
                asset = Path(scratch_dir) / "capture.aimodel"
                # save_asset streams through the copy's pages, then reads the file it wrote
                # back whole (coreai-core, to hash it): one copy of the weights in memory
                with dropping_bytecode_pages():
                    scratch.save_asset(asset)
                # the copy, its mapped file (one more copy of the weights in the temporary
                # directory) and every IR object keeping them alive go before the runtime runs
                del scratch, module, plans, unique, taps
                gc.collect()
                function = runtime_function(self.function)
                with closing(run_samples(asset, samples, function)) as outputs:
                    for number, result in enumerate(outputs):
                        if number == 0:  # once compiling (a transient peak of its own) is over
                            for accumulator in accumulators:
                                if isinstance(accumulator, ActivationStats):
                                    _commit(accumulator)
                        keep = None if mask is None else samples[number][mask.name].reshape(-1) != 0
                        for index, tap in enumerate(reductions):
                            rows = keep if mapped[index] else None
                            for name in carried.get(index, []):
                                accumulators[index].add(_rows(tap, result[name], rows))
                        del result
                        _between_samples(accumulators)
                        progress(done + number + 1)
            reduced = [
                park(a.replay()) if isinstance(a, RowSpill) else _flushed(a) for a in accumulators
            ]
            return _per_weight(weights, carried, reduced, self.function)


def _flushed(stats: ActivationStats) -> ActivationStats:
    stats.flush()
    return stats


def _between_samples(accumulators: list[ActivationStats | RowSpill]) -> None:
    """Reduce every buffer when more than :data:`CARRY_BYTES` would be carried to the next
    sample; then hand the heap's free memory back."""
    if sum(a.pending_bytes for a in accumulators) > CARRY_BYTES:
        for accumulator in accumulators:
            accumulator.flush()
    # A sample's outputs, patches and rows, freed, stay in the C heap and fragment it: it
    # crept up with every sample (all-MiniLM-L6-v2: +17 MiB over 32 samples). A trim takes
    # 2-10 ms, next to a runtime call of 50 ms or more.
    return_free_memory()


def _per_weight(
    weights: list[tuple[str, list[int]]],
    carried: Mapping[int, list[str]],
    accumulators: list[ActivationStats],
    function: str,
) -> tuple[dict[str, ActivationStats], dict[str, str]]:
    """Each weight's statistics (``weights``: its id and its taps' indices into
    ``accumulators``, merged), or why it has none."""
    reduced: dict[str, ActivationStats] = {}
    unreached: dict[str, str] = {}
    for weight_id, indices in weights:
        if any(not carried.get(i) for i in indices):
            unreached[weight_id] = f"its consumers are not reached from function {function!r}"
            continue
        parts = [accumulators[i] for i in dict.fromkeys(indices)]
        shapes = {(p.layout, p.sq_sum.shape) for p in parts}
        if len(shapes) != 1:
            unreached[weight_id] = "its consumers see activations of different layouts"
            continue
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merged(part)
        reduced[weight_id] = merged
    return reduced, unreached
