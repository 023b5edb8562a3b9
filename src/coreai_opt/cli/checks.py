"""Running both assets to compare them (--validate, --validate-with), reading input samples
for main (--calibration, --validate-with), and calibrating on them."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from coreai_opt.cli.errors import CliError
from coreai_opt.cli.flags import Flags, reword
from coreai_opt.cli.progress import progress
from coreai_opt.cli.samples import load_samples
from coreai_opt.coreai_utils.calibration import Calibration, collect_calibration
from coreai_opt.coreai_utils.ir.signature import graph_inputs
from coreai_opt.coreai_utils.runtime import run_asset, run_samples
from coreai_opt.coreai_utils.validation import (
    OutputComparison,
    compare_outputs,
    entry_points,
    example_inputs,
    runtime_function,
)

__all__ = [
    "MAIN",
    "SEED",
    "calibrate_main",
    "default_stats_memory",
    "main_samples",
    "validate",
    "validate_with",
]

SEED = 0
MAIN = "main"


def validate(
    source: Path, output: Path, program: Any, err: Console | None
) -> tuple[dict[str, list[OutputComparison]], dict[str, str]]:
    """Compare every public function of both assets; functions that cannot be run are
    reported as skipped (with the reason) rather than failing the command."""
    results: dict[str, list[OutputComparison]] = {}
    skipped: dict[str, str] = {}
    for function in entry_points(program):
        try:
            inputs = example_inputs(program, function, seed=SEED)
            reference = run_asset(source, inputs, runtime_function(function))
            compressed = run_asset(output, inputs, runtime_function(function))
        except Exception as error:  # reported in the output, never a traceback
            skipped[function] = f"{type(error).__name__}: {error}"
            if err is not None:
                message = f"not validated: {function}: {skipped[function]}"
                err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)
            continue
        results[function] = compare_outputs(reference, compressed)
    return results, skipped


def validate_with(
    source: Path, output: Path, samples: list[dict[str, np.ndarray]]
) -> dict[str, list[OutputComparison]]:
    """Compare ``main`` of both assets on the given samples (all samples' outputs pooled)."""
    function = runtime_function(MAIN)
    pooled: list[dict[str, np.ndarray]] = []
    for asset in (source, output):
        with closing(run_samples(asset, samples, function)) as outputs:
            per_sample = list(outputs)
        pooled.append(
            {
                name: np.concatenate([o[name].reshape(-1) for o in per_sample])
                for name in per_sample[0]
            }
        )
    return {MAIN: compare_outputs(pooled[0], pooled[1])}


def main_samples(program: Any, path: Path, flag: str) -> list[dict[str, np.ndarray]]:
    """The samples in ``path`` (``--calibration``, ``--validate-with``, ``--check-with``),
    checked against ``main``'s inputs."""
    try:
        specs = graph_inputs(program._module._mlir_module, MAIN)  # noqa: SLF001
    except KeyError:
        msg = f"{flag} needs a function named {MAIN!r}; the program has none"
        raise CliError(msg) from None
    return load_samples(path, flag, specs)


def default_stats_memory() -> int:
    """``--stats-memory`` when not given: a quarter of the machine's physical memory; the
    rest is left to the runtime, whose own peak running a saved asset was about twice the
    weights (fp16 stacks of 1 and 2 B parameters, ``bench/LARGE.md``)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def calibrate_main(
    program: Any, samples: list[dict[str, np.ndarray]], flags: Flags, err: Console
) -> Calibration:
    """Statistics of ``main`` on ``samples`` on the runtime, with a progress bar (unless
    ``--quiet``), with ``--padding-mask`` and within ``--stats-memory`` (when not given:
    :func:`default_stats_memory`); a bad padding mask or a short disk is a
    :class:`CliError` naming the flag."""
    budget = default_stats_memory() if flags.stats_memory is None else flags.stats_memory
    with progress("calibrating", quiet=flags.quiet, err=err) as update:
        try:
            return collect_calibration(
                program,
                samples,
                function=MAIN,
                on_sample=update,
                padding_mask=flags.padding_mask,
                max_stats_bytes=budget,
            )
        except ValueError as error:
            raise CliError(reword(error)) from None
