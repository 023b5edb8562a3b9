"""The command line's user errors and the parsers of option values that flags and the
``--config`` file share (a leaf of the CLI: it imports nothing of it)."""

from __future__ import annotations

import re

__all__ = ["CliError", "parse_n_m"]


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


def parse_n_m(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; ``ValueError`` for anything else."""
    match = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if match is None:
        msg = f"takes N:M with integers N and M (like 2:4), got {text!r}"
        raise ValueError(msg)
    return int(match.group(1)), int(match.group(2))
