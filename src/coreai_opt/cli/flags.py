"""Command-line flags of ``coreai-sparsify`` and their mapping onto the library's arguments."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from coreai_opt.coreai_utils import DType

__all__ = ["PROG", "CliError", "Flags", "library_kwargs", "parse_flags", "reword"]

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
    output: Path
    demo: bool
    target_sparsity: float | None
    n_m: tuple[int, int] | None
    block_size: int | None
    quantize_dtype: str | None
    palettize_nbits: int | None
    weight_num_threshold: int
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


def _n_m(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if match is None:
        msg = f"--n-m takes N:M with integers N and M (like 2:4), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(match.group(1)), int(match.group(2))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Sparsify the weights of a Core AI .aimodel asset (optionally with joint "
        "quantization or palettization), and report what changed.",
    )
    parser.add_argument(
        "input", nargs="?", type=Path, help="input .aimodel asset (omit with --demo)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .aimodel path")
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
        default=1024,
        metavar="T",
        help="minimum elements to compress (default 1024)",
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
    if args.algorithm in ("wanda", "sparsegpt") and args.calibration is None:
        msg = f"--algorithm {args.algorithm} needs --calibration FILE.npz"
        raise CliError(msg)
    return Flags(**vars(args))  # the parser's destinations are exactly Flags' fields


def library_kwargs(flags: Flags) -> dict[str, Any]:
    """``sparsify_weights`` arguments for the flags (library defaults where not given)."""
    target = flags.target_sparsity if flags.target_sparsity is not None else 0.5
    return {
        "target_sparsity": None if flags.n_m is not None else target,
        "n_m_ratio": flags.n_m,
        "block_size": flags.block_size,
        "quantize_dtype": DType(flags.quantize_dtype) if flags.quantize_dtype else None,
        "palettize_nbits": flags.palettize_nbits,
        "weight_num_threshold": flags.weight_num_threshold,
        "algorithm": flags.algorithm,
    }


def reword(error: Exception) -> str:
    """A library error message with argument names replaced by their flags."""
    text = str(error)
    for argument, flag in _FLAG_OF.items():
        text = text.replace(argument, flag)
    return text.replace("; pass --target-sparsity=None to use --n-m", "")
