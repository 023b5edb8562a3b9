"""The command line's user errors and the parsers of option values that flags and the
``--config`` file share (a leaf of the CLI: it imports nothing of it)."""

from __future__ import annotations

import re

__all__ = ["CliError", "parse_n_m", "parse_size"]


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


def parse_n_m(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; ``ValueError`` for anything else."""
    match = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if match is None:
        msg = f"takes N:M with integers N and M (like 2:4), got {text!r}"
        raise ValueError(msg)
    return int(match.group(1)), int(match.group(2))


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """``"40MB"`` -> ``40_000_000`` (KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024;
    a plain number is bytes; rounded down to whole bytes); ``ValueError`` for anything else,
    zero or negative sizes included."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        msg = f"takes a size like 40MB, 512KiB or 1500000 (bytes), got {text!r}"
        raise ValueError(msg)
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        msg = f"must be more than 0 bytes, got {text!r}"
        raise ValueError(msg)
    return size
