"""Readable names for weights, from the debug information a program carries.

coreai-torch (in its default debug mode) records on every op the module ``call_stack``
(innermost first, each class with its instance number: ``["Linear$2", "BertSelfAttention$3",
..., "BertModel$1"]``) and fuses the op's library location with the model's own source
location. Programs authored with ``coreai.authoring`` carry plain file locations. This module
reads them from an op's location text (no weight data is touched).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from coreai._compiler.ir import Operation

__all__ = ["call_stack", "module_path", "source_location", "unique_paths", "user_source"]

_FILE_LOC = re.compile(r'loc\("([^"]+)":(\d+):(\d+)\)')
_CALL_STACK = re.compile(r'"call_stack":\s*(\[[^\]]*\])')
# files of the frameworks themselves: the user's model code is anything else
_LIBRARY = re.compile(r"[/\\](?:site|dist)-packages[/\\](?:torch|coreai_torch|coreai)[/\\]")


def _locations(op: Operation) -> list[tuple[str, int, int]]:
    return [
        (path, int(line), int(col))
        for path, line, col in _FILE_LOC.findall(str(op.location))
        if path not in {"-", ""}
    ]


def source_location(op: Operation) -> str | None:
    """``file:line:col`` of the op's user source (its first location outside torch and
    Core AI's own packages, else its first file location); None without a file location."""
    locations = _locations(op)
    if not locations:
        return None
    user = [loc for loc in locations if not _LIBRARY.search(loc[0])]
    path, line, col = (user or locations)[0]
    return f"{path}:{line}:{col}"


def user_source(op: Operation) -> str | None:
    """``file.py:line`` (base name) of the op's user source location, or None."""
    user = [loc for loc in _locations(op) if not _LIBRARY.search(loc[0])]
    if not user:
        return None
    path, line, _ = user[0]
    return f"{PurePath(path).name}:{line}"


def call_stack(op: Operation) -> list[str]:
    """The module call stack recorded on the op, outermost first (empty when absent)."""
    match = _CALL_STACK.search(str(op.location))
    if match is None:
        return []
    try:
        frames = json.loads(match.group(1))
    except json.JSONDecodeError:
        return []
    return [str(frame) for frame in reversed(frames)]


def module_path(op: Operation) -> str | None:
    """The call stack joined with ``/`` (``BertModel$1/.../Linear$2``), or None."""
    frames = call_stack(op)
    return "/".join(frames) if frames else None


def unique_paths(paths: list[str]) -> list[str]:
    """``paths`` made unique in order: a repeat of an earlier path gets ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    taken = set(paths)
    out = []
    for path in paths:
        count = seen.get(path, 0) + 1
        seen[path] = count
        if count == 1:
            out.append(path)
            continue
        candidate = f"{path}#{count}"
        while candidate in taken:
            count += 1
            candidate = f"{path}#{count}"
        seen[path] = count
        taken.add(candidate)
        out.append(candidate)
    return out
