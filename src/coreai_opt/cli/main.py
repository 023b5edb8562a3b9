"""``coreai-sparsify``: compress an ``.aimodel`` asset, optionally validate it, and report."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coreai_opt.cli.assets import check_paths, load_program, write_atomically
from coreai_opt.cli.flags import PROG, CliError, Flags, library_kwargs, parse_flags, reword
from coreai_opt.cli.native_output import NativeStderr
from coreai_opt.cli.report import build_report, print_report, write_json
from coreai_opt.cli.samples import load_samples
from coreai_opt.coreai_utils import WeightOutcome, sparsify_with_report
from coreai_opt.coreai_utils.assets import asset_bytes
from coreai_opt.coreai_utils.calibration import Calibration, collect_calibration
from coreai_opt.coreai_utils.ir.signature import graph_inputs
from coreai_opt.coreai_utils.passes.options import check_algorithm
from coreai_opt.coreai_utils.runtime import run_asset, run_samples
from coreai_opt.coreai_utils.validation import (
    OutputComparison,
    compare_outputs,
    entry_points,
    example_inputs,
    runtime_function,
)

__all__ = ["main"]

SEED = 0
CALIBRATION_FUNCTION = "main"


class _ConsoleHandler(logging.Handler):
    """Library warnings as ``warning: ...`` lines on the stderr console."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {record.getMessage()}", highlight=False)


def _validate(
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
                err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
            continue
        results[function] = compare_outputs(reference, compressed)
    return results, skipped


def _validate_with(
    source: Path, output: Path, samples: list[dict[str, np.ndarray]]
) -> dict[str, list[OutputComparison]]:
    """Compare ``main`` of both assets on the given samples (all samples' outputs pooled)."""
    function = runtime_function(CALIBRATION_FUNCTION)
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
    return {CALIBRATION_FUNCTION: compare_outputs(pooled[0], pooled[1])}


def _function_specs(program: Any, flag: str) -> Any:
    try:
        return graph_inputs(program._module._mlir_module, CALIBRATION_FUNCTION)  # noqa: SLF001
    except KeyError:
        msg = f"{flag} needs a function named {CALIBRATION_FUNCTION!r}; the program has none"
        raise CliError(msg) from None


@contextmanager
def _progress(label: str, flags: Flags, err: Console) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on a terminal (nothing with --quiet or off a terminal);
    yields ``update(done, total)``."""
    if flags.quiet or not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _calibrate(
    flags: Flags, program: Any, err: Console
) -> tuple[Calibration | None, list[dict[str, np.ndarray]] | None]:
    """The calibration (None without --calibration or with --algorithm magnitude) and the
    --validate-with samples, both checked before any weight is touched."""
    checked = None
    if flags.validate_with is not None:
        specs = _function_specs(program, "--validate-with")
        checked = load_samples(flags.validate_with, "--validate-with", specs)
    if flags.calibration is None:
        return None, checked
    specs = _function_specs(program, "--calibration")
    samples = load_samples(flags.calibration, "--calibration", specs)
    if flags.algorithm == "magnitude":
        return None, checked
    with _progress("calibrating", flags, err) as update:
        calibration = collect_calibration(
            program, samples, function=CALIBRATION_FUNCTION, on_sample=update
        )
    return calibration, checked


def _run(flags: Flags, out: Console, err: Console) -> None:
    check_paths(flags.input, flags.output, force=flags.force, report=flags.report)
    kwargs = library_kwargs(flags)
    with ExitStack() as stack:
        if flags.demo:
            from coreai_opt.cli.demo_model import build_demo_program  # noqa: PLC0415

            program = build_demo_program()
            scratch = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="coreai-sparsify-"))
            )
            source = scratch / "demo.aimodel"
            program.save_asset(source)
        else:
            assert flags.input is not None  # noqa: S101 - parse_flags guarantees it
            source = flags.input
            program = load_program(source)
        calibration, validation_samples = _calibrate(flags, program, err)
        with _progress("sparsifying", flags, err) as update:

            def on_weight(done: int, total: int, _: WeightOutcome) -> None:
                update(done, total)

            try:
                result = sparsify_with_report(
                    program,
                    in_place=True,
                    on_weight=on_weight,
                    calibration=calibration,
                    **kwargs,
                )
            except ValueError as error:
                raise CliError(reword(error)) from None
        write_atomically(result.program, flags.output)
        validation: dict[str, list[OutputComparison]] | None = None
        skipped: dict[str, str] = {}
        if validation_samples is not None:
            validation = _validate_with(source, flags.output, validation_samples)
        elif flags.validate:
            validation, skipped = _validate(
                source, flags.output, result.program, None if flags.quiet else err
            )
        report = build_report(
            source="<demo>" if flags.demo else str(source),
            output=str(flags.output),
            options={
                **kwargs,
                "algorithm": check_algorithm(
                    kwargs["algorithm"], calibrated=calibration is not None
                ).value,
            },
            weights=result.weights,
            asset_bytes_before=asset_bytes(source),
            asset_bytes_after=asset_bytes(flags.output),
            validation=validation,
            skipped=skipped,
            seed=None if validation_samples is not None else SEED,
            validation_inputs=str(flags.validate_with) if flags.validate_with else None,
            calibration=None
            if calibration is None
            else {
                "file": str(flags.calibration),
                "function": calibration.function,
                "samples": calibration.samples,
            },
        )
    if flags.report is not None:
        write_json(report, flags.report)
    if not flags.quiet:
        print_report(report, out)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 user error, 1 unexpected failure)."""
    with NativeStderr() as native:
        err = Console(file=native.console_stream, soft_wrap=True)
        code, quiet = _main(argv, err)
        native.finish(show=code != 0 or not quiet, console=err)
    return code


def _main(argv: list[str] | None, err: Console) -> tuple[int, bool]:
    """The command with ``err`` as its stderr console; ``(exit status, quiet)``."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # files and pipes: no wrapping at 80 columns
    try:
        flags = parse_flags(argv)
    except CliError as error:
        err.print(f"{PROG}: error: {error}", highlight=False, markup=False)
        return 2, False
    library_log = logging.getLogger("coreai_opt")
    handler = _ConsoleHandler(err)
    propagate = library_log.propagate
    if not flags.quiet:
        library_log.addHandler(handler)
    library_log.propagate = False
    try:
        _run(flags, out, err)
    except CliError as error:
        err.print(f"{PROG}: error: {error}", highlight=False, markup=False)
        return 2, flags.quiet
    except KeyboardInterrupt:
        err.print(f"{PROG}: interrupted", highlight=False, markup=False)
        return 130, flags.quiet
    except Exception as error:
        err.print(f"{PROG}: failed: {type(error).__name__}: {error}", highlight=False, markup=False)
        return 1, flags.quiet
    finally:
        library_log.removeHandler(handler)
        library_log.propagate = propagate
    return 0, flags.quiet


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
