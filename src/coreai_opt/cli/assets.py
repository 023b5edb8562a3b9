"""Checking paths and writing the output atomically, without touching the input."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from coreai.authoring import AIProgram

from coreai_opt.cli.errors import CliError
from coreai_opt.coreai_utils.assets import AssetError, rough_size
from coreai_opt.coreai_utils.assets import load_program as load_asset_program

__all__ = ["check_paths", "load_program", "open_source", "write_atomically"]


def check_paths(
    source: Path | None, output: Path, *, force: bool, report: Path | None = None
) -> None:
    """Refuse outputs that would damage the input or an existing file (before any work)."""
    if output.suffix != ".aimodel":
        msg = f"output must end in .aimodel: {output}"
        raise CliError(msg)
    if source is not None:
        src, out = source.resolve(), output.resolve()
        if out == src:
            msg = f"output is the input: {output}; choose another path"
            raise CliError(msg)
        if src in out.parents:
            msg = f"output {output} is inside the input asset {source}; choose another path"
            raise CliError(msg)
    if output.exists() and not force:
        msg = f"output exists: {output} (use --force to replace it)"
        raise CliError(msg)
    if not output.parent.is_dir():
        msg = f"output directory does not exist: {output.parent}"
        raise CliError(msg)
    if report is not None:
        _check_report(report, source, output)


def _check_report(report: Path, source: Path | None, output: Path) -> None:
    target = report.resolve()
    for asset, role in ((source, "input"), (output, "output")):
        if asset is not None and (target == asset.resolve() or asset.resolve() in target.parents):
            msg = f"report {report} would be written into the {role} asset; choose another path"
            raise CliError(msg)
    if not report.parent.is_dir():
        msg = f"report directory does not exist: {report.parent}"
        raise CliError(msg)


def load_program(source: Path) -> AIProgram:
    """The input asset's program; bad input becomes a one-line :class:`CliError`."""
    try:
        return load_asset_program(source)
    except AssetError as error:
        msg = f"input {error.problem}: {error.path}"
        raise CliError(msg) from None


def check_room(output: Path, needed: int) -> None:
    """Refuse, before any work, an output of about ``needed`` bytes that the disk holding
    ``output`` has no room for (it is written beside it, then moved into place)."""
    free = shutil.disk_usage(output.parent).free
    if needed > free:
        msg = (
            f"not enough disk for {output}: it needs about {rough_size(needed)}, "
            f"{output.parent} has {rough_size(free)} free"
        )
        raise CliError(msg)


def write_atomically(program: AIProgram, output: Path) -> None:
    """Save ``program`` to a temporary directory beside ``output``, then move it into place.

    A failure leaves no partial output; an existing ``output`` (allowed by ``--force``) is
    replaced only once the new asset is complete.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        fresh = staging / output.name
        try:
            program.save_asset(fresh)
        except (OSError, RuntimeError, ValueError) as error:
            msg = f"cannot write {output}: {error}"
            raise CliError(msg) from None
        if output.exists() or output.is_symlink():
            output.rename(staging / "previous")
        fresh.rename(output)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)


def open_source(input_path: Path | None, stack: ExitStack, *, demo: bool) -> tuple[Path, AIProgram]:
    """The input asset's path and program; with ``demo`` the built-in demo network, saved to
    a scratch asset that ``stack`` removes."""
    if demo:
        from coreai_opt.cli.demo_model import build_demo_program  # noqa: PLC0415

        program = build_demo_program()
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coreai-sparsify-")))
        source = scratch / "demo.aimodel"
        program.save_asset(source)
        return source, program
    if input_path is None:
        msg = "missing INPUT (an .aimodel asset), or use --demo"
        raise CliError(msg)
    return input_path, load_program(input_path)
