"""The argument parsers of ``coreai-sparsify`` and ``coreai-compress``: every command's
flags, with the library options' flags stored under ``OPTION`` + the library's name."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from coreai_opt.cli.errors import CliError, parse_n_m, parse_size
from coreai_opt.coreai_utils.passes.auto.check import DEFAULT_CHECKS
from coreai_opt.coreai_utils.passes.auto.gains import DEFAULT_PROBES
from coreai_opt.coreai_utils.passes.auto.size import SENSITIVITIES

__all__ = [
    "ALGORITHMS",
    "AUTO",
    "COMMANDS",
    "COMPRESS",
    "OPTION",
    "PLAIN_ALGORITHMS",
    "PROG",
    "build_parser",
]

PROG = "coreai-sparsify"
COMPRESS = "coreai-compress"
COMMANDS = ("sparsify", "quantize", "palettize")
"""The pass commands; ``auto`` mixes them."""
AUTO = "auto"
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
OPTION = "opt_"
"""The dest prefix of the flags that set a library option."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _n_m(text: str) -> tuple[int, int]:
    try:
        return parse_n_m(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--n-m {error}") from None


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    """Arguments every pass command has: :func:`_shared`, plus --config and --algorithm."""
    _shared(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="options, exclude patterns and [[override]] tables (flags take precedence)",
    )
    plain = PLAIN_ALGORITHMS[command]
    parser.add_argument(
        "--algorithm",
        dest=f"{OPTION}algorithm",
        choices=ALGORITHMS[command],
        help=f"default: {plain} without --calibration, the calibrated default with it",
    )


def _shared(parser: argparse.ArgumentParser, plan: str = "") -> None:
    """Arguments every command has: input, output, demo, threshold, exclude, plan,
    calibration, padding mask, statistics memory, validation, report, quiet, force."""
    parser.add_argument(
        "input", nargs="?", type=Path, help="input .aimodel asset (omit with --demo)"
    )
    parser.add_argument("-o", "--output", type=Path, help="output .aimodel path (not with --plan)")
    parser.add_argument("--demo", action="store_true", help="compress the built-in demo model")
    parser.add_argument(
        "--weight-num-threshold",
        dest=f"{OPTION}weight_num_threshold",
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
        "--plan",
        action="store_true",
        help=plan
        or "dry run: print what would happen to each weight (reads no weight data, writes nothing)",
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
    parser.add_argument(
        "--stats-memory",
        type=_size,
        metavar="SIZE",
        help="memory for the calibration statistics; the rest spill to TMPDIR, same "
        "results (default: a quarter of this machine's memory)",
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


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _auto_arguments(parser: argparse.ArgumentParser) -> None:
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--size",
        type=_size,
        metavar="SIZE",
        help="the weight data's budget: bytes, or with a unit (40MB, 512KiB, 1.5GB)",
    )
    budget.add_argument(
        "--ratio",
        type=float,
        metavar="R",
        help="the budget as the dense weight bytes divided by R (8: an eighth)",
    )
    parser.add_argument(
        "--candidates",
        type=Path,
        metavar="FILE.toml",
        help="[[candidate]] configurations to choose from (default: the built-in ladder)",
    )
    parser.add_argument(
        "--sensitivity",
        choices=SENSITIVITIES,
        default="proxy",
        help="how each weight's error is estimated (default proxy)",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=DEFAULT_PROBES,
        metavar="N",
        help=(
            "runtime runs on the first --calibration samples that calibrate the proxy across "
            f"layers (default {DEFAULT_PROBES}; 0: none)"
        ),
    )
    parser.add_argument(
        "--check-uniform",
        type=int,
        default=DEFAULT_CHECKS,
        metavar="N",
        help=(
            "run the plan against the N best-estimated uniform configurations that fit (or "
            "fit with weights a step down), on the --check-with or first --calibration "
            "samples, and keep the one closest to the dense outputs "
            f"(default {DEFAULT_CHECKS}; 0: no check)"
        ),
    )
    parser.add_argument(
        "--check-with",
        type=Path,
        metavar="FILE.npz",
        help=(
            "inputs the calibration did not see, for that check (its first 8; default: the "
            "first 8 --calibration samples, on which fitted options look better)"
        ),
    )


AUTO_HELP = (
    "compress each weight with the configuration (of the three passes) that keeps the model "
    "most accurate within a size"
)


def _sparsify_arguments(parser: argparse.ArgumentParser) -> None:
    sparsity = parser.add_mutually_exclusive_group()
    sparsity.add_argument(
        "--target-sparsity",
        dest=f"{OPTION}target_sparsity",
        type=float,
        metavar="F",
        help="fraction of weights to zero (default 0.5)",
    )
    sparsity.add_argument(
        "--n-m",
        dest=f"{OPTION}n_m_ratio",
        type=_n_m,
        metavar="N:M",
        help="zero N of every M input channels",
    )
    parser.add_argument(
        "--block-size",
        dest=f"{OPTION}block_size",
        type=int,
        metavar="B",
        help="block sparsity along output channels",
    )
    joint = parser.add_mutually_exclusive_group()
    joint.add_argument(
        "--quantize-dtype",
        dest=f"{OPTION}quantize_dtype",
        choices=QUANTIZE_CHOICES,
        help="store kept values quantized",
    )
    joint.add_argument(
        "--palettize-nbits",
        dest=f"{OPTION}palettize_nbits",
        type=int,
        choices=NBITS_CHOICES,
        help="palettize kept values",
    )


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        dest=f"{OPTION}dtype",
        choices=QUANTIZE_WEIGHT_CHOICES,
        help="storage type of the weights (required, here or in --config)",
    )
    parser.add_argument(
        "--qscheme",
        dest=f"{OPTION}qscheme",
        choices=("symmetric", "asymmetric"),
        help="zero points (asymmetric: integer types only; default symmetric)",
    )
    parser.add_argument(
        "--granularity",
        dest=f"{OPTION}granularity",
        choices=("per_tensor", "per_channel", "per_block"),
        help="what one scale covers (default per_channel)",
    )
    parser.add_argument(
        "--block-size",
        dest=f"{OPTION}block_size",
        type=int,
        metavar="B",
        help="input channels per block with per_block (default 32)",
    )
    parser.add_argument(
        "--scale-dtype",
        dest=f"{OPTION}scale_dtype",
        choices=("fp8_e8m0fnu",),
        help="power-of-two scales for fp8 (fp4 always uses them)",
    )


def _palettize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-bits",
        dest=f"{OPTION}n_bits",
        type=int,
        choices=NBITS_CHOICES,
        help="index bits: 2**n LUT entries (default 4)",
    )
    parser.add_argument(
        "--granularity",
        dest=f"{OPTION}granularity",
        choices=("per_tensor", "per_channel", "per_grouped_channel"),
        help="what one LUT covers (default per_tensor)",
    )
    parser.add_argument(
        "--group-size",
        dest=f"{OPTION}group_size",
        type=int,
        metavar="G",
        help="output channels per LUT with per_grouped_channel (default 32)",
    )
    parser.add_argument(
        "--cluster-dim",
        dest=f"{OPTION}cluster_dim",
        type=int,
        metavar="V",
        help="vector palettization: V consecutive input values per LUT entry",
    )
    parser.add_argument(
        "--per-channel-scale",
        dest=f"{OPTION}enable_per_channel_scale",
        action="store_const",
        const=True,
        help="normalize each output channel before clustering",
    )
    parser.add_argument(
        "--lut-dtype",
        dest=f"{OPTION}lut_dtype",
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


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser of ``prog``: ``coreai-sparsify``, or ``coreai-compress`` with a command."""
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
    auto = commands.add_parser(AUTO, help=AUTO_HELP, description=AUTO_HELP)
    _shared(
        auto,
        plan="dry run: weigh every weight and print the allocation (reads the weights, runs "
        "the calibration, writes nothing)",
    )
    _auto_arguments(auto)
    return parser
