"""Storage data types of Core AI constants, and their numpy counterparts."""

from __future__ import annotations

from enum import StrEnum

import ml_dtypes
import numpy as np

__all__ = ["DType", "dtype_of", "numpy_dtype"]


class DType(StrEnum):
    """A Core AI storage element type, named by its lower-case MLIR-style string.

    Members compare equal to their string value (``DType.INT8 == "int8"``), so APIs that
    take a ``DType`` also accept that string.
    """

    INT2 = "int2"
    INT4 = "int4"
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    UINT2 = "uint2"
    UINT4 = "uint4"
    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"
    FP8_E4M3FN = "fp8_e4m3fn"
    FP8_E5M2 = "fp8_e5m2"
    FP8_E8M0FNU = "fp8_e8m0fnu"
    FP4_E2M1FN = "fp4_e2m1fn"


_NUMPY: dict[DType, np.dtype] = {
    DType.INT2: np.dtype(ml_dtypes.int2),
    DType.INT4: np.dtype(ml_dtypes.int4),
    DType.INT8: np.dtype(np.int8),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.UINT2: np.dtype(ml_dtypes.uint2),
    DType.UINT4: np.dtype(ml_dtypes.uint4),
    DType.UINT8: np.dtype(np.uint8),
    DType.UINT16: np.dtype(np.uint16),
    DType.UINT32: np.dtype(np.uint32),
    DType.FP16: np.dtype(np.float16),
    DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.FP32: np.dtype(np.float32),
    DType.FP8_E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.FP8_E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DType.FP8_E8M0FNU: np.dtype(ml_dtypes.float8_e8m0fnu),
    DType.FP4_E2M1FN: np.dtype(ml_dtypes.float4_e2m1fn),
}


def numpy_dtype(dtype: DType) -> np.dtype:
    """The numpy (or ml_dtypes) dtype that holds one element of ``dtype``."""
    return _NUMPY[dtype]


def dtype_of(dtype: np.dtype) -> DType:
    """The DType whose elements ``dtype`` holds (the inverse of :func:`numpy_dtype`)."""
    for member, held in _NUMPY.items():
        if held == np.dtype(dtype):
            return member
    msg = f"no Core AI storage type for numpy dtype {dtype}"
    raise ValueError(msg)
