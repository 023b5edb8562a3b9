"""Replace a dense weight constant with its palettized decompression chain.

    indices (ui<n>) -> lut_to_dense(LUT [groups along the output axis, 2**n, cluster_dim])
    [-> blockwise_shift_scale(per-channel scale)]

A quantized LUT is stored as codes and dequantized first, on the LUT itself:
``blockwise_shift_scale(LUT codes, scale per LUT, zero point) -> lut_to_dense``. When the
group size does not divide the output channels, the whole groups and the last group each
get a chain, joined by ``coreai.concat``.
"""

from __future__ import annotations

import numpy as np
from coreai._compiler.dialects import _coreai_ops_gen as ops
from coreai._compiler.ir import InsertionPoint, IntegerType, Operation, Type, Value

from coreai_opt.coreai_utils.dtypes import dtype_of
from coreai_opt.coreai_utils.ir.blockwise import code_data
from coreai_opt.coreai_utils.ir.constants import (
    index_type,
    make_constant,
    make_splat,
    storage_type,
)
from coreai_opt.coreai_utils.ir.rewrite import chain_element_type
from coreai_opt.coreai_utils.numerics.lut import GroupedPalette
from coreai_opt.coreai_utils.numerics.sparse import pack_bits

__all__ = ["emit_lut_chain"]


def _lut_shape(rank: int, out_axis: int, groups: int, k: int, dims: int) -> tuple[int, ...]:
    shape = [1] * rank + [k, dims]
    shape[out_axis] = groups
    return tuple(shape)


def _part(palette: GroupedPalette, first: int, last: int, channels: slice, element: Type) -> Value:
    """The chain for LUT groups ``[first, last)`` (output channels ``channels``)."""
    rank = palette.indices.ndim
    out_axis, k, dims = palette.out_axis, 1 << palette.nbits, palette.cluster_dim
    take = [slice(None)] * rank
    take[out_axis] = channels
    indices = np.ascontiguousarray(palette.indices[tuple(take)])
    groups = last - first
    lut_shape = _lut_shape(rank, out_axis, groups, k, dims)
    lut_codes = np.ascontiguousarray(palette.lut[first:last]).reshape(lut_shape)
    quantized = palette.lut_quantized
    if quantized is None:
        lut = make_constant(lut_codes, lut_shape, element)
    else:
        grid = _lut_shape(rank, out_axis, groups, 1, 1)
        stored = storage_type(quantized.dtype)
        codes = make_constant(code_data(lut_codes, quantized.dtype), lut_shape, stored)
        scale = np.ascontiguousarray(quantized.scale[first:last]).reshape(grid)
        offset = (
            make_splat(0.0, grid, stored)
            if quantized.zero_point is None
            else make_constant(
                code_data(quantized.zero_point[first:last].reshape(grid), quantized.dtype),
                grid,
                stored,
            )
        )
        lut = ops.blockwise_shift_scale(
            codes,
            make_constant(scale, grid, storage_type(dtype_of(scale.dtype))),
            offset,
            make_splat(0.0, grid, element),
        )
    packed = make_constant(
        pack_bits(indices.reshape(-1), palette.nbits), indices.shape, index_type(palette.nbits)
    )
    axis = make_splat(palette.in_axis, (), IntegerType.get_signed(16))
    dense = ops.lut_to_dense(packed, lut, axis)
    if palette.channel_scale is None:
        return dense
    scale_shape = [1] * rank
    scale_shape[out_axis] = indices.shape[out_axis]
    channel_scale = np.ascontiguousarray(palette.channel_scale[channels]).reshape(scale_shape)
    shape = tuple(scale_shape)
    return ops.blockwise_shift_scale(
        dense,
        make_constant(channel_scale, shape, element),
        make_splat(0.0, shape, element),
        make_splat(0.0, shape, element),
    )


def emit_lut_chain(const_op: Operation, palette: GroupedPalette) -> Value:
    """Insert the chain for ``palette`` before ``const_op``; returns the dense result."""
    element = chain_element_type(const_op)
    channels = palette.indices.shape[palette.out_axis]
    size = palette.group_size
    groups = palette.lut.shape[0]
    with const_op.location, InsertionPoint(const_op):
        if channels % size == 0:
            return _part(palette, 0, groups, slice(None), element)
        whole = channels // size
        head = _part(palette, 0, whole, slice(0, whole * size), element)
        tail = _part(palette, whole, groups, slice(whole * size, None), element)
        dimension = make_splat(palette.out_axis, (), IntegerType.get_signed(32))
        return ops.concat(dimension, [head, tail])
