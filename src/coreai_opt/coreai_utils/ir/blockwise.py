"""Replace a dense weight constant with its blockwise-quantized decompression chain.

    codes (storage type) -> blockwise_shift_scale(scale, offset1 = 0, offset2 = 0)

Asymmetric codes first lose their zero point exactly, in the weight's float type, then are
scaled, so the runtime rounds once, like the reference:

    codes -> blockwise_shift_scale(1, zero point, 0) -> blockwise_shift_scale(scale, 0, 0)

Sub-byte codes (int4, uint4, fp4) are packed as a little-endian bit stream. A block that
does not divide the weight along some axis (a partial last block) is expressed by splitting
the weight there: the whole blocks and the remainder each get a chain, joined by
``coreai.concat``.
"""

from __future__ import annotations

import numpy as np
from coreai._compiler.dialects import _coreai_ops_gen as ops
from coreai._compiler.ir import InsertionPoint, IntegerType, Operation, Type, Value

from coreai_opt.coreai_utils.dtypes import DType, dtype_of
from coreai_opt.coreai_utils.ir.constants import (
    make_constant,
    make_splat,
    storage_type,
)
from coreai_opt.coreai_utils.ir.rewrite import chain_element_type
from coreai_opt.coreai_utils.numerics.blockwise import BlockQuantized, code_bits
from coreai_opt.coreai_utils.numerics.sparse import pack_bits

__all__ = ["code_data", "emit_blockwise_chain"]


def code_data(codes: np.ndarray, dtype: DType) -> np.ndarray:
    if code_bits(dtype) < 8:
        nibbles = np.ascontiguousarray(codes).view(np.uint8) & np.uint8(0xF)
        return pack_bits(nibbles.reshape(-1), 4)
    return np.ascontiguousarray(codes)


def _chain(
    codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, dtype: DType, element: Type
) -> Value:
    """The decompression chain for one part (blocks that divide it)."""
    stored = storage_type(dtype)
    shape = tuple(codes.shape)
    grid = tuple(scale.shape)
    data = make_constant(code_data(codes, dtype), shape, stored)
    if zero_point is not None:
        offsets = make_constant(code_data(zero_point, dtype), grid, stored)
        data = ops.blockwise_shift_scale(
            data, make_splat(1.0, grid, element), offsets, make_splat(0.0, grid, element)
        )
        offset_type = element
    else:
        offset_type = stored
    scales = make_constant(scale, grid, storage_type(dtype_of(scale.dtype)))
    return ops.blockwise_shift_scale(
        data, scales, make_splat(0.0, grid, offset_type), make_splat(0.0, grid, element)
    )


def _parts(q: BlockQuantized) -> tuple[int, int] | None:
    """``(axis, split)`` where a partial last block needs a split, else None."""
    for axis, (size, block) in enumerate(zip(q.shape, q.block, strict=True)):
        if size % block:
            return axis, size - size % block
    return None


def emit_blockwise_chain(const_op: Operation, q: BlockQuantized) -> Value:
    """Insert the chain for ``q`` before ``const_op``; returns the dense result."""
    element = chain_element_type(const_op)
    with const_op.location, InsertionPoint(const_op):
        split = _parts(q)
        if split is None:
            return _chain(q.codes, q.scale, q.zero_point, q.dtype, element)
        axis, at = split
        whole = at // q.block[axis]

        def cut(array: np.ndarray, start: int | None, stop: int | None) -> np.ndarray:
            index = [slice(None)] * array.ndim
            index[axis] = slice(start, stop)
            return np.ascontiguousarray(array[tuple(index)])

        zp = q.zero_point
        head = _chain(
            cut(q.codes, 0, at),
            cut(q.scale, 0, whole),
            None if zp is None else cut(zp, 0, whole),
            q.dtype,
            element,
        )
        tail = _chain(
            cut(q.codes, at, None),
            cut(q.scale, whole, None),
            None if zp is None else cut(zp, whole, None),
            q.dtype,
            element,
        )
        dimension = make_splat(axis, (), IntegerType.get_signed(32))
        return ops.concat(dimension, [head, tail])
