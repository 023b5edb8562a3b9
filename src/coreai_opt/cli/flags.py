"""Command-line flags of ``coreai-sparsify`` and ``coreai-compress`` and their mapping onto
the library's arguments.

Every command takes the same input/output, calibration, control and validation flags; each
has its own option flags (named after the library's arguments) and ``--algorithm`` choices.
An option flag that is not given is left to the ``--config`` file, then to the library's
default.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from coreai_opt.cli.config import Config
from coreai_opt.cli.errors import CliError, parse_n_m
from coreai_opt.coreai_utils.passes.control import SPARSIFY_CLEARS, apply_values
from coreai_opt.coreai_utils.passes.quantize_options import QUANTIZE_CLEARS

__all__ = [
    "ALGORITHMS",
    "COMMANDS",
    "COMPRESS",
    "LIBRARY_DEFAULTS",
    "PLAIN_ALGORITHMS",
    "PROG",
    "Flags",
    "library_kwargs",
    "parse_flags",
    "reword",
]

PROG = "coreai-sparsify"
COMPRESS = "coreai-compress"
COMMANDS = ("sparsify", "quantize", "palettize")
QUANTIZE_CHOICES = ("int8", "uint8", "fp8_e4m3fn", "fp8_e5m2")
QUANTIZE_WEIGHT_CHOICES = ("int4", "uint4", "int8", "uint8", "fp8_e4m3fn", "fp8_e5m2", "fp4_e2m1fn")
NBITS_CHOICES = (1, 2, 3, 4, 6, 8)
ALGORITHMS = {
    "sparsify": ("magnitude", "wanda", "sparsegpt"),
    "quantize": ("rtn", "gptq"),
    "palettize": ("kmeans", "weighted_kmeans", "obs"),
}
PLAIN_ALGORITHMS = {"sparsify": "magnitude", "quantize": "rtn", "palettize": "kmeans"}
"""The algorithm of each command that needs no calibration."""

LIBRARY_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "sparsify": {
        "target_sparsity": 0.5,
        "n_m_ratio": None,
        "block_size": None,
        "quantize_dtype": None,
        "palettize_nbits": None,
        "weight_num_threshold": 1024,
        "algorithm": None,
    },
    "quantize": {
        "dtype": None,
        "qscheme": "symmetric",
        "granularity": "per_channel",
        "block_size": 32,
        "scale_dtype": None,
        "weight_num_threshold": 1024,
        "algorithm": None,
    },
    "palettize": {
        "lut_dtype": None,
        "n_bits": 4,
        "granularity": "per_tensor",
        "group_size": 32,
        "cluster_dim": 1,
        "enable_per_channel_scale": False,
        "weight_num_threshold": 1024,
        "algorithm": None,
    },
}
"""Each command's library options and their defaults (the keys a ``--config`` may set)."""
CLEARS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "sparsify": SPARSIFY_CLEARS,
    "quantize": QUANTIZE_CLEARS,
    "palettize": {},
}

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
    "padding_mask": "--padding-mask",
}
_OPTION = "opt_"  # the dest prefix of the flags that set a library option


@dataclass(frozen=True)
class Flags:
    """Parsed command line. ``command`` is sparsify, quantize or palettize; ``options`` are
    the library options given as flags (library names; flags not given are absent)."""

    prog: str
    command: str
    options: dict[str, Any]
    input: Path | None
    output: Path | None
    demo: bool
    exclude: list[str] | None
    config: Path | None
    plan: bool
    calibration: Path | None
    padding_mask: str | None
    validate: bool
    validate_with: Path | None
    report: Path | None
    quiet: bool
    force: bool

    @property
    def algorithm(self) -> str | None:
        """The ``--algorithm`` given, if any."""
        value = self.options.get("algorithm")
        return None if value is None else str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _n_m(text: str) -> tuple[int, int]:
    try:
        return parse_n_m(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--n-m {error}") from None


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    """Arguments every command has: input, output, demo, calibration, control, plan,
    validation, report, quiet, force."""
    parser.add_argument(
        "input", nargs="?", type=Path, help="input .aimodel asset (omit with --demo)"
    )
    parser.add_argument("-o", "--output", type=Path, help="output .aimodel path (not with --plan)")
    parser.add_argument("--demo", action="store_true", help="compress the built-in demo model")
    parser.add_argument(
        "--weight-num-threshold",
        dest=f"{_OPTION}weight_num_threshold",
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
        "--padding-mask",
        metavar="NAME",
        help="input of main whose zero entries mark padded positions (left out of the "
        "calibration statistics)",
    )
    plain = PLAIN_ALGORITHMS[command]
    parser.add_argument(
        "--algorithm",
        dest=f"{_OPTION}algorithm",
        choices=ALGORITHMS[command],
        help=f"default: {plain} without --calibration, the calibrated default with it",
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
        dest=f"{_OPTION}target_sparsity",
        type=float,
        metavar="F",
        help="fraction of weights to zero (default 0.5)",
    )
    sparsity.add_argument(
        "--n-m",
        dest=f"{_OPTION}n_m_ratio",
        type=_n_m,
        metavar="N:M",
        help="zero N of every M input channels",
    )
    parser.add_argument(
        "--block-size",
        dest=f"{_OPTION}block_size",
        type=int,
        metavar="B",
        help="block sparsity along output channels",
    )
    joint = parser.add_mutually_exclusive_group()
    joint.add_argument(
        "--quantize-dtype",
        dest=f"{_OPTION}quantize_dtype",
        choices=QUANTIZE_CHOICES,
        help="store kept values quantized",
    )
    joint.add_argument(
        "--palettize-nbits",
        dest=f"{_OPTION}palettize_nbits",
        type=int,
        choices=NBITS_CHOICES,
        help="palettize kept values",
    )


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        dest=f"{_OPTION}dtype",
        choices=QUANTIZE_WEIGHT_CHOICES,
        help="storage type of the weights (required, here or in --config)",
    )
    parser.add_argument(
        "--qscheme",
        dest=f"{_OPTION}qscheme",
        choices=("symmetric", "asymmetric"),
        help="zero points (asymmetric: integer types only; default symmetric)",
    )
    parser.add_argument(
        "--granularity",
        dest=f"{_OPTION}granularity",
        choices=("per_tensor", "per_channel", "per_block"),
        help="what one scale covers (default per_channel)",
    )
    parser.add_argument(
        "--block-size",
        dest=f"{_OPTION}block_size",
        type=int,
        metavar="B",
        help="input channels per block with per_block (default 32)",
    )
    parser.add_argument(
        "--scale-dtype",
        dest=f"{_OPTION}scale_dtype",
        choices=("fp8_e8m0fnu",),
        help="power-of-two scales for fp8 (fp4 always uses them)",
    )


def _palettize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-bits",
        dest=f"{_OPTION}n_bits",
        type=int,
        choices=NBITS_CHOICES,
        help="index bits: 2**n LUT entries (default 4)",
    )
    parser.add_argument(
        "--granularity",
        dest=f"{_OPTION}granularity",
        choices=("per_tensor", "per_channel", "per_grouped_channel"),
        help="what one LUT covers (default per_tensor)",
    )
    parser.add_argument(
        "--group-size",
        dest=f"{_OPTION}group_size",
        type=int,
        metavar="G",
        help="output channels per LUT with per_grouped_channel (default 32)",
    )
    parser.add_argument(
        "--cluster-dim",
        dest=f"{_OPTION}cluster_dim",
        type=int,
        metavar="V",
        help="vector palettization: V consecutive input values per LUT entry",
    )
    parser.add_argument(
        "--per-channel-scale",
        dest=f"{_OPTION}enable_per_channel_scale",
        action="store_const",
        const=True,
        help="normalize each output channel before clustering",
    )
    parser.add_argument(
        "--lut-dtype",
        dest=f"{_OPTION}lut_dtype",
        choices=QUANTIZE_CHOICES,
        help="quantize the LUTs themselves",
    )


_ARGUMENTS = {
    "sparsify": (_sparsify_arguments, "prune weights (magnitude, wanda, sparsegpt)"),
    "quantize": (_quantize_arguments, "quantize dense weights (int4/8, fp8, fp4; rtn, gptq)"),
    "palettize": (
        _palettize_arguments,
        "palettize dense weights with look-up tables (kmeans, weighted_kmeans, obs)",
    ),
}


def _parser(prog: str) -> argparse.ArgumentParser:
    if prog == PROG:
        parser = _Parser(
            prog=PROG,
            description="Sparsify the weights of a Core AI .aimodel asset (optionally with "
            "joint quantization or palettization), and report what changed. The same as "
            "coreai-compress sparsify.",
        )
        _common(parser, "sparsify")
        _sparsify_arguments(parser)
        parser.set_defaults(command="sparsify")
        return parser
    parser = _Parser(
        prog=prog,
        description="Compress the weights of a Core AI .aimodel asset and report what changed.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        arguments, text = _ARGUMENTS[name]
        command = commands.add_parser(name, help=text, description=text)
        _common(command, name)
        arguments(command)
    return parser


def parse_flags(argv: list[str] | None, prog: str = PROG) -> Flags:
    """Parse ``argv`` for ``prog`` (``coreai-sparsify``, or ``coreai-compress`` with a
    command); raises :class:`CliError` with one line on any mistake."""
    values = vars(_parser(prog).parse_args(argv))
    options = {
        key[len(_OPTION) :]: values.pop(key) for key in list(values) if key.startswith(_OPTION)
    }
    options = {key: value for key, value in options.items() if value is not None}
    args = argparse.Namespace(**values)
    if args.demo and args.input is not None:
        msg = "give either INPUT or --demo, not both"
        raise CliError(msg)
    if not args.demo and args.input is None:
        msg = "missing INPUT (an .aimodel asset), or use --demo"
        raise CliError(msg)
    algorithm = options.get("algorithm")
    plain = PLAIN_ALGORITHMS[args.command]
    if algorithm not in (None, plain) and args.calibration is None and not args.plan:
        msg = f"--algorithm {algorithm} needs --calibration FILE.npz"
        raise CliError(msg)
    if args.padding_mask is not None and args.calibration is None and not args.plan:
        msg = "--padding-mask needs --calibration FILE.npz"
        raise CliError(msg)
    if args.output is None and not args.plan:
        msg = "missing -o OUTPUT.aimodel (or use --plan for a dry run)"
        raise CliError(msg)
    return Flags(prog=prog, options=options, **values)


def library_kwargs(flags: Flags, config: Config | None = None) -> dict[str, Any]:
    """The pass's arguments: the library's defaults, then the config file's top-level
    options, then the flags given (later ones win; a value for one of a mutually exclusive
    pair clears the other), plus ``exclude`` and ``overrides``."""
    clears = CLEARS[flags.command]
    options = apply_values(
        LIBRARY_DEFAULTS[flags.command], config.options if config else {}, clears
    )
    options = apply_values(options, flags.options, clears)
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
