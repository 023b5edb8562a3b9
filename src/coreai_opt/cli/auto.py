"""``coreai-compress auto``: the most accurate per-weight mix within a size, as a command."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from coreai_opt.cli.assets import check_paths, check_room, open_source, write_atomically
from coreai_opt.cli.auto_report import allocation_json, check_line, print_allocation, with_choices
from coreai_opt.cli.candidates_file import load_candidates
from coreai_opt.cli.checks import SEED, calibrate_main, main_samples, validate, validate_with
from coreai_opt.cli.errors import CliError
from coreai_opt.cli.flags import Flags, reword
from coreai_opt.cli.progress import progress
from coreai_opt.cli.report import build_report, calibration_json, print_report, write_json
from coreai_opt.coreai_utils.assets import asset_bytes
from coreai_opt.coreai_utils.calibration import Calibration
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.passes.auto.candidates import DEFAULT_CANDIDATES
from coreai_opt.coreai_utils.passes.auto.plan import SizePlan
from coreai_opt.coreai_utils.passes.auto.size import compress_to_size_with_report, plan_to_size
from coreai_opt.coreai_utils.validation import OutputComparison

__all__ = ["run_auto"]

_STAGES = {
    "weighing": "weighing candidates",
    "probing": "calibrating the proxy on the runtime",
    "checking": "checking the plan against uniform configurations",
    "compressing": "compressing",
}


def _expected_bytes(flags: Flags, program: Any, source: Path) -> int:
    """About the output's bytes: the input asset's, with the candidate weights' bytes
    replaced by the budget."""
    sites = find_weights(program._module._mlir_module)  # noqa: SLF001
    dense = sum(site.nbytes for site in sites)
    target = flags.size if flags.size is not None else dense / (flags.ratio or 1.0)
    return asset_bytes(source) - dense + min(dense, int(target))


def run_auto(flags: Flags, out: Console, err: Console) -> None:
    """Weigh, allocate and (unless --plan) apply; print and record the result."""
    calibrated = flags.calibration is not None
    candidates = (
        load_candidates(flags.candidates, calibrated=calibrated)
        if flags.candidates
        else DEFAULT_CANDIDATES
    )
    if flags.padding_mask is not None and flags.calibration is None:
        msg = "--padding-mask needs --calibration FILE.npz"
        raise CliError(msg)
    if flags.sensitivity == "measured" and flags.calibration is None:
        msg = "--sensitivity measured needs --calibration FILE.npz (its first samples are run)"
        raise CliError(msg)
    if not flags.plan:
        assert flags.output is not None  # noqa: S101 - parse_flags guarantees it
        check_paths(flags.input, flags.output, force=flags.force, report=flags.report)
    kwargs: dict[str, Any] = {
        "target_bytes": flags.size,
        "target_ratio": flags.ratio,
        "candidates": candidates,
        "sensitivity": flags.sensitivity,
        "probes": flags.probes,
        "check_uniform": flags.check_uniform,
        "weight_num_threshold": flags.options.get("weight_num_threshold", 1024),
        "exclude": tuple(flags.exclude or ()),
    }
    with ExitStack() as stack:
        source, program = open_source(flags.input, stack, demo=flags.demo)
        if flags.output is not None and not flags.plan:
            check_room(flags.output, _expected_bytes(flags, program, source))
        held_out = (
            main_samples(program, flags.validate_with, "--validate-with")
            if flags.validate_with
            else None
        )
        if flags.check_with is not None:
            kwargs["check_samples"] = main_samples(program, flags.check_with, "--check-with")
        calibration: Calibration | None = None
        if flags.calibration is not None:
            samples = main_samples(program, flags.calibration, "--calibration")
            calibration = calibrate_main(program, samples, flags, err)
            kwargs["samples"] = samples  # measured runs, or the proxy's probes
        if flags.plan:
            plan = _staged(flags, err, plan_to_size, program, calibration, kwargs)
            if not flags.quiet:
                title = "coreai-compress auto --plan (dry run: nothing written)"
                print_allocation(plan, out, title=title)
            return
        result = _staged(
            flags, err, compress_to_size_with_report, program, calibration, kwargs, in_place=True
        )
        output = flags.output
        assert output is not None  # noqa: S101
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
            command="auto",
            options=_options(kwargs, flags),
            weights=result.weights,
            asset_bytes_before=asset_bytes(source),
            asset_bytes_after=asset_bytes(output),
            validation=validation,
            skipped=skipped,
            seed=None if held_out is not None else SEED,
            validation_inputs=str(flags.validate_with) if flags.validate_with else None,
            calibration=calibration_json(flags.calibration, calibration),
        )
        report["weights"] = with_choices(report["weights"], result.plan)
        report["allocation"] = allocation_json(result.plan)
    if flags.report is not None:
        write_json(report, flags.report)
    if not flags.quiet:
        print_report(report, out)
        print_allocation_totals(result.plan, out)


def _options(kwargs: dict[str, Any], flags: Flags) -> dict[str, Any]:
    """The report's options: the call's, with the candidates by name and no samples (the
    check's file by path)."""
    options = {
        key: value for key, value in kwargs.items() if key not in ("samples", "check_samples")
    }
    return {
        **options,
        "check_with": str(flags.check_with) if flags.check_with else None,
        "candidates": [c.name for c in kwargs["candidates"]],
        "size": flags.size,
        "ratio": flags.ratio,
    }


def print_allocation_totals(plan: SizePlan, out: Console) -> None:
    """The budget line under the report table."""
    out.print(
        f"budget {plan.budget} bytes: {plan.total_bytes} used "
        f"({plan.dense_bytes / plan.total_bytes:.2f}x smaller than dense); "
        f"estimated error {plan.total_error:.4g} ({plan.sensitivity})"
    )
    line = check_line(plan)
    if line is not None:
        out.print(line)


def _staged(
    flags: Flags,
    err: Console,
    function: Any,
    program: Any,
    calibration: Calibration | None,
    kwargs: dict[str, Any],
    **extra: Any,
) -> Any:
    """``function(program, calibration=..., **kwargs)`` with a progress bar per stage;
    library errors as one-line CLI errors."""
    with ExitStack() as bars:
        current: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if current.get("stage") != stage:
                if current:
                    bars.close()
                current["stage"] = stage
                current["update"] = bars.enter_context(
                    progress(_STAGES.get(stage, stage), quiet=flags.quiet, err=err)
                )
            current["update"](done, total)

        try:
            return function(
                program, calibration=calibration, on_progress=on_progress, **kwargs, **extra
            )
        except ValueError as error:
            raise CliError(reword(error)) from None
