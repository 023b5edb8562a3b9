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
from dataclasses import dataclass
from pathlib import PurePath

from coreai._compiler.ir import Operation

__all__ = ["SourceInfo", "source_info", "unique_paths"]

_FILE_LOC = re.compile(r'loc\("([^"]+)":(\d+):(\d+)\)')
_CALL_STACK = re.compile(r'"call_stack":\s*(\[[^\]]*\])')
# files of the frameworks themselves: the user's model code is anything else
_LIBRARY = re.compile(r"[/\\](?:site|dist)-packages[/\\](?:torch|coreai_torch|coreai)[/\\]")


@dataclass(frozen=True)
class SourceInfo:
    """What an op's location says about it.

    ``location``: ``file:line:col`` of its user source (its first location outside torch and
    Core AI's own packages, else its first file location); ``path``: the module call stack
    outermost first, joined with ``/`` (``BertModel$1/.../Linear$2``); ``source``: the user
    source as ``file.py:line`` (base name). Each is None when the location has none.
    """

    location: str | None
    path: str | None
    source: str | None


def source_info(op: Operation) -> SourceInfo:
    """The :class:`SourceInfo` of ``op``, from one reading of its location text."""
    text = str(op.location)
    locations = [
        (path, int(line), int(col))
        for path, line, col in _FILE_LOC.findall(text)
        if path not in {"-", ""}
    ]
    user = [loc for loc in locations if not _LIBRARY.search(loc[0])]
    first = (user or locations)[0] if locations else None
    return SourceInfo(
        location=None if first is None else f"{first[0]}:{first[1]}:{first[2]}",
        path="/".join(_call_stack(text)) or None,
        source=f"{PurePath(user[0][0]).name}:{user[0][1]}" if user else None,
    )


def _call_stack(text: str) -> list[str]:
    """The module call stack in a location text, outermost first (empty when absent)."""
    match = _CALL_STACK.search(text)
    if match is None:
        return []
    try:
        frames = json.loads(match.group(1))
    except json.JSONDecodeError:
        return []
    return [str(frame) for frame in reversed(frames)]


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
