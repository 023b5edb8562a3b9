"""``--candidates FILE.toml``: the configurations ``coreai-compress auto`` chooses from.

    extend_default = true            # add these to the built-in ladder (default: replace it)

    [[candidate]]
    name = "int4-b64"                # unique; shown in the report
    method = "quantize"              # sparsify, quantize or palettize
    dtype = "int4"                   # any option of that pass (as in --config)
    granularity = "per_block"
    block_size = 64
    match = "kind:linear"            # optional: only for these weights (a pattern or a list)

Option values as in ``--config`` (``n_m_ratio = "2:4"``, types and schemes by name);
``weight_num_threshold`` is the command's (``--weight-num-threshold``). Unknown keys,
malformed TOML and options the pass refuses are errors naming the file and the candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coreai_opt.cli.config import read_toml, table_options
from coreai_opt.cli.errors import CliError
from coreai_opt.coreai_utils.passes.auto.candidates import (
    DEFAULT_CANDIDATES,
    Candidate,
    resolve_candidates,
)
from coreai_opt.coreai_utils.passes.methods import METHODS

__all__ = ["load_candidates"]


def load_candidates(path: Path, *, calibrated: bool) -> tuple[Candidate, ...]:
    """The candidates in ``path`` (after the default ladder with ``extend_default``), each
    checked by its pass as a call with (``calibrated``) or without calibration would be;
    ``CliError`` (one line naming the file) on any problem found without a program."""
    label = f"--candidates {path}"
    data = read_toml(path, label)
    extend = data.pop("extend_default", False)
    if not isinstance(extend, bool):
        raise CliError(f"{label}: extend_default must be true or false")
    tables = data.pop("candidate", [])
    if data:
        keys = ", ".join(map(repr, sorted(data)))
        raise CliError(f"{label}: unknown key {keys}; allowed: extend_default, [[candidate]]")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise CliError(f"{label}: candidate must be [[candidate]] tables")
    if not tables:
        raise CliError(f"{label}: no [[candidate]] tables: give at least one configuration")
    listed = [_candidate(label, number, dict(table)) for number, table in enumerate(tables, 1)]
    candidates = (*DEFAULT_CANDIDATES, *listed) if extend else tuple(listed)
    try:
        resolve_candidates(candidates, calibrated=calibrated, weight_num_threshold=0)
    except ValueError as error:  # a TypeError of the checks is one too
        raise CliError(f"{label}: {error}") from None
    return candidates


def _candidate(label: str, number: int, table: dict[str, Any]) -> Candidate:
    where = f"candidate {number}"
    name = table.pop("name", None)
    if not isinstance(name, str) or not name:
        raise CliError(f'{label}: {where} needs name = "NAME"')
    where = f"{where} ({name})"
    method = table.pop("method", None)
    if method not in METHODS:
        allowed = ", ".join(METHODS)
        raise CliError(f"{label}: {where}: method must be one of {allowed}, got {method!r}")
    match = table.pop("match", [])
    if isinstance(match, str):
        match = [match]
    if not isinstance(match, list) or not all(isinstance(p, str) for p in match):
        raise CliError(f"{label}: {where}: match must be a pattern or a list of patterns")
    keys = tuple(k for k in METHODS[method].keys if k != "weight_num_threshold")
    options = table_options(label, table, where, keys)
    return Candidate(name, method, options, tuple(match))
