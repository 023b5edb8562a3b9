"""``coreai-sparsify`` and ``coreai-compress``: compress an ``.aimodel`` asset, optionally
validate it, and report."""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from coreai_opt.cli.arguments import AUTO
from coreai_opt.cli.assets import check_paths, check_room, open_source, write_atomically
from coreai_opt.cli.auto import run_auto
from coreai_opt.cli.checks import (
    MAIN,
    SEED,
    calibrate_main,
    main_samples,
    validate,
    validate_with,
)
from coreai_opt.cli.commands import COMMAND
from coreai_opt.cli.config import Config, load_config
from coreai_opt.cli.errors import CliError
from coreai_opt.cli.flags import (
    CLEARS,
    COMPRESS,
    LIBRARY_DEFAULTS,
    PLAIN_ALGORITHMS,
    PROG,
    Flags,
    library_kwargs,
    parse_flags,
    reword,
)
from coreai_opt.cli.native_output import NativeStderr
from coreai_opt.cli.progress import progress
from coreai_opt.cli.report import (
    build_report,
    calibration_json,
    print_decisions,
    print_plan,
    print_report,
    write_json,
)
from coreai_opt.coreai_utils import WeightOutcome
from coreai_opt.coreai_utils.assets import asset_bytes
from coreai_opt.coreai_utils.calibration import (
    Calibration,
    calibration_outline,
    check_padding_mask,
)
from coreai_opt.coreai_utils.ir.signature import graph_inputs
from coreai_opt.coreai_utils.memory import drop_mapped_pages
from coreai_opt.coreai_utils.passes.control import apply_values
from coreai_opt.coreai_utils.validation import OutputComparison

__all__ = ["main"]


class _ConsoleHandler(logging.Handler):
    """Library warnings as ``warning: ...`` lines on the stderr console."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = escape(record.getMessage())
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def _config(flags: Flags) -> Config | None:
    """The --config file, its top-level options checked on their own (so an error names the
    file, not a flag; quantize's ``dtype`` may come from ``--dtype``)."""
    if flags.config is None:
        return None
    defaults = LIBRARY_DEFAULTS[flags.command]
    config = load_config(flags.config, tuple(defaults))
    options = apply_values(defaults, config.options, CLEARS[flags.command])
    if flags.command == "quantize" and options["dtype"] is None:
        options["dtype"] = flags.options.get("dtype")
    if flags.command != "quantize" or options["dtype"] is not None:
        try:
            COMMAND[flags.command].validate(calibrated=True, **options)
        except ValueError as error:
            raise CliError(f"--config {flags.config}: {error}") from None
    return config


def _library_error(error: ValueError, flags: Flags) -> CliError:
    """A library error as a one-line CLI error (an override's error names the config)."""
    text = str(error)
    if text.startswith("overrides") and flags.config is not None:
        return CliError(f"--config {flags.config}: {text}")
    return CliError(reword(error))


def _algorithms(kwargs: dict[str, Any]) -> set[str | None]:
    """The algorithms asked for: the call's (None: the default) and every override's."""
    overrides = (kwargs["overrides"] or {}).values()
    return {kwargs["algorithm"]} | {values.get("algorithm") for values in overrides if values}


def _needs_statistics(flags: Flags, kwargs: dict[str, Any]) -> list[str]:
    """The calibrated algorithms asked for explicitly (by a flag, the config, an override)."""
    plain = PLAIN_ALGORITHMS[flags.command]
    return sorted(str(a) for a in _algorithms(kwargs) if a is not None and a != plain)


def _requested_algorithm(kwargs: dict[str, Any], flags: Flags) -> None:
    """Refuse a calibrated algorithm (from a flag, the config or an override) without
    calibration, and quantize without a dtype."""
    if flags.command == "quantize" and kwargs["dtype"] is None:
        msg = "missing --dtype (the storage type; or dtype in --config)"
        raise CliError(msg)
    needing = _needs_statistics(flags, kwargs)
    if needing and flags.calibration is None and not flags.plan:
        source = "--algorithm" if flags.algorithm else f"--config {flags.config}:"
        msg = f"{source} {needing[0]} needs --calibration FILE.npz"
        raise CliError(msg)


def _plan(flags: Flags, kwargs: dict[str, Any], program: Any, out: Console) -> None:
    """--plan: the table of what would happen to each weight; no weight data, no output."""
    outline = None
    if flags.calibration is not None:
        main_samples(program, flags.calibration, "--calibration")  # checked, not run
        outline = calibration_outline(program, function=MAIN)
        if flags.padding_mask is not None:
            try:
                module = program._module._mlir_module  # noqa: SLF001
                check_padding_mask(graph_inputs(module, MAIN), flags.padding_mask, MAIN)
            except ValueError as error:
                raise CliError(reword(error)) from None
    elif _needs_statistics(flags, kwargs):
        outline = calibration_outline(program, function=MAIN)
    try:
        plans = COMMAND[flags.command].plan(program, calibration=outline, **kwargs)
    except ValueError as error:
        raise _library_error(error, flags) from None
    if flags.quiet:
        return
    if flags.command == "sparsify":
        print_plan(plans, out, calibrated=outline is not None)
    else:
        expected = COMMAND[flags.command].expected
        print_decisions(plans, out, flags.command, expected, calibrated=outline is not None)


def _expected_output_bytes(flags: Flags, kwargs: dict[str, Any], program: Any, source: Path) -> int:
    """About the output's bytes, from the plan (no weight data read): the input asset's,
    less what each planned weight is expected to save."""
    command = COMMAND[flags.command]
    outline = None
    if flags.calibration is not None or _needs_statistics(flags, kwargs):
        outline = calibration_outline(program, function=MAIN)
    try:
        plans = command.plan(program, calibration=outline, **kwargs)
    except ValueError as error:
        raise _library_error(error, flags) from None
    saved: int = sum(p.site.nbytes - command.expected(p) for p in plans)
    return asset_bytes(source) - saved


def _run(flags: Flags, out: Console, err: Console) -> None:
    if flags.command == AUTO:
        run_auto(flags, out, err)
        return
    kwargs = library_kwargs(flags, _config(flags))
    _requested_algorithm(kwargs, flags)
    if not flags.plan:
        assert flags.output is not None  # noqa: S101 - parse_flags guarantees it
        check_paths(flags.input, flags.output, force=flags.force, report=flags.report)
    with ExitStack() as stack:
        source, program = open_source(flags.input, stack, demo=flags.demo)
        if flags.plan:
            _plan(flags, kwargs, program, out)
            return
        output = flags.output
        assert output is not None  # noqa: S101
        check_room(output, _expected_output_bytes(flags, kwargs, program, source))
        held_out = (
            main_samples(program, flags.validate_with, "--validate-with")
            if flags.validate_with
            else None
        )
        calibration = _calibrate(flags, kwargs, program, err)
        # the loader maps the input; each weight read would stay resident (memory.py)
        mapped = sorted(source.glob("*.mlirb"))
        drop_mapped_pages(mapped)
        command = COMMAND[flags.command]
        with progress(command.label, quiet=flags.quiet, err=err) as update:

            def on_weight(done: int, total: int, _: WeightOutcome) -> None:
                update(done, total)

            try:
                result = command.run(
                    program,
                    in_place=True,
                    on_weight=on_weight,
                    calibration=calibration,
                    **kwargs,
                )
            except ValueError as error:
                raise _library_error(error, flags) from None
        write_atomically(result.program, output)
        validation: dict[str, list[OutputComparison]] | None = None
        skipped: dict[str, str] = {}
        if held_out is not None:
            validation = validate_with(source, output, held_out)
        elif flags.validate:
            validation, skipped = validate(
                source, output, result.program, None if flags.quiet else err
            )
        report = build_report(
            source="<demo>" if flags.demo else str(source),
            output=str(output),
            command=flags.command,
            options=_report_options(flags, kwargs, calibration),
            weights=result.weights,
            asset_bytes_before=asset_bytes(source),
            asset_bytes_after=asset_bytes(output),
            validation=validation,
            skipped=skipped,
            seed=None if held_out is not None else SEED,
            validation_inputs=str(flags.validate_with) if flags.validate_with else None,
            calibration=calibration_json(flags.calibration, calibration),
        )
    if flags.report is not None:
        write_json(report, flags.report)
    if not flags.quiet:
        print_report(report, out)


def _report_options(
    flags: Flags, kwargs: dict[str, Any], calibration: Calibration | None
) -> dict[str, Any]:
    """The options as the report records them (with the resolved algorithm)."""
    resolved = COMMAND[flags.command].algorithm(
        kwargs["algorithm"], calibrated=calibration is not None
    )
    return {**kwargs, "algorithm": resolved.value}


def _calibrate(
    flags: Flags, kwargs: dict[str, Any], program: Any, err: Console
) -> Calibration | None:
    """The calibration: None without --calibration, or when every algorithm asked for is
    the command's data-free one (the samples are still checked)."""
    if flags.calibration is None:
        return None
    samples = main_samples(program, flags.calibration, "--calibration")
    if _algorithms(kwargs) <= {PLAIN_ALGORITHMS[flags.command]}:
        return None
    return calibrate_main(program, samples, flags, err)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``prog`` (``coreai-sparsify``, or ``coreai-compress`` with a command); returns
    the exit status (0 ok, 2 user error, 1 unexpected failure)."""
    with NativeStderr() as native:
        err = Console(file=native.console_stream, soft_wrap=True)
        code, quiet = _main(argv, prog, err)
        native.finish(show=code != 0 or not quiet, console=err)
    return code


def _main(argv: list[str] | None, prog: str, err: Console) -> tuple[int, bool]:
    """The command with ``err`` as its stderr console; ``(exit status, quiet)``."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # files and pipes: no wrapping at 80 columns
    try:
        flags = parse_flags(argv, prog)
    except CliError as error:
        err.print(f"{prog}: error: {error}", highlight=False, markup=False)
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
        err.print(f"{prog}: error: {error}", highlight=False, markup=False)
        return 2, flags.quiet
    except KeyboardInterrupt:
        err.print(f"{prog}: interrupted", highlight=False, markup=False)
        return 130, flags.quiet
    except Exception as error:
        err.print(f"{prog}: failed: {type(error).__name__}: {error}", highlight=False, markup=False)
        return 1, flags.quiet
    finally:
        library_log.removeHandler(handler)
        library_log.propagate = propagate
    return 0, flags.quiet


def entry() -> None:
    """Console-script entry point of ``coreai-sparsify``."""
    sys.exit(main())


def compress_entry() -> None:
    """Console-script entry point of ``coreai-compress``."""
    sys.exit(main(prog=COMPRESS))


if __name__ == "__main__":
    entry()
