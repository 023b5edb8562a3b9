"""Just enough of the MLIR bytecode format to pull a resource blob out of it.

The bindings can create ``dense_resource`` attributes from a buffer but cannot read one back.
Serializing a lone ``coreai.constant`` to bytecode writes its blob, unchanged and contiguous,
as the tail of the resource section, after its alignment, its size and padding; this module
finds that blob.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BytecodeError", "check_bytecode", "resource_blob", "resource_section"]

_MAGIC = b"ML\xefR"
_RESOURCE_SECTION = 5


class BytecodeError(ValueError):
    """The bytes are not MLIR bytecode this reader understands."""


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise BytecodeError("truncated bytecode")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        # MLIR's prefix varint: the count of trailing zero bits in the first byte is the
        # number of extra bytes; a zero first byte means a full 8-byte value follows.
        first = self.byte()
        if first & 1:
            return first >> 1
        if first == 0:
            return int.from_bytes(self.take(8), "little")
        extra = (first & -first).bit_length() - 1
        raw = first | int.from_bytes(self.take(extra), "little") << 8
        return raw >> (extra + 1)

    def take(self, count: int) -> memoryview:
        end = self.pos + count
        if end > len(self.data):
            raise BytecodeError("truncated bytecode")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def cstring(self) -> None:
        while self.byte() != 0:
            pass


def _sections(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """``(section id, payload)`` for every section; raises ``BytecodeError`` on bad framing."""
    reader = _Reader(memoryview(data))
    if bytes(reader.take(4)) != _MAGIC:
        raise BytecodeError("not MLIR bytecode (bad magic)")
    reader.varint()  # bytecode version
    reader.cstring()  # producer
    while reader.pos < len(reader.data):
        id_and_aligned = reader.byte()
        length = reader.varint()
        if id_and_aligned & 0x80:
            alignment = reader.varint()
            if alignment == 0 or alignment & (alignment - 1):
                raise BytecodeError(f"bad section alignment {alignment}")
            reader.pos += -reader.pos % alignment
        yield id_and_aligned & 0x7F, reader.take(length)


def resource_section(data: bytes | memoryview) -> memoryview:
    """The payload of the resource section of a bytecode buffer (a view, no copy)."""
    for section, payload in _sections(data):
        if section == _RESOURCE_SECTION:
            return payload
    raise BytecodeError("bytecode has no resource section")


def resource_blob(data: bytes | memoryview) -> memoryview:
    """The blob of a bytecode buffer holding one resource (a view, no copy): as many bytes
    as its size field says, ending the resource section; empty when the section is (an
    elided resource). Raises ``BytecodeError`` when the section does not frame one blob."""
    section = resource_section(data)
    if not section:
        return section
    reader = _Reader(section)
    alignment = reader.varint()
    size = reader.varint()
    padding = len(section) - reader.pos - size
    if alignment == 0 or alignment & (alignment - 1) or not 0 <= padding < alignment:
        raise BytecodeError("the resource section does not hold one blob")
    return section[len(section) - size :]


def check_bytecode(data: bytes | memoryview) -> None:
    """Raise ``BytecodeError`` unless ``data`` is framed as MLIR bytecode end to end.

    A structural check only (magic, header, section lengths), run before handing a file to
    the Core AI loader, which aborts the process on malformed input instead of raising.
    """
    for _ in _sections(data):
        pass
