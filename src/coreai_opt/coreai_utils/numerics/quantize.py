"""Quantization of the kept values of a pruned weight, with per-output-channel scales.

A pruned weight ``w`` (zeros where pruned) with output channel axis ``axis`` is stored as
``q`` in a storage type plus ``scale`` (one per output channel, in the weight's dtype, shaped
for broadcasting: 1 on every axis but ``axis``) and a per-tensor ``zero_point``:

    w ~= scale * (q - zero_point)

* int8: symmetric, ``scale = absmax / 127`` per channel, ``q`` in [-127, 127], zero point 0.
* fp8 (e4m3fn, e5m2): ``q = fp8(w / scale)``. fp8's rounding error depends on where values
  fall within a binade, so per channel the scale is chosen among
  ``absmax / fp8_max * 2**(k/32)``, k = 0..31 (one binade; none saturates), for the least
  squared error measured on a strided sample of at most 256 of the channel's elements.
* uint8: asymmetric with a per-channel scale and one per-tensor zero point ``z`` (chosen to
  minimize the summed quantization noise), ``q = clip(rint(w / scale) + z, 0, 255)``. A
  per-tensor zero point is what Core AI can undo exactly before densifying (pruned
  positions must come out as exact zeros).

With ``axis=None`` one scale covers the whole tensor. A channel with no non-zero values gets
scale 1 (nothing to represent; no division by zero). ``dequantize`` reproduces the Core AI
runtime's arithmetic bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from coreai_opt.coreai_utils.dtypes import DType, numpy_dtype
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, pack_mask, unpack_mask

__all__ = ["Quantized", "quantize"]

_FP8_FACTORS = 2.0 ** (np.arange(32) / 32)
_SAMPLE = 256


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
        # q - z is exact in every float type here (8-bit codes); one rounding for the product
        result: np.ndarray = (dense.astype(out_dtype) * self.scale).astype(out_dtype)
        return result

    @property
    def nbytes(self) -> int:
        """Bytes stored: values, scales (the bit mask is counted by the caller)."""
        return int(self.values.nbytes + self.scale.nbytes)


def _record(dtype: DType, q: np.ndarray, mask: np.ndarray, scale: np.ndarray, zero_point: int) -> Quantized:
    return Quantized(dtype, np.extract(mask, q), pack_mask(mask), tuple(mask.shape), scale, zero_point)


def _channel_reduce(array: np.ndarray, axis: int | None, fn: np.ufunc) -> np.ndarray:
    axes = tuple(a for a in range(array.ndim) if a != axis)
    reduced: np.ndarray = fn.reduce(array, axis=axes, keepdims=True)
    return reduced


def _as_scale(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scales rounded to the weight dtype; zero (empty channel) or underflow becomes usable."""
    scale = raw.astype(dtype)
    tiny = ml_dtypes.finfo(dtype).smallest_subnormal
    fixed = np.where(raw > 0, np.maximum(scale.astype(np.float32), np.float32(tiny)), 1.0)
    return fixed.astype(dtype)


def quantize(sparse: SparseWeight, dtype: DType, axis: int | None) -> Quantized:
    """Quantize the stored values of ``sparse``; ``axis`` is its output channel axis (one
    scale per index of it), None for one scale (see the module docstring)."""
    weight = sparse.dense().astype(np.float32)
    mask = sparse.mask
    pruned_dtype = sparse.values.dtype
    if dtype is DType.INT8:
        return _int8(weight, mask, pruned_dtype, axis)
    if dtype is DType.UINT8:
        return _uint8(weight, mask, pruned_dtype, axis)
    if dtype in (DType.FP8_E4M3FN, DType.FP8_E5M2):
        return _fp8(weight, mask, pruned_dtype, dtype, axis)
    msg = f"cannot quantize to {dtype}"
    raise ValueError(msg)


def _int8(weight: np.ndarray, mask: np.ndarray, out: np.dtype, axis: int | None) -> Quantized:
    absmax = _channel_reduce(np.abs(weight), axis, np.maximum)
    scale = _as_scale(absmax / 127.0, out)
    q = np.clip(np.rint(weight / scale.astype(np.float32)), -127, 127).astype(np.int8)
    return _record(DType.INT8, q, mask, scale, 0)


def _fp8(
    weight: np.ndarray, mask: np.ndarray, out: np.dtype, dtype: DType, axis: int | None
) -> Quantized:
    storage = numpy_dtype(dtype)
    fp8_max = float(ml_dtypes.finfo(storage).max)
    absmax = _channel_reduce(np.abs(weight), axis, np.maximum)
    channel_first = np.moveaxis(weight, axis, 0) if axis is not None else weight.reshape(1, -1)
    rows = channel_first.reshape(channel_first.shape[0], -1)
    sample = rows[:, :: max(1, rows.shape[1] // _SAMPLE)]
    sample_absmax = absmax.reshape(-1, 1)
    best_err = np.full(sample.shape[0], np.inf)
    best_factor = np.ones(sample.shape[0])
    for factor in _FP8_FACTORS:
        scale = _as_scale(sample_absmax / fp8_max * factor, out)
        rebuilt = _fp8_roundtrip(sample, scale, storage, out)
        err = np.sum((rebuilt - sample) ** 2, axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_factor = np.where(better, factor, best_factor)
    scale = _as_scale(absmax / fp8_max * best_factor.reshape(absmax.shape), out)
    q = _to_fp8(weight / scale.astype(np.float32), storage)
    return _record(dtype, q, mask, scale, 0)


def _fp8_roundtrip(
    values: np.ndarray, scale: np.ndarray, storage: np.dtype, out: np.dtype
) -> np.ndarray:
    q = _to_fp8(values / scale.astype(np.float32), storage)
    rebuilt: np.ndarray = (q.astype(np.float32).astype(out) * scale).astype(np.float32)
    return rebuilt


def _to_fp8(values: np.ndarray, storage: np.dtype) -> np.ndarray:
    """Round to fp8, saturating (a scale rounded down in fp16 may push the max past fp8's)."""
    fp8_max = float(ml_dtypes.finfo(storage).max)
    saturated: np.ndarray = np.clip(values, -fp8_max, fp8_max)
    return saturated.astype(storage)


def _uint8(weight: np.ndarray, mask: np.ndarray, out: np.dtype, axis: int | None) -> Quantized:
    lo = np.minimum(_channel_reduce(weight, axis, np.minimum), 0.0)
    hi = np.maximum(_channel_reduce(weight, axis, np.maximum), 0.0)
    counts = _channel_reduce(mask.astype(np.float64), axis, np.add).reshape(-1)
    zero_points = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # scale needed per (z, channel) so that [lo, hi] fits in [-z, 255 - z] steps
        need = np.maximum(
            np.where(lo.reshape(1, -1) < 0, -lo.reshape(1, -1) / zero_points[:, None], 0.0),
            np.where(
                hi.reshape(1, -1) > 0, hi.reshape(1, -1) / (255.0 - zero_points[:, None]), 0.0
            ),
        )
    noise = np.nan_to_num(need, nan=np.inf, posinf=np.inf) ** 2 @ counts
    z = int(np.argmin(noise))  # ties: lowest zero point
    raw = np.maximum(
        np.where(lo < 0, -lo / max(z, 1), 0.0), np.where(hi > 0, hi / max(255 - z, 1), 0.0)
    )
    scale = _as_scale(raw, out)
    q = np.clip(np.rint(weight / scale.astype(np.float32)) + z, 0, 255).astype(np.uint8)
    return _record(DType.UINT8, q, mask, scale, z)
