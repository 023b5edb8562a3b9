"""Blockwise quantization of dense weights (per tensor, per channel, per block), pure numpy.

Granularity has one internal form: a block shape, the block's extent along every axis of
the weight (:func:`block_shape`). Each block gets a scale (and, asymmetric, a zero point):

    w ~= scale * (q - zero_point)

* integer, symmetric: ``scale = absmax / qmax`` with ``qmax = 2**(bits-1) - 1``; signed codes
  in ``[-qmax, qmax]``, zero point 0; unsigned codes around the fixed zero point
  ``2**(bits-1)`` (codes in ``[1, 2**bits - 1]``).
* integer, asymmetric: the block's range ``[min(w, 0), max(w, 0)]`` is mapped onto the full
  code range ``[qmin, qmax]``: ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point =
  clip(rint(qmin - lo / scale), qmin, qmax)`` (so 0.0 is exactly representable).
* fp8 (e4m3fn, e5m2), symmetric: per block the scale is chosen among ``absmax / fp8_max *
  2**(k/32)``, k = 0..31, for the least squared error on a strided sample of the block (at
  most 256 values), as in joint sparse quantization; with ``FP8_E8M0FNU`` scales, among the
  powers of two ``2**e0`` (the smallest that does not saturate) and ``2**(e0 - 1)``.
* fp4 (e2m1fn), symmetric: powers of two as above (MXFP4: blocks of 32, E8M0 scales).

Codes are ``rint`` (round half to even) for integers, and the round-to-nearest-even cast of
``w / scale`` (saturating) for floats. Scales are stored in ``scale_dtype`` (the weight's
float type by default) and the codes are computed with the stored scale. A block of zeros
gets scale 1. :meth:`BlockQuantized.dequantize` is the Core AI runtime's arithmetic: the
code minus the zero point is exact, and its product with the scale is rounded once to the
weight's dtype. The float scale search and codes are in :mod:`float_codes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.dtypes import DType, numpy_dtype
from coreai_opt.coreai_utils.numerics.float_codes import encode_float, float_scales
from coreai_opt.coreai_utils.numerics.masks import check_finite
from coreai_opt.coreai_utils.numerics.parallel import (
    parallel_map,
    row_absmax,
    row_chunks,
    row_extremes,
)
from coreai_opt.coreai_utils.numerics.quantize import (
    stored_scale,
)

__all__ = [
    "INTEGER_BITS",
    "BlockParams",
    "BlockQuantized",
    "as_rows",
    "block_params",
    "block_shape",
    "code_bits",
    "code_type",
    "decode_rows",
    "encode_rows",
    "quantize_blocks",
]

INTEGER_BITS = {DType.INT4: 4, DType.INT8: 8, DType.UINT4: 4, DType.UINT8: 8}
_FLOATS = (DType.FP8_E4M3FN, DType.FP8_E5M2, DType.FP4_E2M1FN)


def code_bits(dtype: DType) -> int:
    """Bits per stored code: 4 for int4, uint4 and fp4, else 8."""
    return 4 if dtype in (DType.INT4, DType.UINT4, DType.FP4_E2M1FN) else 8


def code_type(dtype: DType) -> np.dtype:
    """The numpy type of the codes: int8 for signed integers, uint8 for unsigned ones, the
    ml_dtypes float for fp8 and fp4."""
    if dtype in _FLOATS:
        return numpy_dtype(dtype)
    return np.dtype(np.int8 if dtype in (DType.INT4, DType.INT8) else np.uint8)


@dataclass(frozen=True)
class BlockQuantized:
    """A weight of ``shape`` as ``codes`` (same shape; int8/uint8 for integer types, the
    ml_dtypes float for fp8/fp4) with ``scale`` and ``zero_point`` (None when symmetric with
    a zero zero point) of shape ``ceil(shape / block)``."""

    dtype: DType
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    block: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """Bytes stored: the codes (packed when sub-byte), scales and zero points."""
        bits = code_bits(self.dtype)
        stored = -(-self.codes.size * bits // 8) + self.scale.nbytes
        if self.zero_point is not None:
            stored += -(-self.zero_point.size * bits // 8)
        return stored

    def expand(self, per_block: np.ndarray) -> np.ndarray:
        """A per-block array repeated over each block, cut to the weight's shape."""
        out = per_block
        for axis, size in enumerate(self.block):
            out = np.repeat(out, size, axis=axis)
        return out[tuple(slice(0, n) for n in self.shape)]

    def dequantize(self, out: np.dtype) -> np.ndarray:
        """The weight as the runtime rebuilds it, in dtype ``out``."""
        values = self.codes.astype(np.float32)
        if self.zero_point is not None:
            values = values - self.expand(self.zero_point).astype(np.float32)
        result: np.ndarray = (values * self.expand(self.scale).astype(np.float32)).astype(out)
        return result


def block_shape(
    shape: tuple[int, ...],
    granularity: str,
    out_axis: int | None,
    in_axis: int | None,
    block_size: int,
) -> tuple[int, ...]:
    """The block of a granularity: ``per_tensor`` the whole weight; ``per_channel`` one
    output channel (``out_axis``); ``per_block`` one output channel by ``block_size``
    consecutive input channels (``in_axis``; a partial last block when it does not
    divide). Raises ``ValueError`` when the needed axis is unknown."""
    if granularity == "per_tensor":
        return tuple(shape)
    if out_axis is None:
        msg = f"{granularity} needs the weight's output channel axis"
        raise ValueError(msg)
    block = list(shape)
    block[out_axis] = 1
    if granularity == "per_block":
        if in_axis is None:
            msg = "per_block needs the weight's input channel axis"
            raise ValueError(msg)
        block[in_axis] = min(block_size, shape[in_axis])
    elif granularity != "per_channel":
        msg = f"unsupported granularity {granularity!r}"
        raise ValueError(msg)
    return tuple(block)


def as_rows(weight: np.ndarray, block: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """``[blocks, block elements]`` float32 (zero-padded to whole blocks) and the grid; a
    view of a float32 ``weight`` whenever the layout allows (never written to)."""
    grid = tuple(-(-n // b) for n, b in zip(weight.shape, block, strict=True))
    whole = [g * b for g, b in zip(grid, block, strict=True)]
    if list(weight.shape) == whole:
        padded = weight.astype(np.float32, copy=False)
    else:
        padded = np.zeros(whole, dtype=np.float32)
        padded[tuple(slice(0, n) for n in weight.shape)] = weight
    interleaved = padded.reshape([x for pair in zip(grid, block, strict=True) for x in pair])
    rank = weight.ndim
    order = [*range(0, 2 * rank, 2), *range(1, 2 * rank, 2)]
    rows = interleaved.transpose(order).reshape(math.prod(grid), math.prod(block))
    return rows, grid


def _from_rows(
    rows: np.ndarray, grid: tuple[int, ...], block: tuple[int, ...], shape: tuple[int, ...]
) -> np.ndarray:
    rank = len(shape)
    blocked = rows.reshape([*grid, *block])
    order = [x for axis in range(rank) for x in (axis, rank + axis)]
    full = blocked.transpose(order).reshape([g * b for g, b in zip(grid, block, strict=True)])
    return full[tuple(slice(0, n) for n in shape)]


def _encode_int(
    rows: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    limits: tuple[int, int],
    code_type: type,
) -> np.ndarray:
    """Codes ``clip(rint(rows / scale) + zero_point, *limits)`` (float32 arithmetic; the
    zero points are small integers, exact), by row chunks on the thread pool."""
    per_row = scale.astype(np.float32)[:, None]
    shift = zero_point.astype(np.float32)[:, None]
    codes: np.ndarray = np.empty(rows.shape, dtype=code_type)

    def chunk(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        scaled = rows[start:stop] / per_row[start:stop]
        np.rint(scaled, out=scaled)
        scaled += shift[start:stop]
        np.clip(scaled, *limits, out=scaled)
        codes[start:stop] = scaled

    parallel_map(chunk, row_chunks(rows.shape[0], rows.shape[1]))
    return codes


@dataclass(frozen=True)
class BlockParams:
    """The parameters of each row of ``[blocks, elements]``: ``scale`` (in the scale dtype),
    ``zero_point`` (float64 holding integers; the fixed offset of unsigned symmetric codes,
    0 for signed and float types), the integer code range ``limits`` (None for float types)
    and ``absmax`` (float types: each row's largest magnitude, which decides saturation)."""

    dtype: DType
    scale: np.ndarray
    zero_point: np.ndarray
    limits: tuple[int, int] | None
    absmax: np.ndarray | None

    def take(self, index: np.ndarray) -> BlockParams:
        """The parameters of the blocks ``index`` (e.g. one per weight row)."""
        return BlockParams(
            self.dtype,
            self.scale[index],
            self.zero_point[index],
            self.limits,
            None if self.absmax is None else self.absmax[index],
        )

    def stored_zero_point(self, symmetric: bool) -> np.ndarray | None:  # noqa: FBT001
        """The zero points as stored (codes of the code type), None when there are none
        (symmetric signed and float types)."""
        signed = self.dtype in (DType.INT4, DType.INT8)
        if self.limits is None or (symmetric and signed):
            return None
        stored: np.ndarray = self.zero_point.astype(np.int8 if signed else np.uint8)
        return stored


def block_params(
    rows: np.ndarray,
    dtype: DType,
    *,
    symmetric: bool,
    scale_dtype: np.dtype,
    out: np.dtype,
) -> BlockParams:
    """The scale (and zero point) of each row of ``rows`` (float32 ``[blocks, elements]``,
    one block per row) as the module docstring defines them; ``out`` is the weight's dtype.
    Raises :class:`NonFiniteError` when a value is NaN or infinite."""
    if dtype in _FLOATS:
        storage = numpy_dtype(dtype)
        absmax = row_absmax(rows)
        check_finite(absmax)
        scale = float_scales(rows, absmax, storage, scale_dtype, out)
        return BlockParams(dtype, scale, np.zeros(rows.shape[0]), None, absmax)
    bits = INTEGER_BITS[dtype]
    signed = dtype in (DType.INT4, DType.INT8)
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if symmetric:
        half = (1 << (bits - 1)) - 1
        absmax = row_absmax(rows)
        check_finite(absmax)
        scale = stored_scale(absmax / half, scale_dtype)
        offset = 0 if signed else 1 << (bits - 1)
        zp = np.full(rows.shape[0], offset, dtype=np.float64)
        limits = (-half, half) if signed else (1, (1 << bits) - 1)
    else:
        least, most = row_extremes(rows)
        lo = np.minimum(least, 0.0).astype(np.float64)
        hi = np.maximum(most, 0.0).astype(np.float64)
        check_finite(lo, hi)
        scale = stored_scale((hi - lo) / (qmax - qmin), scale_dtype)
        zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
        limits = (qmin, qmax)
    return BlockParams(dtype, scale, zp, limits, None)


def encode_rows(
    rows: np.ndarray, params: BlockParams, peak: np.ndarray | None = None
) -> np.ndarray:
    """The codes of ``rows`` (float32 ``[blocks, elements]``) under ``params`` (one row
    each): int8/uint8 for integer types, the ml_dtypes float for fp8/fp4. ``peak``: each
    row's largest magnitude for float types (default ``params.absmax``)."""
    if params.limits is None:
        storage = numpy_dtype(params.dtype)
        absmax = peak if peak is not None else params.absmax
        if absmax is None:
            absmax = row_absmax(rows)
        return encode_float(rows, params.scale, absmax, storage)
    return _encode_int(
        rows, params.scale, params.zero_point, params.limits, code_type(params.dtype).type
    )


def decode_rows(codes: np.ndarray, params: BlockParams, out: np.dtype) -> np.ndarray:
    """The values ``codes`` (one row per block) stand for, as the runtime rebuilds them:
    ``(q - zero_point) * scale`` in float32, rounded once to ``out``."""
    values = codes.astype(np.float32)
    if params.limits is not None:
        values -= params.zero_point.astype(np.float32)[:, None]
    values *= params.scale.astype(np.float32)[:, None]
    result: np.ndarray = values.astype(out)
    return result


def quantize_blocks(
    weight: np.ndarray,
    block: tuple[int, ...],
    dtype: DType,
    *,
    symmetric: bool = True,
    scale_dtype: np.dtype | None = None,
) -> BlockQuantized:
    """Quantize ``weight`` with one scale (and zero point) per ``block`` (module docstring).

    ``scale_dtype`` defaults to the weight's dtype. Floating-point ``dtype`` are symmetric
    only; the caller validates the combination. Raises :class:`NonFiniteError` when a value
    is NaN or infinite.
    """
    out = weight.dtype
    scales_in = np.dtype(scale_dtype) if scale_dtype is not None else out
    rows, grid = as_rows(weight, block)
    params = block_params(rows, dtype, symmetric=symmetric, scale_dtype=scales_in, out=out)
    codes = encode_rows(rows, params)
    zero_point = params.stored_zero_point(symmetric)
    return BlockQuantized(
        dtype=dtype,
        codes=_from_rows(codes, grid, block, weight.shape),
        scale=params.scale.reshape(grid),
        zero_point=None if zero_point is None else zero_point.reshape(grid),
        block=block,
    )
