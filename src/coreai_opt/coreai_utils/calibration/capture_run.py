"""One capture run on the Core AI runtime: a copy of the program whose weights' activation
operands are also outputs, saved, run on every sample, its outputs reduced sample by sample
into each weight's statistics (:class:`Capture`; ``collect.py`` splits the weights into
runs and merges them)."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.calibration.padding import unmappable
from coreai_opt.coreai_utils.calibration.spill import RowSpill, park, with_gram
from coreai_opt.coreai_utils.ir.capture import Tap, TapPlan, expose_taps, find_taps
from coreai_opt.coreai_utils.ir.detach import detached_copy
from coreai_opt.coreai_utils.ir.signature import InputSpec, runtime_function
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

__all__ = ["CARRY_BYTES", "Capture", "empty_for", "unique_taps"]

CARRY_BYTES = 16 << 20
"""At most this many bytes of buffered rows, over all activations, are carried from one
sample to the next; above it every activation is reduced before the next sample runs. The
statistics objects buffer rows so that the Gram update runs on blocks of rows; without a
bound on their sum, the buffers grew with the number of samples (all-MiniLM-L6-v2, 32
samples: +56 MiB at 32 samples over 8). Reducing after every sample instead cost 1.5x the
capture's time there (5.7 s against 3.9 s for 32 samples)."""


def empty_for(tap: Tap, max_gram_channels: int) -> ActivationStats:
    """Zeroed statistics for ``tap`` (:func:`~.spill.with_gram` says whether with ``X^T X``)."""
    gram = with_gram(tap, max_gram_channels)
    return empty_stats(tap.layout, tap.groups, tap.columns, with_gram=gram)


def unique_taps(plans: list[TapPlan]) -> tuple[dict[tuple[object, ...], int], list[Tap]]:
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


@dataclass
class _Exposed:
    """What a run needs once its copy of the program is saved with the taps exposed, and
    nothing that keeps the copy alive: per distinct tap its accumulator, how its outputs
    become rows, whether the padding mask maps onto its rows; the outputs that carry each
    tap (``carried``); each weight's taps (``weights``: id, indices into the taps)."""

    accumulators: list[ActivationStats | RowSpill]
    reductions: list[_Reduction]
    mapped: list[bool]
    carried: dict[int, list[str]]
    weights: list[tuple[str, list[int]]]


@dataclass(frozen=True)
class Capture:
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
        with ExitStack() as stack:
            # one file for the run's spilled rows, if any spill
            spill_file = (
                stack.enter_context(tempfile.TemporaryFile()) if any(self.spilled) else None
            )
            scratch_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="coreai-calibration-")
            )
            asset = Path(scratch_dir) / "capture.aimodel"
            exposed = self._expose(program, ids, asset, spill_file)
            # the copy, its mapped file (one more copy of the weights in the temporary
            # directory) and every IR object keeping them alive went with _expose's frame;
            # collect their cycles before the runtime runs
            gc.collect()
            with closing(run_samples(asset, samples, runtime_function(self.function))) as outputs:
                self._feed(exposed, outputs, samples, done, progress)
            reduced = [
                park(a.replay()) if isinstance(a, RowSpill) else _flushed(a)
                for a in exposed.accumulators
            ]
            return _per_weight(exposed.weights, exposed.carried, reduced, self.function)

    def _expose(
        self, program: AIProgram, ids: set[str], asset: Path, spill_file: BinaryIO | None
    ) -> _Exposed:
        """Save to ``asset`` a copy of ``program`` whose taps of weights ``ids`` are also
        outputs; the accumulators for them (spilled ones write to ``spill_file``)."""
        with dropping_bytecode_pages():  # the input's pages, read once to write the copy
            scratch = detached_copy(program)  # file-backed: no second copy of the weights
        module = scratch._module._mlir_module  # noqa: SLF001
        plans = [p for p in find_taps(find_weights(module)) if p.site.id in ids]
        unique, taps = unique_taps(plans)
        with module.context:
            carried = expose_taps(module, taps, self.function)
            module.operation.verify()
        # save_asset streams through the copy's pages, then reads the file it wrote back
        # whole (coreai-core, to hash it): one copy of the weights in memory
        with dropping_bytecode_pages():
            scratch.save_asset(asset)
        shape = self.mask.shape if self.mask is not None else None
        return _Exposed(
            accumulators=[
                RowSpill(tap.layout, tap.groups, tap.columns, spill_file)
                if spill and spill_file is not None
                else empty_for(tap, self.max_gram_channels)
                for tap, spill in zip(taps, self.spilled, strict=True)
            ],
            reductions=[_Reduction.of(tap) for tap in taps],
            mapped=[shape is not None and unmappable(tap, shape) is None for tap in taps],
            carried=carried,
            weights=[(p.site.id, [unique[t.key] for t in p.taps]) for p in plans],
        )

    def _feed(
        self,
        exposed: _Exposed,
        outputs: Iterable[dict[str, np.ndarray]],
        samples: list[dict[str, np.ndarray]],
        done: int,
        progress: Callable[[int], None],
    ) -> None:
        """Reduce each sample's outputs into the accumulators, sample by sample (the rows
        of padded positions left out where the mask maps onto a tap's rows)."""
        accumulators, mask = exposed.accumulators, self.mask
        for number, result in enumerate(outputs):
            if number == 0:  # once compiling (a transient peak of its own) is over
                for accumulator in accumulators:
                    if isinstance(accumulator, ActivationStats):
                        _commit(accumulator)
            keep = None if mask is None else samples[number][mask.name].reshape(-1) != 0
            for index, tap in enumerate(exposed.reductions):
                rows = keep if exposed.mapped[index] else None
                for name in exposed.carried.get(index, []):
                    accumulators[index].add(_rows(tap, result[name], rows))
            del result
            _between_samples(accumulators)
            progress(done + number + 1)


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
