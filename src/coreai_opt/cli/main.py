"""``coreai-sparsify``: compress an ``.aimodel`` asset, optionally validate it, and report."""

from __future__ import annotations

import logging
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coreai_opt.cli.assets import check_paths, load_program, write_atomically
from coreai_opt.cli.flags import PROG, CliError, Flags, library_kwargs, parse_flags, reword
from coreai_opt.cli.report import build_report, print_report, write_json
from coreai_opt.coreai_utils import WeightOutcome, sparsify_with_report
from coreai_opt.coreai_utils.assets import asset_bytes
from coreai_opt.coreai_utils.runtime import run_asset
from coreai_opt.coreai_utils.validation import (
    OutputComparison,
    compare_outputs,
    entry_points,
    example_inputs,
    runtime_function,
)

__all__ = ["main"]

SEED = 0


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
        progress = None
        if not flags.quiet and err.is_terminal:
            progress = stack.enter_context(
                Progress(
                    TextColumn("sparsifying"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=err,
                    transient=True,
                )
            )
        task = progress.add_task("weights", total=None) if progress else None

        def on_weight(done: int, total: int, _: WeightOutcome) -> None:
            if progress is not None and task is not None:
                progress.update(task, completed=done, total=total)

        try:
            result = sparsify_with_report(program, in_place=True, on_weight=on_weight, **kwargs)
        except ValueError as error:
            raise CliError(reword(error)) from None
        if progress is not None:
            progress.stop()
        write_atomically(result.program, flags.output)
        validation, skipped = (
            _validate(source, flags.output, result.program, None if flags.quiet else err)
            if flags.validate
            else (None, {})
        )
        report = build_report(
            source="<demo>" if flags.demo else str(source),
            output=str(flags.output),
            options=kwargs,
            weights=result.weights,
            asset_bytes_before=asset_bytes(source),
            asset_bytes_after=asset_bytes(flags.output),
            validation=validation,
            skipped=skipped,
            seed=SEED,
        )
    if flags.report is not None:
        write_json(report, flags.report)
    if not flags.quiet:
        print_report(report, out)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 user error, 1 unexpected failure)."""
    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # files and pipes: no wrapping at 80 columns
    try:
        flags = parse_flags(argv)
    except CliError as error:
        err.print(f"{PROG}: error: {error}", highlight=False, markup=False)
        return 2
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
        return 2
    except KeyboardInterrupt:
        err.print(f"{PROG}: interrupted", highlight=False, markup=False)
        return 130
    except Exception as error:
        err.print(f"{PROG}: failed: {type(error).__name__}: {error}", highlight=False, markup=False)
        return 1
    finally:
        library_log.removeHandler(handler)
        library_log.propagate = propagate
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
