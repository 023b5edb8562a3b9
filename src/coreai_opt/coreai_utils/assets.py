"""Loading ``.aimodel`` assets safely, and measuring them.

The Core AI loader aborts the whole process on malformed bytecode instead of raising, so
:func:`load_program` checks an asset first: the sha256 recorded beside each bytecode file,
and the bytecode's framing (magic, header, section lengths).
"""

from __future__ import annotations

import hashlib
import mmap
from pathlib import Path
from typing import BinaryIO

from coreai.authoring import AIModelAsset, AIProgram

from coreai_opt.coreai_utils.ir.bytecode import BytecodeError, check_bytecode

__all__ = ["AssetError", "asset_bytes", "load_program", "rough_size"]


class AssetError(ValueError):
    """An asset is missing, not an asset, unreadable or corrupt: ``problem`` says which."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def rough_size(count: int) -> str:
    """``count`` bytes for a message: in GiB from 1 GiB up (two decimals), else MiB."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def asset_bytes(path: Path) -> int:
    """Bytes on disk of an asset directory (or a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


_CHUNK = 16 << 20


def _check_integrity(source: Path) -> None:
    """The recorded hash, hashed from the file in chunks, and the framing, read through a
    read-only map (only the section headers are touched): never a copy of the model in
    memory (a 2 GB asset's check used to take 2 GB)."""
    for bytecode in sorted(source.glob("*.mlirb")):
        try:
            with bytecode.open("rb") as file:
                digest = hashlib.sha256()
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
                recorded = bytecode.with_suffix(".hash")
                if recorded.is_file() and recorded.read_bytes() != digest.digest():
                    problem = f"is corrupt ({bytecode.name} does not match its recorded hash)"
                    raise AssetError(source, problem)
                _check_framing(source, bytecode, file)
        except OSError as error:
            raise AssetError(source, f"cannot be read ({error.strerror or error})") from None


def _check_framing(source: Path, bytecode: Path, file: BinaryIO) -> None:
    problem = None
    if bytecode.stat().st_size == 0:
        problem = _framing_problem(b"")
    else:
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            problem = _framing_problem(view)
            view.release()  # the map closes only once no view of it is left
    if problem is not None:
        raise AssetError(source, f"is corrupt ({bytecode.name}: {problem})")


def _framing_problem(data: bytes | memoryview) -> str | None:
    # returns text, not the error: its traceback would keep views of the map alive
    try:
        check_bytecode(data)
    except BytecodeError as error:
        return str(error)
    return None


def load_program(path: Path | str) -> AIProgram:
    """The program stored in the ``.aimodel`` asset at ``path``, checked before loading.

    Raises:
        AssetError: ``path`` does not exist, is not a valid asset, cannot be read, or its
            bytecode is corrupt.
    """
    source = Path(path)
    if not source.exists():
        raise AssetError(source, "does not exist")
    if not source.is_dir() or not AIModelAsset.is_valid(source):
        raise AssetError(source, "is not a valid .aimodel asset")
    _check_integrity(source)
    try:
        return AIModelAsset.load(source).program
    except (OSError, RuntimeError) as error:
        raise AssetError(source, f"cannot be read ({error})") from None
