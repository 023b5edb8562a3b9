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
from typing import Any

from coreai_opt.cli.arguments import (
    COMPRESS,
    OPTION,
    PLAIN_ALGORITHMS,
    PROG,
    build_parser,
)
from coreai_opt.cli.config import Config
from coreai_opt.cli.errors import CliError
from coreai_opt.coreai_utils.passes.auto.check import DEFAULT_CHECKS
from coreai_opt.coreai_utils.passes.auto.gains import DEFAULT_PROBES
from coreai_opt.coreai_utils.passes.control import SPARSIFY_CLEARS, apply_values
from coreai_opt.coreai_utils.passes.quantize_options import QUANTIZE_CLEARS

__all__ = [
    "CLEARS",
    "COMPRESS",
    "LIBRARY_DEFAULTS",
    "PLAIN_ALGORITHMS",
    "PROG",
    "Flags",
    "library_kwargs",
    "parse_flags",
    "reword",
]

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
    "max_stats_bytes": "--stats-memory",
    "probes": "--probes",
    "check_uniform": "--check-uniform",
}


@dataclass(frozen=True)
class Flags:
    """Parsed command line. ``command`` is sparsify, quantize, palettize or auto;
    ``options`` are the library options given as flags (library names; flags not given are
    absent); ``size``, ``ratio``, ``candidates``, ``sensitivity``, ``probes``,
    ``check_uniform`` and ``check_with`` are auto's."""

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
    size: int | None = None
    ratio: float | None = None
    candidates: Path | None = None
    sensitivity: str = "proxy"
    probes: int = DEFAULT_PROBES
    check_uniform: int = DEFAULT_CHECKS
    check_with: Path | None = None
    stats_memory: int | None = None

    @property
    def algorithm(self) -> str | None:
        """The ``--algorithm`` given, if any."""
        value = self.options.get("algorithm")
        return None if value is None else str(value)


def parse_flags(argv: list[str] | None, prog: str = PROG) -> Flags:
    """Parse ``argv`` for ``prog`` (``coreai-sparsify``, or ``coreai-compress`` with a
    command); raises :class:`CliError` with one line on any mistake."""
    values = vars(build_parser(prog).parse_args(argv))
    options = {
        key[len(OPTION) :]: values.pop(key) for key in list(values) if key.startswith(OPTION)
    }
    options = {key: value for key, value in options.items() if value is not None}
    values.setdefault("config", None)  # auto takes candidates, not a config
    args = argparse.Namespace(**values)
    if args.demo and args.input is not None:
        msg = "give either INPUT or --demo, not both"
        raise CliError(msg)
    if not args.demo and args.input is None:
        msg = "missing INPUT (an .aimodel asset), or use --demo"
        raise CliError(msg)
    algorithm = options.get("algorithm")
    plain = PLAIN_ALGORITHMS.get(args.command)
    if algorithm not in (None, plain) and args.calibration is None and not args.plan:
        msg = f"--algorithm {algorithm} needs --calibration FILE.npz"
        raise CliError(msg)
    for flag, given in (
        ("--padding-mask", args.padding_mask),
        ("--stats-memory", args.stats_memory),
    ):
        if given is not None and args.calibration is None and not args.plan:
            msg = f"{flag} needs --calibration FILE.npz"
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
