"""Command-line flags of ``coreai-sparsify`` and ``coreai-compress`` and their mapping onto
the library's arguments."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from coreai_opt.cli.config import Config
from coreai_opt.cli.errors import CliError, parse_n_m
from coreai_opt.coreai_utils import DType
from coreai_opt.coreai_utils.passes.control import apply_values

__all__ = [
    "COMPRESS",
    "PROG",
    "Flags",
    "library_kwargs",
    "parse_flags",
    "reword",
]

PROG = "coreai-sparsify"
COMPRESS = "coreai-compress"
QUANTIZE_CHOICES = ("int8", "uint8", "fp8_e4m3fn", "fp8_e5m2")
QUANTIZE_WEIGHT_CHOICES = ("int4", "uint4", "int8", "uint8", "fp8_e4m3fn", "fp8_e5m2", "fp4_e2m1fn")
NBITS_CHOICES = (1, 2, 3, 4, 6, 8)

# library argument -> flag, for rewording the library's errors
_FLAG_OF = {
    "n_bits": "--n-bits",
    "group_size": "--group-size",
    "cluster_dim": "--cluster-dim",
    "dtype": "--dtype",
    "qscheme": "--qscheme",
    "granularity": "--granularity",
    "scale_dtype": "--scale-dtype",
    "lut_dtype": "--lut-dtype",
    "enable_per_channel_scale": "--per-channel-scale",
    "target_sparsity": "--target-sparsity",
    "n_m_ratio": "--n-m",
    "block_size": "--block-size",
    "quantize_dtype": "--quantize-dtype",
    "palettize_nbits": "--palettize-nbits",
    "weight_num_threshold": "--weight-num-threshold",
}
ALGORITHM_CHOICES = ("magnitude", "wanda", "sparsegpt")


@dataclass(frozen=True)
class Flags:
    """Parsed command line. ``command`` is sparsify, quantize or palettize; ``pass_options``
    are the quantize/palettize library arguments (empty for sparsify, whose options are the
    named fields)."""

    prog: str
    command: str
    pass_options: dict[str, Any]
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


def _n_m(text: str) -> tuple[int, int]:
    try:
        return parse_n_m(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--n-m {error}") from None


def _common(parser: argparse.ArgumentParser, *, plan: bool) -> None:
    """Arguments every command has: input, output, demo, validation, report, quiet, force."""
    parser.add_argument(
        "input", nargs="?", type=Path, help="input .aimodel asset (omit with --demo)"
    )
    out_help = "output .aimodel path" + (" (not with --plan)" if plan else "")
    parser.add_argument("-o", "--output", type=Path, help=out_help)
    parser.add_argument("--demo", action="store_true", help="compress the built-in demo model")
    parser.add_argument(
        "--weight-num-threshold",
        type=int,
        metavar="T",
        help="minimum elements to compress (default 1024)",
    )
    parser.add_argument(
        "--validate", action="store_true", help="run both assets and compare outputs"
    )
    parser.add_argument(
        "--validate-with",
        type=Path,
        metavar="FILE.npz",
        help="validate main on these inputs (one array per input, leading axis = samples)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="REPORT.json", help="write the report as JSON"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, table or warnings")
    parser.add_argument("--force", action="store_true", help="replace an existing output")


def _sparsify_arguments(parser: argparse.ArgumentParser) -> None:
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


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        dest="q_dtype",
        required=True,
        choices=QUANTIZE_WEIGHT_CHOICES,
        help="storage type of the weights",
    )
    parser.add_argument(
        "--qscheme",
        dest="q_qscheme",
        choices=("symmetric", "asymmetric"),
        default="symmetric",
        help="zero points (asymmetric: integer types only)",
    )
    parser.add_argument(
        "--granularity",
        dest="q_granularity",
        choices=("per_tensor", "per_channel", "per_block"),
        default="per_channel",
        help="what one scale covers (default per_channel)",
    )
    parser.add_argument(
        "--block-size",
        dest="q_block_size",
        type=int,
        default=32,
        metavar="B",
        help="input channels per block with per_block (default 32)",
    )
    parser.add_argument(
        "--scale-dtype",
        dest="q_scale_dtype",
        choices=("fp8_e8m0fnu",),
        help="power-of-two scales for fp8 (fp4 always uses them)",
    )


def _palettize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-bits",
        dest="p_n_bits",
        type=int,
        choices=NBITS_CHOICES,
        default=4,
        help="index bits: 2**n LUT entries (default 4)",
    )
    parser.add_argument(
        "--granularity",
        dest="p_granularity",
        choices=("per_tensor", "per_channel", "per_grouped_channel"),
        default="per_tensor",
        help="what one LUT covers (default per_tensor)",
    )
    parser.add_argument(
        "--group-size",
        dest="p_group_size",
        type=int,
        default=32,
        metavar="G",
        help="output channels per LUT with per_grouped_channel (default 32)",
    )
    parser.add_argument(
        "--cluster-dim",
        dest="p_cluster_dim",
        type=int,
        default=1,
        metavar="V",
        help="vector palettization: V consecutive input values per LUT entry",
    )
    parser.add_argument(
        "--per-channel-scale",
        dest="p_enable_per_channel_scale",
        action="store_true",
        help="normalize each output channel before clustering",
    )
    parser.add_argument(
        "--lut-dtype",
        dest="p_lut_dtype",
        choices=QUANTIZE_CHOICES,
        help="quantize the LUTs themselves",
    )


def _parser(prog: str) -> argparse.ArgumentParser:
    if prog == PROG:
        parser = _Parser(
            prog=PROG,
            description="Sparsify the weights of a Core AI .aimodel asset (optionally with "
            "joint quantization or palettization), and report what changed. The same as "
            "coreai-compress sparsify.",
        )
        _common(parser, plan=True)
        _sparsify_arguments(parser)
        parser.set_defaults(command="sparsify")
        return parser
    parser = _Parser(
        prog=prog,
        description="Compress the weights of a Core AI .aimodel asset and report what changed.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, arguments, text in (
        ("sparsify", _sparsify_arguments, "prune weights (magnitude, wanda, sparsegpt)"),
        ("quantize", _quantize_arguments, "quantize dense weights (int4/8, fp8, fp4)"),
        ("palettize", _palettize_arguments, "palettize dense weights with look-up tables"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        _common(command, plan=name == "sparsify")
        arguments(command)
    return parser


_SPARSIFY_ONLY: dict[str, Any] = {
    "target_sparsity": None,
    "n_m": None,
    "block_size": None,
    "quantize_dtype": None,
    "palettize_nbits": None,
    "exclude": None,
    "config": None,
    "plan": False,
    "calibration": None,
    "algorithm": None,
}


def parse_flags(argv: list[str] | None, prog: str = PROG) -> Flags:
    """Parse ``argv`` for ``prog`` (``coreai-sparsify``, or ``coreai-compress`` with a
    command); raises :class:`CliError` with one line on any mistake."""
    values = {**_SPARSIFY_ONLY, **vars(_parser(prog).parse_args(argv))}
    pass_options = {
        key[2:]: values.pop(key) for key in list(values) if key.startswith(("q_", "p_"))
    }
    args = argparse.Namespace(**values)
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
        msg = "missing -o OUTPUT.aimodel" + (
            " (or use --plan for a dry run)" if args.command == "sparsify" else ""
        )
        raise CliError(msg)
    if pass_options:
        threshold = values["weight_num_threshold"]
        pass_options["weight_num_threshold"] = 1024 if threshold is None else threshold
    return Flags(prog=prog, pass_options=pass_options, **values)


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
        text = re.sub(rf"(?<![\w-]){argument}\b", flag, text)
    return text.replace("; pass --target-sparsity=None to use --n-m", "")
