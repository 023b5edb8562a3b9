"""Activation statistics from the Core AI runtime, for calibration-aware pruning.

:func:`collect_calibration` runs a scratch copy of a program, in which every candidate
weight's activation operand is also an output, on each sample and reduces the activations
as they arrive. The result, a :class:`Calibration`, is plain data keyed by weight id
(``@graph/wK``, as in the report) and can be saved to and loaded from ``.npz``.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.arguments import check_int
from coreai_opt.coreai_utils.ir.capture import Tap, TapPlan, expose_taps, find_taps
from coreai_opt.coreai_utils.ir.signature import InputSpec, graph_inputs, runtime_function
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.numerics.activations import (
    ActivationStats,
    StatsLayout,
    conv_patches,
    empty_stats,
    linear_rows,
)
from coreai_opt.coreai_utils.runtime import run_samples

__all__ = [
    "DEFAULT_MAX_CAPTURE_BYTES",
    "DEFAULT_MAX_GRAM_CHANNELS",
    "Calibration",
    "CalibrationFileError",
    "calibration_outline",
    "check_samples",
    "collect_calibration",
]

DEFAULT_MAX_GRAM_CHANNELS = 8192
DEFAULT_MAX_CAPTURE_BYTES = 512 << 20
_FORMAT = "coreai-opt-calibration/1"
_NON_NEGATIVE = "a non-negative int"


class CalibrationFileError(ValueError):
    """A file is not a calibration saved by :meth:`Calibration.save`."""


@dataclass(frozen=True)
class Calibration:
    """Activation statistics per weight id, from ``samples`` runs of ``function``.

    ``stats`` maps a weight id to its :class:`ActivationStats` (weights sharing an input,
    like q/k/v projections, share one object); ``missing`` maps the ids of candidate
    weights without statistics to the reason (an embedding read by ``gather_nd``, a
    consumer the capture cannot see, a graph ``function`` does not reach).
    """

    function: str
    samples: int
    stats: Mapping[str, ActivationStats]
    missing: Mapping[str, str] = field(default_factory=dict)

    def save(self, path: Path | str) -> None:
        """Write to ``path`` (``.npz``); shared statistics are stored once."""
        arrays: dict[str, np.ndarray] = {}
        index_of: dict[int, int] = {}
        entries: dict[str, dict[str, object]] = {}
        for weight_id, stats in self.stats.items():
            if id(stats) not in index_of:
                k = index_of[id(stats)] = len(index_of)
                arrays[f"sq_sum_{k}"] = stats.sq_sum
                if stats.gram is not None:
                    arrays[f"gram_{k}"] = stats.gram
            k = index_of[id(stats)]
            entries[weight_id] = {"stats": k, "layout": stats.layout.value, "count": stats.count}
        meta = {
            "format": _FORMAT,
            "function": self.function,
            "samples": self.samples,
            "weights": entries,
            "missing": dict(self.missing),
        }
        arrays["meta"] = np.array(json.dumps(meta))
        with Path(path).open("wb") as stream:
            np.savez(stream, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        """Read a file written by :meth:`save`; ``CalibrationFileError`` if it is not one."""
        source = Path(path)
        try:
            with np.load(source, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != _FORMAT:
                    raise CalibrationFileError(f"{source}: not a calibration file")
                shared: dict[int, ActivationStats] = {}
                stats: dict[str, ActivationStats] = {}
                for weight_id, entry in meta["weights"].items():
                    k = int(entry["stats"])
                    if k not in shared:
                        gram = data.get(f"gram_{k}")
                        shared[k] = ActivationStats(
                            StatsLayout(entry["layout"]),
                            np.array(data[f"sq_sum_{k}"], dtype=np.float64),
                            int(entry["count"]),
                            None if gram is None else np.array(gram, dtype=np.float64),
                        )
                    stats[weight_id] = shared[k]
        except CalibrationFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as error:
            msg = f"{source}: not a calibration file ({type(error).__name__}: {error})"
            raise CalibrationFileError(msg) from None
        return cls(meta["function"], int(meta["samples"]), stats, dict(meta["missing"]))


def check_samples(
    specs: list[InputSpec], samples: Iterable[Mapping[str, object]], function: str
) -> list[dict[str, np.ndarray]]:
    """The samples as dicts of arrays, after checking every name, dtype and static shape
    against ``specs``; ``ValueError`` naming the first problem (nothing has run yet)."""
    expected = {spec.name: spec for spec in specs}
    checked: list[dict[str, np.ndarray]] = []
    for number, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            kind = type(sample).__name__
            msg = f"sample {number} must be a dict of input name -> array, got {kind}"
            raise TypeError(msg)
        missing = sorted(set(expected) - set(sample))
        extra = sorted(set(sample) - set(expected))
        if missing or extra:
            parts = [f"missing input {n!r}" for n in missing] + [
                f"unknown input {n!r}" for n in extra
            ]
            msg = (
                f"sample {number} for {function!r}: {', '.join(parts)}; expected {sorted(expected)}"
            )
            raise ValueError(msg)
        arrays = {}
        for name, spec in expected.items():
            value = np.asarray(sample[name])
            if spec.dtype is not None and value.dtype != spec.dtype:
                msg = (
                    f"sample {number}: input {name!r} must have dtype {spec.dtype}, "
                    f"got {value.dtype}"
                )
                raise ValueError(msg)
            if spec.shape is not None and tuple(value.shape) != spec.shape:
                msg = (
                    f"sample {number}: input {name!r} must have shape {spec.shape}, "
                    f"got {tuple(value.shape)}"
                )
                raise ValueError(msg)
            arrays[name] = value
        checked.append(arrays)
    if not checked:
        msg = "samples is empty: calibration needs at least one sample"
        raise ValueError(msg)
    return checked


def _empty_for(tap: Tap, max_gram_channels: int) -> ActivationStats:
    """Zeroed statistics for ``tap``: with ``X^T X`` unless per-channel only or wider than
    ``max_gram_channels`` columns."""
    gram = tap.layout is not StatsLayout.CHANNELS and tap.columns <= max_gram_channels
    return empty_stats(tap.layout, tap.groups, tap.columns, with_gram=gram)


def _rows(tap: Tap, activation: np.ndarray) -> np.ndarray:
    if tap.layout is StatsLayout.CONV:
        return conv_patches(activation, tap.kernel, tap.stride, tap.dilation, tap.groups)
    return linear_rows(activation, tap.axis)


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

    Memory: samples are reduced one at a time. Peak extra memory is one sample's extra
    outputs (at most ``max_capture_bytes``, default 512 MiB, unless one weight's own
    activations are larger; above that, weights are captured over several runs, each
    compiling its own copy), the unfolded patches of the largest convolution input, up to
    4 MiB of buffered rows per distinct activation (reduced in blocks), plus the
    statistics: ``8 * columns`` bytes per distinct activation and ``8 * columns**2`` per
    Gram (weights reading the same activation share them).

    Raises:
        TypeError: ``program`` is not an ``AIProgram``, or a sample is not a dict.
        ValueError: ``function`` does not exist; a sample does not match its inputs;
            ``samples`` is empty; ``max_gram_channels`` or ``max_capture_bytes`` is not a
            non-negative int.
    """
    if not isinstance(program, AIProgram):
        msg = f"program must be a coreai.authoring.AIProgram, got {type(program).__name__}"
        raise TypeError(msg)
    max_gram_channels = check_int("max_gram_channels", max_gram_channels, 0, _NON_NEGATIVE)
    max_capture_bytes = check_int("max_capture_bytes", max_capture_bytes, 0, _NON_NEGATIVE)
    module = program._module._mlir_module  # noqa: SLF001
    try:
        specs = graph_inputs(module, function)
    except KeyError as error:
        raise ValueError(f"function {function!r} not found: {error.args[0]}") from None
    checked = check_samples(specs, samples, function)
    plans = find_taps(find_weights(module))
    missing = {p.site.id: p.reason for p in plans if p.reason is not None}
    capturable = [p for p in plans if p.reason is None]
    stats: dict[str, ActivationStats] = {}
    runs = _groups(capturable, max_capture_bytes)
    total = len(checked) * len(runs)
    done = 0
    for run in runs:
        ids = {p.site.id for p in run}

        def progress(count: int) -> None:
            if on_sample is not None:
                on_sample(count, total)

        reduced, unreached = _capture(
            program, ids, checked, function, max_gram_channels, done, progress
        )
        done += len(checked)
        stats.update(reduced)
        missing.update(unreached)
    return Calibration(function, len(checked), stats, missing)


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
    return Calibration(function, 0, stats, missing)


def _capture(
    program: AIProgram,
    ids: set[str],
    samples: list[dict[str, np.ndarray]],
    function: str,
    max_gram_channels: int,
    done: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, ActivationStats], dict[str, str]]:
    """One run: expose the taps of weights ``ids`` in a copy, run every sample, reduce."""
    scratch = copy.deepcopy(program)
    module = scratch._module._mlir_module  # noqa: SLF001
    plans = [p for p in find_taps(find_weights(module)) if p.site.id in ids]
    unique: dict[tuple[object, ...], int] = {}
    taps: list[Tap] = []
    for plan in plans:
        for tap in plan.taps:
            if tap.key not in unique:
                unique[tap.key] = len(taps)
                taps.append(tap)
    with module.context:
        carried = expose_taps(module, taps, function)
        module.operation.verify()
    accumulators = [_empty_for(tap, max_gram_channels) for tap in taps]
    with tempfile.TemporaryDirectory(prefix="coreai-calibration-") as scratch_dir:
        asset = Path(scratch_dir) / "capture.aimodel"
        scratch.save_asset(asset)
        with closing(run_samples(asset, samples, runtime_function(function))) as outputs:
            for number, result in enumerate(outputs):
                for index, tap in enumerate(taps):
                    for name in carried.get(index, []):
                        accumulators[index].add(_rows(tap, result[name]))
                del result
                progress(done + number + 1)
    for accumulator in accumulators:
        accumulator.flush()
    reduced: dict[str, ActivationStats] = {}
    unreached: dict[str, str] = {}
    for plan in plans:
        indices = [unique[t.key] for t in plan.taps]
        if any(not carried.get(i) for i in indices):
            unreached[plan.site.id] = f"its consumers are not reached from function {function!r}"
            continue
        parts = [accumulators[i] for i in dict.fromkeys(indices)]
        shapes = {(p.layout, p.sq_sum.shape) for p in parts}
        if len(shapes) != 1:
            unreached[plan.site.id] = "its consumers see activations of different layouts"
            continue
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merged(part)
        reduced[plan.site.id] = merged
    return reduced, unreached
