"""``--config FILE.toml``: options, exclude patterns and overrides for the command.

    target_sparsity = 0.5            # any option of the command's library call (top level)
    algorithm = "wanda"
    exclude = ["kind:embedding"]     # patterns, added to --exclude

    [[override]]                     # in order; the first matching one wins
    match = "*/BertSelfAttention*"
    target_sparsity = 0.3

    [[override]]
    match = "*/BertOutput*"
    dense = true                     # leave the matching weights dense

Values: ``n_m_ratio`` as ``"2:4"`` or ``[2, 4]``; types and schemes by name (``"int8"``,
``"per_block"``). The keys are the command's: sparsify's ``target_sparsity``...; quantize's
``dtype``, ``qscheme``, ``granularity``, ``block_size``, ``scale_dtype``; palettize's
``n_bits``, ``granularity``, ``group_size``, ``cluster_dim``, ``enable_per_channel_scale``,
``lut_dtype``; and ``weight_num_threshold`` and ``algorithm`` for all. Unknown keys and
malformed TOML are errors naming the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coreai_opt.cli.errors import CliError, parse_n_m

__all__ = ["Config", "load_config", "read_toml", "table_options"]


@dataclass(frozen=True)
class Config:
    """The file's options, exclude patterns, and overrides (pattern -> options or None)."""

    options: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    overrides: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def table_options(
    label: str, table: dict[str, Any], where: str, keys: tuple[str, ...]
) -> dict[str, Any]:
    """A TOML table's options: only ``keys`` allowed, ``n_m_ratio`` as ``"2:4"`` or a list;
    ``CliError`` prefixed with ``label`` (the flag and file) and ``where`` (the table)."""
    unknown = sorted(set(table) - set(keys))
    if unknown:
        msg = (
            f"{label}: {where}: unknown key {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(keys)}"
        )
        raise CliError(msg)
    options = dict(table)
    ratio = options.get("n_m_ratio")
    if isinstance(ratio, str):
        try:
            options["n_m_ratio"] = parse_n_m(ratio)
        except ValueError as error:
            raise CliError(f"{label}: {where}: n_m_ratio {error}") from None
    elif isinstance(ratio, list):
        options["n_m_ratio"] = tuple(ratio)
    return options


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """The TOML document in ``path``; ``CliError`` prefixed with ``label`` when it is
    missing, unreadable or malformed."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"{label}: cannot be read ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise CliError(f"{label}: not valid TOML ({error})") from None


def load_config(path: Path, keys: tuple[str, ...]) -> Config:
    """Read and check ``path``: ``keys`` are the options the command takes; ``CliError``
    (one line naming the file) on any problem."""
    label = f"--config {path}"
    data = read_toml(path, label)
    exclude = data.pop("exclude", [])
    if isinstance(exclude, str):
        exclude = [exclude]
    if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
        raise CliError(f"--config {path}: exclude must be a list of pattern strings")
    tables = data.pop("override", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise CliError(f"--config {path}: override must be [[override]] tables")
    overrides: dict[str, dict[str, Any] | None] = {}
    for number, table in enumerate(tables, start=1):
        where = f"override {number}"
        pattern = table.pop("match", None)
        if not isinstance(pattern, str) or not pattern:
            raise CliError(f'--config {path}: {where} needs match = "PATTERN"')
        dense = table.pop("dense", False)
        if not isinstance(dense, bool):
            raise CliError(f"--config {path}: {where}: dense must be true or false")
        if dense and table:
            msg = f"--config {path}: {where} ({pattern}): dense = true takes no other options"
            raise CliError(msg)
        if pattern in overrides:
            raise CliError(f"--config {path}: {where}: pattern {pattern!r} appears twice")
        where = f"{where} ({pattern})"
        overrides[pattern] = None if dense else table_options(label, table, where, keys)
    return Config(table_options(label, data, "top level", keys), tuple(exclude), overrides)
