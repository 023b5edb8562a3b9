"""Float codes of blocks (fp8 e4m3fn/e5m2, fp4 e2m1fn): the scale search and the codes,
pure numpy.

Per block the scale is chosen among ``absmax / fp_max * 2**(k/32)``, k = 0..31, for the least
squared error on a strided sample of the block (at most 256 values), or with ``FP8_E8M0FNU``
scales among the powers of two ``2**e0`` (the smallest that does not saturate) and
``2**(e0 - 1)``. A code is the saturating round-to-nearest-even cast of ``w / scale``, a
value that rounds to zero stored as +0; fp8 rounding is emulated exactly on the float32 bit
pattern and encoded through a table (``ml_dtypes`` casts are several times slower).
"""

from __future__ import annotations

from functools import cache

import ml_dtypes
import numpy as np

from coreai_opt.coreai_utils.numerics.parallel import parallel_map, row_chunks
from coreai_opt.coreai_utils.numerics.quantize import (
    float_carried,
    float_round,
    kept_bits,
    rounded_to,
    stored_scale,
)

__all__ = ["encode_float", "float_scales"]

_FACTORS = 2.0 ** (np.arange(32) / 32)
_SAMPLE = 256
_FP8_EMULATED = (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2))
_SUBNORMAL = 0xFF  # a NaN code in both fp8 types: never the code of a finite value


def encode_float(
    rows: np.ndarray, scale: np.ndarray, absmax: np.ndarray, storage: np.dtype
) -> np.ndarray:
    """Codes of ``rows / scale[:, None]`` (``absmax``: each row's largest magnitude): the
    saturating round-to-nearest-even cast, a value that rounds to zero stored as +0 (a -0
    code would decode to -0.0); by row chunks on the thread pool, each rounded value's code
    read from a table."""
    limit = float(ml_dtypes.finfo(storage).max)
    per_row = scale.astype(np.float32)[:, None]
    peak = absmax.astype(np.float32)
    codes = np.empty(rows.shape, dtype=storage)
    table = _code_table(storage)

    carried_table = _carried_code_table(storage) if storage in _FP8_EMULATED else None

    def chunk(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        scaled = rows[start:stop] / per_row[start:stop]
        _saturate(scaled, peak[start:stop], per_row[start:stop], limit)
        out = codes[start:stop].view(np.uint8)
        if carried_table is None:
            high = _rounded(scaled, storage).view(np.uint32) >> np.uint32(16)
            np.take(table, high, out=out, mode="clip")  # mode: unbuffered
            return
        high = float_carried(scaled, storage)
        high >>= np.uint32(16)
        np.take(carried_table, high, out=out, mode="clip")
        # the few values below the smallest normal, rounded to the subnormal step
        small = np.flatnonzero(out == _SUBNORMAL)
        if small.size:
            rounded = float_round(scaled.reshape(-1)[small], storage)
            out.reshape(-1)[small] = np.take(table, rounded.view(np.uint32) >> np.uint32(16))

    parallel_map(chunk, row_chunks(rows.shape[0], rows.shape[1]))
    return codes


def _saturate(scaled: np.ndarray, peak: np.ndarray, per_row: np.ndarray, limit: float) -> None:
    """Clip ``scaled`` (rows divided by ``per_row`` ``[r, 1]``) to ``[-limit, limit]`` in
    place, only when a row's largest magnitude ``peak`` can land outside (else no value can,
    and the pass is saved)."""
    if np.any(peak / per_row[:, 0] > limit):
        np.clip(scaled, -limit, limit, out=scaled)


def _rounded(
    scaled: np.ndarray, storage: np.dtype, maybe_small: np.ndarray | None = None
) -> np.ndarray:
    """``scaled`` (float32, within the code range) rounded to the code type, as float32 (the
    fast exact fp8 emulation where it applies; ``maybe_small`` as for ``float_round``)."""
    if storage in _FP8_EMULATED:  # float_round works on flat arrays
        return float_round(scaled.reshape(-1), storage, maybe_small).reshape(scaled.shape)
    rounded: np.ndarray = scaled.astype(storage).astype(np.float32)
    return rounded


@cache
def _code_table(storage: np.dtype) -> np.ndarray:
    """The code (uint8) of every float32 whose low 16 bits are zero, by its high 16 bits
    (every fp8 and fp4 value is one); a value of zero maps to +0's code."""
    patterns = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    limit = float(ml_dtypes.finfo(storage).max)
    finite = np.clip(np.where(np.isfinite(patterns), patterns, 0.0), -limit, limit)
    cast = finite.astype(storage)
    codes = cast.view(np.uint8).copy()
    codes[cast.astype(np.float32) == 0] = 0
    return codes


@cache
def _carried_code_table(storage: np.dtype) -> np.ndarray:
    """The code (uint8) of each fp8 value by the high 16 bits of :func:`float_carried` (the
    bits below the mantissa cleared), ``_SUBNORMAL`` where that value is a non-zero value
    below the smallest normal (rounded otherwise: on the subnormal step)."""
    patterns = (np.arange(1 << 16, dtype=np.uint32) << 16) & kept_bits(storage)
    codes = np.take(_code_table(storage), patterns >> 16)
    magnitude = patterns.view(np.float32).copy()
    np.abs(magnitude, out=magnitude)
    smallest = np.float32(ml_dtypes.finfo(storage).smallest_normal)
    codes[(magnitude > 0) & (magnitude < smallest)] = _SUBNORMAL
    return codes


def float_scales(
    rows: np.ndarray, absmax: np.ndarray, storage: np.dtype, scale_dtype: np.dtype, out: np.dtype
) -> np.ndarray:
    """Per-row scale with the least squared error among the candidates (ties: the first),
    the candidates evaluated on the thread pool."""
    limit = float(ml_dtypes.finfo(storage).max)
    stride = max(1, rows.shape[1] // _SAMPLE)
    sample = np.ascontiguousarray(rows[:, ::stride])
    if scale_dtype == np.dtype(ml_dtypes.float8_e8m0fnu):
        with np.errstate(divide="ignore"):
            e0 = np.ceil(np.log2(np.where(absmax > 0, absmax / limit, 1.0)))
        candidates = [2.0**e0, 2.0 ** (e0 - 1)]
    else:
        candidates = [absmax / limit * factor for factor in _FACTORS]
    exact = out == np.dtype(np.float32)  # code x scale is exact in float32
    scales = [stored_scale(candidate, scale_dtype) for candidate in candidates]
    largest = np.max([scale.astype(np.float32) for scale in scales], axis=0)
    # only these values fall below the smallest normal code for some candidate (dividing by
    # a smaller scale only makes them larger)
    smallest = np.float32(ml_dtypes.finfo(storage).smallest_normal)
    maybe_small = (
        np.flatnonzero(np.abs(sample) < (largest * smallest)[:, None])
        if storage in _FP8_EMULATED
        else None
    )
    peak = absmax.astype(np.float32)

    def error(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_row = scale.astype(np.float32)[:, None]
        scaled = sample / per_row
        _saturate(scaled, peak, per_row, limit)
        rebuilt = _rounded(scaled, storage, maybe_small)
        rebuilt *= per_row
        if not exact:
            rebuilt = rounded_to(rebuilt, out, limit * float(per_row.max(initial=0)))
        rebuilt -= sample
        return np.einsum("ij,ij->i", rebuilt, rebuilt), scale

    results = parallel_map(error, scales)
    best = np.argmin(np.stack([r[0] for r in results]), axis=0)
    chosen: np.ndarray = np.stack([r[1] for r in results])[best, np.arange(rows.shape[0])]
    return chosen
