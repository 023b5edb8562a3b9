"""Capture activation statistics on the Core AI runtime: run a copy of the program whose
weights' activation operands are also outputs, and reduce them sample by sample."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import check_int
from coreai_opt.coreai_utils.calibration.capture_run import Capture, empty_for, unique_taps
from coreai_opt.coreai_utils.calibration.padding import unmappable
from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.calibration.samples import check_padding_mask, check_samples
from coreai_opt.coreai_utils.calibration.spill import (
    check_disk,
    park,
    spill_plan,
)
from coreai_opt.coreai_utils.ir.capture import TapPlan, find_taps
from coreai_opt.coreai_utils.ir.signature import InputSpec, graph_inputs
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.memory import return_free_memory
from coreai_opt.coreai_utils.numerics.activations import (
    ActivationStats,
)

__all__ = [
    "DEFAULT_MAX_CAPTURE_BYTES",
    "DEFAULT_MAX_GRAM_CHANNELS",
    "calibration_outline",
    "collect_calibration",
]

DEFAULT_MAX_GRAM_CHANNELS = 8192
DEFAULT_MAX_CAPTURE_BYTES = 512 << 20
_NON_NEGATIVE = "a non-negative int"


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
        _, taps = unique_taps(run)
        spills.append((taps, spill_plan(taps, max_gram_channels, max_stats_bytes)))
    check_disk(spills, len(checked), max_gram_channels, max_stats_bytes, weight_bytes)
    total = len(checked) * len(runs)
    done = 0
    for run, (_, spilled) in zip(runs, spills, strict=True):

        def progress(count: int) -> None:
            if on_sample is not None:
                on_sample(count, total)

        capture = Capture(function, max_gram_channels, mask, spilled)
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
            stats[plan.site.id] = empty_for(plan.taps[0], max_gram_channels)
    missing = {p.site.id: p.reason for p in plans if p.reason is not None}
    notes = {p.site.id: p.note for p in plans if p.note is not None}
    shapes = {p.site.id: p.site.shape for p in plans}
    return Calibration(function, 0, stats, missing, notes, shapes=shapes)
