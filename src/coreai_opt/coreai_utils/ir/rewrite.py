"""Replace a weight constant with its decompression chain.

Every chain ends in a dense tensor of the constant's type in which pruned positions are
exact zeros:

* sparse:      values -> build_sparse_with_bitmask -> sparse_with_bitmask_to_dense
* quantized:   q (int8/fp8) -> build_sparse -> to_dense -> blockwise_shift_scale(scale);
               uint8: q -> blockwise_shift_scale(1, zero point) -> build_sparse -> to_dense
               -> blockwise_shift_scale(scale). The zero point is removed before densifying
               because a dense zero would otherwise map to ``-scale * zero_point``.
* palettized:  indices (ui<n>) -> build_sparse -> lut_to_sparse_with_bitmask(LUT)
               -> sparse_with_bitmask_to_dense

New ops are inserted just before the constant and carry its location.
"""

from __future__ import annotations

import numpy as np
from coreai._compiler.dialects import _coreai_ops_gen as ops
from coreai._compiler.ir import InsertionPoint, IntegerType, Operation, Type, Value

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.ir.constants import (
    index_type,
    make_constant,
    make_splat,
    mask_type,
    storage_type,
    tensor_type,
)
from coreai_opt.coreai_utils.numerics.kmeans import Palette
from coreai_opt.coreai_utils.numerics.quantize import Quantized
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, pack_bits

__all__ = [
    "chain_element_type",
    "emit_palettized_chain",
    "emit_quantized_chain",
    "emit_sparse_chain",
    "replace_constant",
]


def chain_element_type(const_op: Operation) -> Type:
    """The element type of the weight constant a decompression chain replaces (its dense
    result's type); ``ValueError`` unless it is a statically shaped tensor."""
    ranked = tensor_type(const_op.results[0].type)
    if ranked is None:
        msg = "a decompression chain needs a statically shaped tensor constant"
        raise ValueError(msg)
    return ranked.element_type


def _densify(values: Value, packed_mask: np.ndarray, shape: tuple[int, ...]) -> Value:
    bitmask = make_constant(packed_mask, shape, mask_type())
    return ops.sparse_with_bitmask_to_dense(ops.build_sparse_with_bitmask(values, bitmask))


def emit_sparse_chain(const_op: Operation, sparse: SparseWeight) -> Value:
    """The plain sparse chain for ``sparse``; returns the dense result."""
    element = chain_element_type(const_op)
    with const_op.location, InsertionPoint(const_op):
        values = make_constant(sparse.values, (sparse.values.size,), element)
        return _densify(values, sparse.packed_mask, sparse.shape)


def emit_quantized_chain(const_op: Operation, quantized: Quantized) -> Value:
    """The quantized sparse chain for ``quantized``; returns the dense result."""
    element = chain_element_type(const_op)
    stored = storage_type(quantized.dtype)
    scale_shape = tuple(quantized.scale.shape)
    with const_op.location, InsertionPoint(const_op):
        values = make_constant(quantized.values, (quantized.values.size,), stored)
        if quantized.dtype is DType.UINT8:
            values = ops.blockwise_shift_scale(
                values,
                make_splat(1.0, (1,), element),
                make_splat(quantized.zero_point, (1,), stored),
                make_splat(0.0, (1,), element),
            )
            offset_type = element
        else:
            offset_type = stored
        dense = _densify(values, quantized.packed_mask, quantized.shape)
        scale = make_constant(quantized.scale, scale_shape, element)
        return ops.blockwise_shift_scale(
            dense,
            scale,
            make_splat(0.0, scale_shape, offset_type),
            make_splat(0.0, scale_shape, element),
        )


def emit_palettized_chain(const_op: Operation, palette: Palette, sparse: SparseWeight) -> Value:
    """The palettized sparse chain for the values of ``sparse`` (one LUT for the tensor)."""
    element = chain_element_type(const_op)
    rank = len(sparse.shape)
    lut_shape = (1,) * rank + (palette.lut.size, 1)
    with const_op.location, InsertionPoint(const_op):
        indices = make_constant(
            pack_bits(palette.indices, palette.nbits),
            (palette.indices.size,),
            index_type(palette.nbits),
        )
        bitmask = make_constant(sparse.packed_mask, sparse.shape, mask_type())
        sparse_indices = ops.build_sparse_with_bitmask(indices, bitmask)
        lut = make_constant(palette.lut.reshape(lut_shape), lut_shape, element)
        axis = make_splat(0, (), IntegerType.get_signed(16))
        values = ops.lut_to_sparse_with_bitmask(sparse_indices, lut, axis)
        return ops.sparse_with_bitmask_to_dense(values)


def replace_constant(const_op: Operation, replacement: Value) -> None:
    """Point every use of ``const_op``'s result at ``replacement`` and erase ``const_op``."""
    const_op.results[0].replace_all_uses_with(replacement)
    const_op.erase()
