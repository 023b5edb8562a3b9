"""Replace a weight constant with its decompression chain."""

from __future__ import annotations

from coreai._compiler.dialects import _coreai_ops_gen as ops
from coreai._compiler.ir import InsertionPoint, Operation, Value

from coreai_opt.coreai_utils.ir.constants import make_constant, mask_type, tensor_type
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, pack_mask

__all__ = ["emit_sparse_chain", "replace_constant"]


def emit_sparse_chain(const_op: Operation, sparse: SparseWeight) -> Value:
    """Build, just before ``const_op``, the ops that rebuild its dense value from ``sparse``.

    ``constant(values, 1-D) , constant(mask, ui1, original shape) -> build_sparse_with_bitmask
    -> sparse_with_bitmask_to_dense``; the new ops carry ``const_op``'s location.
    Returns the dense result, of the same type as ``const_op``'s result.
    """
    ranked = tensor_type(const_op.results[0].type)
    if ranked is None:
        msg = "emit_sparse_chain needs a statically shaped tensor constant"
        raise ValueError(msg)
    with const_op.location, InsertionPoint(const_op):
        values = make_constant(sparse.values, (sparse.values.size,), ranked.element_type)
        mask = make_constant(pack_mask(sparse.mask), sparse.shape, mask_type())
        packed = ops.build_sparse_with_bitmask(values, mask)
        return ops.sparse_with_bitmask_to_dense(packed)


def replace_constant(const_op: Operation, replacement: Value) -> None:
    """Point every use of ``const_op``'s result at ``replacement`` and erase ``const_op``."""
    const_op.results[0].replace_all_uses_with(replacement)
    const_op.erase()
