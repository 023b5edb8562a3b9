"""Read a ``coreai.constant`` as a numpy array, and build constants backed by resource blobs."""

from __future__ import annotations

import mmap
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
    InsertionPoint,
    IntegerAttr,
    IntegerType,
    Module,
    Operation,
    OpResult,
    RankedTensorType,
    Type,
)

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.ir.bytecode import resource_blob

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
# Above this size the blob is the only piece of a one-constant bytecode that large.
_SHORTCUT_BYTES = 4096
MAPPED_BYTES = 1 << 16
"""Blobs of at least this many bytes get pages of their own (:func:`_blob_buffer`)."""


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
    """The value of a float ``coreai.constant`` as a read-only array of its static shape.

    Inline ``dense<...>`` attributes (splats expanded) are copied by the bindings'
    ``copy_constant_value_to_array``; ``dense_resource`` blobs are read from the op's
    bytecode, where their size is known. (That copy would be ~30 ms faster for a 64 MB
    blob, but it checks only that the destination holds the type's bytes and then copies
    the whole blob: one longer than its type would overflow the destination.)

    Raises:
        ConstantReadError: the attribute is neither dense elements nor a resource blob, or
            the blob is missing (``dense_resource<__elided__>``) or not of its type's size.
    """
    attr = op.attributes["value"]
    shape = tuple(RankedTensorType(attr.type).shape)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if DenseResourceElementsAttr.isinstance(attr):
        flat = _read_resource(op, dtype, nbytes)
    elif DenseElementsAttr.isinstance(attr):
        # inline data always matches its type
        flat = np.empty(nbytes, dtype=np.uint8)
        try:
            _copy_constant(constant_op=op, destination=flat)
        except RuntimeError as error:  # its message ends with the reason, after the location
            raise ConstantReadError(str(error).rsplit(": ", 1)[-1]) from None
        flat = flat.view(dtype)
    else:
        msg = f"unsupported constant attribute kind: {type(attr).__name__}"
        raise ConstantReadError(msg)
    out = flat.reshape(shape)
    out.flags.writeable = False
    return out


def _read_resource(op: Operation, dtype: np.dtype, nbytes: int) -> np.ndarray:
    # Serialize a use-free clone in a scratch module: writing an op whose result has uses
    # makes the bytecode writer number the users too, and it aborts the process on them.
    with op.context, op.location:
        scratch = Module.create()
        op.clone(ip=InsertionPoint(scratch.body))
    pieces = _Pieces()
    scratch.operation.write_bytecode(pieces)
    if nbytes > _SHORTCUT_BYTES:
        # The writer hands a blob over as one piece (the others are a few dozen bytes): view
        # it in place rather than joining (a second copy of the weight).
        largest = max(pieces.parts, key=len)
        if len(largest) != nbytes:
            msg = f"resource blob is not the {nbytes} bytes its type needs"
            raise ConstantReadError(msg)
        return np.frombuffer(largest, dtype=dtype)
    blob = resource_blob(b"".join(pieces.parts))
    if len(blob) != nbytes:
        msg = f"resource blob holds {len(blob)} bytes, expected {nbytes}"
        raise ConstantReadError(msg)
    return np.frombuffer(blob, dtype=dtype)


class _Pieces:
    """A write-only file that keeps the pieces it is given."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)


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
    sub-byte types (``ui1``) the packed bytes. A blob of :data:`MAPPED_BYTES` or more is a
    copy in memory of its own (:func:`_blob_buffer`); a smaller one references ``data``,
    which must not be mutated afterwards.
    """
    buffer = _blob_buffer(data)
    attr = DenseResourceElementsAttr.get_from_buffer(
        buffer,
        f"sparsify_{next(_names)}",
        RankedTensorType.get(list(shape), element_type),
    )
    return ConstantOp(value=attr).result


def _blob_buffer(data: np.ndarray) -> np.ndarray:
    """A read-only contiguous buffer with ``data``'s bytes for a resource blob.

    From :data:`MAPPED_BYTES` up, a copy in an anonymous memory map: the blob lives as long
    as its context, and when the context goes the pages go back to the system at once.
    From the C heap they would stay with the process (glibc keeps freed blocks below its
    mmap threshold, which it raises up to 32 MiB as large blocks are freed): measured on
    all-MiniLM-L6-v2, 43-86 MiB of a freed 50 % sparsified copy stayed in the heap.
    """
    if data.nbytes < MAPPED_BYTES:
        buffer = np.ascontiguousarray(data)
    else:
        pages = mmap.mmap(-1, data.nbytes, flags=mmap.MAP_PRIVATE)
        buffer = np.frombuffer(pages, dtype=data.dtype).reshape(data.shape)
        buffer[...] = data
    buffer.flags.writeable = False
    return buffer
