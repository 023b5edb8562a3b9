"""The bitmask-sparse form of a pruned weight: non-zero values plus a packed bit mask."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.numerics.parallel import parallel_map, row_chunks

__all__ = ["SparseWeight", "pack_bits", "pack_mask", "to_sparse", "unpack_bits", "unpack_mask"]


@dataclass(frozen=True)
class SparseWeight:
    """A weight in bitmask-sparse form.

    ``values`` is 1-D, in the weight's dtype: the stored (non-zero) elements in row-major
    order. ``packed_mask`` is the bit mask of stored positions as Core AI's ``ui1`` expects
    (see :func:`pack_mask`) for a weight of shape ``shape``; it has ``values.size`` bits set.
    """

    values: np.ndarray
    packed_mask: np.ndarray
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def mask(self) -> np.ndarray:
        """The boolean mask (unpacked: one byte per element)."""
        return unpack_mask(self.packed_mask, self.shape)

    @property
    def sparsity(self) -> float:
        """Fraction of elements that are zero after decompression."""
        return 1.0 - self.values.size / self.size if self.size else 0.0

    def dense(self) -> np.ndarray:
        """The dense weight this represents (zeros where nothing is stored)."""
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out[self.mask] = self.values
        return out


def to_sparse(weight: np.ndarray, keep: np.ndarray) -> SparseWeight:
    """Keep the elements of ``weight`` where ``keep`` is True; zeros are never stored.

    Kept values are bit-identical to the input; ``-0.0`` counts as zero.
    """
    mask = keep & (weight != 0)
    return SparseWeight(
        values=np.extract(mask, weight), packed_mask=pack_mask(mask), shape=weight.shape
    )


def pack_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned ``nbits``-wide codes (1-D, each < 2**nbits) as Core AI's ``ui<nbits>``
    storage: a little-endian bit stream, code i in bits [i*nbits, (i+1)*nbits)."""
    codes = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if nbits == 8:
        return codes
    # codes per group, so that a group fills whole bytes: 8 for 1 and 3 bits, 4 for 2 and 6...
    group = math.lcm(nbits, 8) // nbits
    group_bytes = group * nbits // 8
    packed = np.empty(-(-codes.size * nbits // 8), dtype=np.uint8)
    whole = codes.size // group

    def chunk(bounds: tuple[int, int]) -> None:
        first, last = bounds
        columns = codes[first * group : last * group].reshape(-1, group)
        _pack_groups(columns, nbits, packed[first * group_bytes : last * group_bytes])

    parallel_map(chunk, row_chunks(whole, group))
    rest = codes[whole * group :]
    if rest.size:  # a partial last group, zero-padded
        tail = np.zeros((1, group), dtype=np.uint8)
        tail[0, : rest.size] = rest
        end = np.empty(group_bytes, dtype=np.uint8)
        _pack_groups(tail, nbits, end)
        packed[whole * group_bytes :] = end[: packed.size - whole * group_bytes]
    return packed


def _pack_groups(columns: np.ndarray, nbits: int, out: np.ndarray) -> None:
    """Pack contiguous ``[g, group]`` codes into ``out`` (``g * group * nbits / 8`` bytes)."""
    group = columns.shape[1]
    if nbits == 1:
        out[...] = np.packbits(columns.reshape(-1), bitorder="little")
        return
    if nbits * group == 8:  # 2 and 4 bits: a group's codes read as one little-endian word
        words = columns.view(f"<u{group}").reshape(-1)
        shift = 8 - nbits  # code i sits at bit 8 i; shifted right by i * shift it is at nbits i
        byte = words >> words.dtype.type(shift)
        byte |= words
        for i in range(2, group):
            byte |= words >> words.dtype.type(i * shift)
        np.copyto(out, byte, casting="unsafe")  # the low byte
        return
    words = columns[:, 0].astype("<u4")
    for i in range(1, group):
        words |= columns[:, i].astype("<u4") << np.uint32(i * nbits)
    group_bytes = group * nbits // 8
    out.reshape(-1, group_bytes)[...] = words.view(np.uint8).reshape(-1, 4)[:, :group_bytes]


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint8."""
    if nbits == 8:
        return np.asarray(packed, dtype=np.uint8)[:count].copy()
    bits = np.unpackbits(packed, count=count * nbits, bitorder="little").reshape(count, nbits)
    return np.packbits(bits, axis=1, bitorder="little").reshape(-1)


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Pack a boolean mask into bytes as Core AI's ``ui1`` expects: row-major, LSB first."""
    return np.packbits(mask.reshape(-1), bitorder="little")


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    count = int(np.prod(shape))
    return np.unpackbits(packed, count=count, bitorder="little").astype(bool).reshape(shape)
