"""Command-line flags of ``coreai-sparsify`` and their mapping onto the library's arguments."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from coreai_opt.coreai_utils import DType
from coreai_opt.coreai_utils.passes.control import apply_values

if TYPE_CHECKING:
    from coreai_opt.cli.config import Config

__all__ = ["PROG", "CliError", "Flags", "library_kwargs", "parse_flags", "parse_n_m", "reword"]

PROG = "coreai-sparsify"
QUANTIZE_CHOICES = ("int8", "uint8", "fp8_e4m3fn", "fp8_e5m2")
NBITS_CHOICES = (1, 2, 3, 4, 6, 8)

# library argument -> flag, for rewording the library's errors
_FLAG_OF = {
    "target_sparsity": "--target-sparsity",
    "n_m_ratio": "--n-m",
    "block_size": "--block-size",
    "quantize_dtype": "--quantize-dtype",
    "palettize_nbits": "--palettize-nbits",
    "weight_num_threshold": "--weight-num-threshold",
}
ALGORITHM_CHOICES = ("magnitude", "wanda", "sparsegpt")


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Flags:
    """Parsed command line."""

    input: Path | None
    output: Path | None
    demo: bool
    target_sparsity: float | None
    n_m: tuple[int, int] | None
    block_size: int | None
    quantize_dtype: str | None
    palettize_nbits: int | None
    weight_num_threshold: int | None
    exclude: list[str] | None
    config: Path | None
    plan: bool
    calibration: Path | None
    algorithm: str | None
    validate: bool
    validate_with: Path | None
    report: Path | None
    quiet: bool
    force: bool


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def parse_n_m(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; ``ValueError`` for anything else."""
    match = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if match is None:
        msg = f"takes N:M with integers N and M (like 2:4), got {text!r}"
        raise ValueError(msg)
    return int(match.group(1)), int(match.group(2))


def _n_m(text: str) -> tuple[int, int]:
    try:
        return parse_n_m(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--n-m {error}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Sparsify the weights of a Core AI .aimodel asset (optionally with joint "
        "quantization or palettization), and report what changed.",
    )
    parser.add_argument(
        "input", nargs="?", type=Path, help="input .aimodel asset (omit with --demo)"
    )
    parser.add_argument("-o", "--output", type=Path, help="output .aimodel path (not with --plan)")
    parser.add_argument("--demo", action="store_true", help="compress the built-in demo model")
    sparsity = parser.add_mutually_exclusive_group()
    sparsity.add_argument(
        "--target-sparsity",
        type=float,
        metavar="F",
        help="fraction of weights to zero (default 0.5)",
    )
    sparsity.add_argument(
        "--n-m", type=_n_m, metavar="N:M", help="zero N of every M input channels"
    )
    parser.add_argument(
        "--block-size", type=int, metavar="B", help="block sparsity along output channels"
    )
    joint = parser.add_mutually_exclusive_group()
    joint.add_argument(
        "--quantize-dtype", choices=QUANTIZE_CHOICES, help="store kept values quantized"
    )
    joint.add_argument(
        "--palettize-nbits", type=int, choices=NBITS_CHOICES, help="palettize kept values"
    )
    parser.add_argument(
        "--weight-num-threshold",
        type=int,
        metavar="T",
        help="minimum elements to compress (default 1024)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="keep weights matching PATTERN (glob on id or path, or kind:KIND) dense; repeatable",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="options, exclude patterns and [[override]] tables (flags take precedence)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="dry run: print what would happen to each weight (reads no weight data, writes "
        "nothing)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE.npz",
        help="inputs of main to calibrate on: one array per input, leading axis = samples",
    )
    parser.add_argument(
        "--algorithm",
        choices=ALGORITHM_CHOICES,
        help="how to choose pruned weights (default: wanda with --calibration, else magnitude)",
    )
    parser.add_argument(
        "--validate", action="store_true", help="run both assets and compare outputs"
    )
    parser.add_argument(
        "--validate-with",
        type=Path,
        metavar="FILE.npz",
        help="validate main on these inputs (same format as --calibration) instead of random",
    )
    parser.add_argument(
        "--report", type=Path, metavar="REPORT.json", help="write the report as JSON"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, table or warnings")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    return parser


def parse_flags(argv: list[str] | None) -> Flags:
    """Parse ``argv``; raises :class:`CliError` with one line on any mistake."""
    args = _parser().parse_args(argv)
    if args.demo and args.input is not None:
        msg = "give either INPUT or --demo, not both"
        raise CliError(msg)
    if not args.demo and args.input is None:
        msg = "missing INPUT (an .aimodel asset), or use --demo"
        raise CliError(msg)
    if args.algorithm in ("wanda", "sparsegpt") and args.calibration is None and not args.plan:
        msg = f"--algorithm {args.algorithm} needs --calibration FILE.npz"
        raise CliError(msg)
    if args.output is None and not args.plan:
        msg = "missing -o OUTPUT.aimodel (or use --plan for a dry run)"
        raise CliError(msg)
    return Flags(**vars(args))  # the parser's destinations are exactly Flags' fields


LIBRARY_DEFAULTS: dict[str, Any] = {
    "target_sparsity": 0.5,
    "n_m_ratio": None,
    "block_size": None,
    "quantize_dtype": None,
    "palettize_nbits": None,
    "weight_num_threshold": 1024,
    "algorithm": None,
}


def library_kwargs(flags: Flags, config: Config | None = None) -> dict[str, Any]:
    """``sparsify_weights`` arguments: the library's defaults, then the config file's
    top-level options, then the flags given (later ones win; a value for one of a mutually
    exclusive pair clears the other), plus ``exclude`` and ``overrides``."""
    given = {
        "target_sparsity": flags.target_sparsity,
        "n_m_ratio": flags.n_m,
        "block_size": flags.block_size,
        "quantize_dtype": flags.quantize_dtype,
        "palettize_nbits": flags.palettize_nbits,
        "weight_num_threshold": flags.weight_num_threshold,
        "algorithm": flags.algorithm,
    }
    options = apply_values(LIBRARY_DEFAULTS, config.options if config else {})
    options = apply_values(options, {k: v for k, v in given.items() if v is not None})
    if isinstance(options["quantize_dtype"], str) and options["quantize_dtype"] in QUANTIZE_CHOICES:
        options["quantize_dtype"] = DType(options["quantize_dtype"])
    exclude = (*(config.exclude if config else ()), *(flags.exclude or ()))
    return {
        **options,
        "exclude": exclude,
        "overrides": dict(config.overrides) if config and config.overrides else None,
    }


def reword(error: Exception) -> str:
    """A library error message with argument names replaced by their flags."""
    text = str(error)
    for argument, flag in _FLAG_OF.items():
        text = text.replace(argument, flag)
    return text.replace("; pass --target-sparsity=None to use --n-m", "")
