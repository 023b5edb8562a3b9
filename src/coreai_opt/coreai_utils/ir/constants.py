"""Read a ``coreai.constant`` as a numpy array, and build constants backed by resource blobs."""

from __future__ import annotations

from itertools import count
from typing import Any

import ml_dtypes
import numpy as np
from coreai._compiler._mlir_libs._coreaiIR._bindings.compiler import (
    copy_constant_value_to_array as _copy_constant,
)
from coreai._compiler.dialects._coreai_ops_gen import ConstantOp
from coreai._compiler.ir import (
    BF16Type,
    DenseElementsAttr,
    DenseResourceElementsAttr,
    F16Type,
    F32Type,
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    Operation,
    OpResult,
    RankedTensorType,
    Type,
)

from coreai_opt.coreai_utils.dtypes import DType

__all__ = [
    "ConstantReadError",
    "float_dtype",
    "index_type",
    "int_operand",
    "make_constant",
    "make_splat",
    "mask_type",
    "read_constant",
    "storage_type",
    "tensor_type",
]

_FLOAT_TYPES: tuple[tuple[Any, np.dtype], ...] = (
    (F32Type, np.dtype(np.float32)),
    (F16Type, np.dtype(np.float16)),
    (BF16Type, np.dtype(ml_dtypes.bfloat16)),
)
_names = count()


class ConstantReadError(ValueError):
    """A constant's data could not be read."""


def tensor_type(value_type: Type) -> RankedTensorType | None:
    """The ranked tensor type of a value, or None if it is not a statically shaped tensor."""
    if not RankedTensorType.isinstance(value_type):
        return None
    ranked = RankedTensorType(value_type)
    return ranked if ranked.has_static_shape else None


def float_dtype(element_type: Type) -> np.dtype | None:
    """numpy dtype for an f32/f16/bf16 element type; None for any other type."""
    for mlir_type, dtype in _FLOAT_TYPES:
        if mlir_type.isinstance(element_type):
            return dtype
    return None


def int_operand(op: Operation, index: int) -> tuple[int, ...] | None:
    """The values of operand ``index`` of ``op`` when it is an inline integer constant
    (a permutation, stride, groups...), flattened; None otherwise."""
    owner = op.operands[index].owner
    const = getattr(owner, "operation", owner)
    if not isinstance(const, Operation) or const.name != "coreai.constant":
        return None
    attr = const.attributes["value"]
    if not DenseElementsAttr.isinstance(attr):
        return None
    return tuple(int(v) for v in np.asarray(DenseElementsAttr(attr)).reshape(-1))


def read_constant(op: Operation, dtype: np.dtype) -> np.ndarray:
    """The value of a float ``coreai.constant`` (inline ``dense<...>``, splat or
    ``dense_resource`` blob) as a read-only array of its static shape: a copy made by the
    bindings' own ``copy_constant_value_to_array`` (one memcpy into a numpy array; splats
    come expanded).

    Raises:
        ConstantReadError: the attribute is not dense elements or a resource blob, or its
            data cannot be copied (a resource without its blob, ``dense_resource<__elided__>``).
    """
    attr = op.attributes["value"]
    if not (DenseResourceElementsAttr.isinstance(attr) or DenseElementsAttr.isinstance(attr)):
        msg = f"unsupported constant attribute kind: {type(attr).__name__}"
        raise ConstantReadError(msg)
    shape = tuple(RankedTensorType(attr.type).shape)
    data = np.empty(int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    try:
        _copy_constant(constant_op=op, destination=data)
    except RuntimeError as error:
        # the bindings' message ends with the reason, after the op's location
        raise ConstantReadError(str(error).rsplit(": ", 1)[-1]) from None
    out = data.view(dtype).reshape(shape)
    out.flags.writeable = False
    return out


def mask_type() -> IntegerType:
    """The ``ui1`` element type of bit masks."""
    return IntegerType.get_unsigned(1)


def storage_type(dtype: DType) -> Type:
    """The MLIR element type that stores ``dtype``."""
    factories: dict[DType, Any] = {
        DType.INT4: lambda: IntegerType.get_signed(4),
        DType.UINT4: lambda: IntegerType.get_unsigned(4),
        DType.INT8: lambda: IntegerType.get_signed(8),
        DType.UINT8: lambda: IntegerType.get_unsigned(8),
        DType.FP8_E4M3FN: Float8E4M3FNType.get,
        DType.FP8_E5M2: Float8E5M2Type.get,
        DType.FP8_E8M0FNU: Float8E8M0FNUType.get,
        DType.FP4_E2M1FN: Float4E2M1FNType.get,
        DType.FP32: F32Type.get,
        DType.FP16: F16Type.get,
        DType.BF16: BF16Type.get,
    }
    return factories[dtype]()


def index_type(nbits: int) -> IntegerType:
    """The ``ui<nbits>`` element type of palette indices."""
    return IntegerType.get_unsigned(nbits)


def make_splat(value: float, shape: tuple[int, ...], element_type: Type) -> OpResult:
    """Insert an inline splat ``coreai.constant`` (the compiler can see its value)."""
    tensor = RankedTensorType.get(list(shape), element_type)
    if IntegerType.isinstance(element_type):
        attr = IntegerAttr.get(element_type, int(value))
    else:
        attr = FloatAttr.get(element_type, float(value))
    return ConstantOp(value=DenseElementsAttr.get_splat(tensor, attr)).result


def make_constant(data: np.ndarray, shape: tuple[int, ...], element_type: Type) -> OpResult:
    """Insert a ``coreai.constant`` backed by a resource blob at the current insertion point.

    ``data`` holds the raw storage: for byte-or-wider types one element per item, for
    sub-byte types (``ui1``) the packed bytes. The blob references ``data``; it must not be
    mutated afterwards.
    """
    buffer = np.ascontiguousarray(data)
    buffer.flags.writeable = False
    attr = DenseResourceElementsAttr.get_from_buffer(
        buffer,
        f"sparsify_{next(_names)}",
        RankedTensorType.get(list(shape), element_type),
    )
    return ConstantOp(value=attr).result
