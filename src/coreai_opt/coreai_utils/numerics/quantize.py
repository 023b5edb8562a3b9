"""Quantization of the stored values of a sparse weight, with per-output-channel scales.

A sparse weight (values ``w`` of the stored elements) with output channel axis ``axis`` is
stored as codes ``q`` in a storage type, ``scale`` (one per output channel, in the weight's
dtype, shaped for broadcasting: 1 on every axis but ``axis``) and a per-tensor
``zero_point``:

    w ~= scale * (q - zero_point)

* int8: symmetric, ``scale = absmax / 127`` per channel, ``q`` in [-127, 127], zero point 0.
* fp8 (e4m3fn, e5m2): ``q = fp8(w / scale)``. fp8's rounding error depends on where values
  fall within a binade, so per channel the scale is chosen among
  ``absmax / fp8_max * 2**(k/32)``, k = 0..31 (one binade; none saturates), for the least
  squared error over a strided sample of the channel's stored values (every
  ``max(1, count // s)``-th in row-major order, where ``s`` is 256, lowered for weights
  with many channels to keep about 2**20 samples, but not below 16).
* uint8: asymmetric with a per-channel scale and one per-tensor zero point ``z`` (chosen to
  minimize the summed quantization noise), ``q = clip(rint(w / scale) + z, 0, 255)``. A
  per-tensor zero point is what Core AI can undo exactly before densifying (pruned
  positions must come out as exact zeros).

With ``axis=None`` one scale covers the whole tensor. A channel with no stored values gets
scale 1 (nothing to represent; no division by zero). ``dequantize`` reproduces the Core AI
runtime's arithmetic bit for bit.

The values of one axis-0 channel are a contiguous run of the row-major values, so the work
is done on the 1-D values, per run; another axis is first moved to the front.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from coreai_opt.coreai_utils.dtypes import DType, numpy_dtype
from coreai_opt.coreai_utils.numerics.parallel import parallel_map, row_chunks
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse, unpack_mask

__all__ = [
    "Quantized",
    "float_carried",
    "float_round",
    "kept_bits",
    "quantize",
    "rounded_to",
    "stored_scale",
]

_FP8_FACTORS = 2.0 ** (np.arange(32) / 32)
_SAMPLE = 256  # values per channel for the fp8 scale search...
_MAX_SAMPLES = 1 << 20  # ...but at most about this many per weight...
_MIN_SAMPLE = 16  # ...and at least this many per channel
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@dataclass(frozen=True)
class Quantized:
    """``values`` (1-D, storage dtype) are the codes of the stored elements of a sparse
    weight of ``shape``, in row-major order; ``packed_mask`` marks them (as in
    :class:`SparseWeight`)."""

    dtype: DType
    values: np.ndarray
    packed_mask: np.ndarray
    shape: tuple[int, ...]
    scale: np.ndarray
    zero_point: int

    @property
    def mask(self) -> np.ndarray:
        return unpack_mask(self.packed_mask, self.shape)

    def dequantize(self) -> np.ndarray:
        """The dense weight as Core AI rebuilds it (exact zeros where nothing is stored)."""
        out_dtype = self.scale.dtype
        mask = self.mask
        dense = np.zeros(self.shape, dtype=np.float32)
        dense[mask] = self.values.astype(np.float32) - np.float32(self.zero_point)
        # q - z is exact in every float type here (8-bit codes), and so is its product with a
        # 16-bit scale in float32: one rounding to the weight dtype, as on the runtime
        result: np.ndarray = (dense * self.scale.astype(np.float32)).astype(out_dtype)
        return result

    @property
    def nbytes(self) -> int:
        """Bytes stored: values, scales (the bit mask is counted by the caller)."""
        return int(self.values.nbytes + self.scale.nbytes)


def _channel_counts(sparse: SparseWeight) -> np.ndarray:
    """Stored values per axis-0 index."""
    channels = sparse.shape[0]
    row = sparse.size // max(channels, 1)
    counts: np.ndarray
    if row % 8 == 0:
        counts = _POPCOUNT[sparse.packed_mask].reshape(channels, row // 8).sum(axis=1)
    else:
        counts = sparse.mask.reshape(channels, row).sum(axis=1)
    return counts


def quantize(sparse: SparseWeight, dtype: DType, axis: int | None) -> Quantized:
    """Quantize the stored values of ``sparse``; ``axis`` is its output channel axis (one
    scale per index of it), None for one scale (see the module docstring)."""
    if dtype not in (DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2):
        msg = f"cannot quantize to {dtype}"
        raise ValueError(msg)
    if axis is not None and axis != 0:
        return _quantize_moved(sparse, dtype, axis)
    if axis is None or not sparse.shape:
        counts = np.array([sparse.values.size])
    else:
        counts = _channel_counts(sparse)
    codes, scale, zero_point = _quantize_runs(sparse.values, counts, dtype)
    shape = [1] * len(sparse.shape)
    if axis is not None and shape:
        shape[0] = sparse.shape[0]
    return Quantized(
        dtype, codes, sparse.packed_mask, sparse.shape, scale.reshape(shape), zero_point
    )


def _quantize_moved(sparse: SparseWeight, dtype: DType, axis: int) -> Quantized:
    """Quantize with channels along ``axis``: move it to the front, quantize, move back."""
    mask = sparse.mask
    moved_mask = np.moveaxis(mask, axis, 0)
    moved = to_sparse(np.moveaxis(sparse.dense(), axis, 0), moved_mask)
    inner = quantize(moved, dtype, 0)
    codes = np.zeros(moved_mask.shape, dtype=inner.values.dtype)
    codes[moved_mask] = inner.values
    shape = [1] * len(sparse.shape)
    shape[axis] = sparse.shape[axis]
    values = np.extract(mask, np.moveaxis(codes, 0, axis))
    return Quantized(
        dtype,
        values,
        sparse.packed_mask,
        sparse.shape,
        inner.scale.reshape(shape),
        inner.zero_point,
    )


def _run_reduce(
    values: np.ndarray, starts: np.ndarray, counts: np.ndarray, ufunc: np.ufunc, empty: float
) -> np.ndarray:
    """``ufunc.reduce`` over each run ``values[start : start + count]`` (``empty`` if none)."""
    out = np.full(counts.shape, empty, dtype=np.float64)
    filled = counts > 0
    if values.size:
        out[filled] = ufunc.reduceat(values, starts[filled]).astype(np.float64)
    return out


def _absmax(weight: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Largest magnitude per run (without a full-size ``abs`` temporary)."""
    high = _run_reduce(weight, starts, counts, np.maximum, 0.0)
    low = _run_reduce(weight, starts, counts, np.minimum, 0.0)
    result: np.ndarray = np.maximum(high, -low)
    return result


def stored_scale(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scales rounded to the weight dtype; zero (empty channel) or underflow becomes usable."""
    scale = raw.astype(dtype)
    tiny = ml_dtypes.finfo(dtype).smallest_subnormal
    fixed = np.where(raw > 0, np.maximum(scale.astype(np.float32), np.float32(tiny)), 1.0)
    return fixed.astype(dtype)


def _quantize_runs(
    values: np.ndarray, counts: np.ndarray, dtype: DType
) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes, per-run scales and the zero point for values grouped in consecutive runs."""
    out = values.dtype
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    weight = values.astype(np.float32, copy=False)
    zero_point = 0
    if dtype is DType.INT8:
        absmax = _absmax(weight, starts, counts)
        scale = stored_scale(absmax / 127.0, out)
    elif dtype is DType.UINT8:
        lo = np.minimum(_run_reduce(weight, starts, counts, np.minimum, 0.0), 0.0)
        hi = np.maximum(_run_reduce(weight, starts, counts, np.maximum, 0.0), 0.0)
        zero_point = _uint8_zero_point(lo, hi, counts)
        z = zero_point
        raw = np.maximum(
            np.where(lo < 0, -lo / max(z, 1), 0.0), np.where(hi > 0, hi / max(255 - z, 1), 0.0)
        )
        scale = stored_scale(raw, out)
    else:
        absmax = _absmax(weight, starts, counts)
        scale = _fp8_scales(weight, starts, counts, absmax, numpy_dtype(dtype), out)
    codes = _encode(weight, starts, counts, scale, dtype, zero_point)
    return codes, scale, zero_point


def _encode(
    weight: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    scale: np.ndarray,
    dtype: DType,
    zero_point: int,
) -> np.ndarray:
    """Codes for ``weight`` (float32 values in runs), chunked by runs on the thread pool."""
    storage = numpy_dtype(dtype)
    codes = np.empty(weight.size, dtype=storage)
    scale32 = scale.astype(np.float32)

    def encode(bounds: tuple[int, int]) -> None:
        first, last = bounds
        lo = int(starts[first]) if first < starts.size else weight.size
        hi = int(starts[last - 1] + counts[last - 1]) if last > first else lo
        per_value = np.repeat(scale32[first:last], counts[first:last])
        scaled = weight[lo:hi] / per_value
        if dtype is DType.INT8:
            codes[lo:hi] = np.clip(np.rint(scaled), -127, 127)
        elif dtype is DType.UINT8:
            codes[lo:hi] = np.clip(np.rint(scaled) + zero_point, 0, 255)
        else:
            codes[lo:hi] = _to_fp8(scaled, storage)

    runs = max(1, counts.size)
    per_run = max(1, weight.size // runs)
    parallel_map(encode, row_chunks(counts.size, per_run))
    return codes


def _to_fp8(values: np.ndarray, storage: np.dtype) -> np.ndarray:
    """Round to fp8, saturating (a scale rounded down in fp16 may push the max past fp8's)."""
    fp8_max = float(ml_dtypes.finfo(storage).max)
    saturated: np.ndarray = np.clip(values, -fp8_max, fp8_max)
    return saturated.astype(storage)


def _format(storage: np.dtype) -> tuple[int, int]:
    """Mantissa bits and the smallest normal exponent of a float type narrower than float32."""
    info = ml_dtypes.finfo(storage)
    return int(info.nmant), int(info.minexp)


def kept_bits(storage: np.dtype) -> np.uint32:
    """The float32 bits that a value rounded to ``storage`` may have set: sign, exponent and
    the type's mantissa bits."""
    mantissa, _ = _format(storage)
    return np.uint32(~((1 << (23 - mantissa)) - 1) & 0xFFFFFFFF)


def float_carried(values: np.ndarray, storage: np.dtype) -> np.ndarray:
    """The float32 bit patterns (uint32, a new array) of ``values`` plus half a unit of the
    last mantissa place of ``storage`` (fp8, float16, bfloat16), rounding half to even:
    clearing the bits below that place gives each normal value rounded to nearest (see
    :func:`float_round`)."""
    mantissa, _ = _format(storage)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # in place on one temporary: bits + half + odd, odd the lowest kept bit
    carried = bits >> np.uint32(23 - mantissa)
    carried &= np.uint32(1)
    carried += np.uint32((1 << (23 - mantissa - 1)) - 1)
    carried += bits
    return carried


def float_round(
    values: np.ndarray, storage: np.dtype, maybe_small: np.ndarray | None = None
) -> np.ndarray:
    """``values`` (1-D float32, within the range of ``storage``: fp8, float16, bfloat16)
    rounded to ``storage``, as float32.

    Bit-exact with ``values.astype(storage).astype(np.float32)`` (round to nearest, ties to
    even) but several times faster: normal numbers are rounded on their float32 bit pattern,
    subnormals to the fixed subnormal step. ``maybe_small``: the indices of the only values
    that may be below the type's smallest normal, when the caller knows them (else every
    value is checked).
    """
    mantissa, min_exponent = _format(storage)
    rounded = float_carried(values, storage)
    rounded &= kept_bits(storage)
    result: np.ndarray = rounded.view(np.float32)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    smallest_normal = np.float32(2.0**min_exponent).view(np.uint32)
    if maybe_small is None:
        small = np.flatnonzero((bits & np.uint32(0x7FFFFFFF)) < smallest_normal)
    else:
        small = maybe_small[(bits[maybe_small] & np.uint32(0x7FFFFFFF)) < smallest_normal]
    if small.size:  # subnormals: round to the fixed subnormal step
        step = np.float32(2.0 ** (min_exponent - mantissa))
        result[small] = np.rint(values[small] / step) * step
    return result


def rounded_to(values: np.ndarray, out: np.dtype, largest: float) -> np.ndarray:
    """``values`` (float32, magnitudes at most ``largest``) rounded to the float dtype
    ``out``, as a new float32 array: by :func:`float_round` for float16 within its range
    (numpy's float16 casts are several times slower), else by casting."""
    if out == np.dtype(np.float16) and largest <= float(np.finfo(np.float16).max):
        return float_round(values.reshape(-1), out).reshape(values.shape)
    rounded: np.ndarray = values.astype(out).astype(np.float32)
    return rounded


def _fp8_scales(
    weight: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    absmax: np.ndarray,
    storage: np.dtype,
    out: np.dtype,
) -> np.ndarray:
    """Per-run scale: the candidate factor with the least squared error on a run sample."""
    fp8_max = float(ml_dtypes.finfo(storage).max)
    per_run = max(_MIN_SAMPLE, min(_SAMPLE, _MAX_SAMPLES // max(counts.size, 1)))
    strides = np.maximum(1, counts // per_run)
    sizes = np.where(counts > 0, -(-counts // strides), 0)
    run_of = np.repeat(np.arange(counts.size), sizes)
    within = np.arange(run_of.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    sample = weight[starts[run_of] + within * strides[run_of]]

    def error(factor: float) -> np.ndarray:
        scale = stored_scale(absmax / fp8_max * factor, out)
        per_value = scale[run_of].astype(np.float32)
        codes = float_round(np.clip(sample / per_value, -fp8_max, fp8_max), storage)
        # code (<= 4 significant bits) x scale (<= 24) is exact in float32, so one rounding
        # to the weight dtype equals the runtime's product in that dtype (and avoids numpy's
        # slow float16 arithmetic)
        rebuilt = rounded_to(codes * per_value, out, fp8_max * float(per_value.max(initial=0)))
        err: np.ndarray = np.bincount(
            run_of, weights=(rebuilt - sample) ** 2, minlength=counts.size
        )
        return err

    errors = np.stack(parallel_map(error, list(_FP8_FACTORS)))
    best = np.argmin(errors, axis=0)  # ties: the smallest factor
    return stored_scale(absmax / fp8_max * _FP8_FACTORS[best], out)


def _uint8_zero_point(lo: np.ndarray, hi: np.ndarray, counts: np.ndarray) -> int:
    """The zero point minimizing the summed quantization noise (sum of count * scale^2)."""
    zero_points = np.arange(256, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.maximum(
            np.where(lo[None, :] < 0, -lo[None, :] / zero_points, 0.0),
            np.where(hi[None, :] > 0, hi[None, :] / (255.0 - zero_points), 0.0),
        )
    noise = np.nan_to_num(need, nan=np.inf, posinf=np.inf) ** 2 @ counts.astype(np.float64)
    return int(np.argmin(noise))  # ties: lowest zero point
