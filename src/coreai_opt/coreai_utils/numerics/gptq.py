"""GPTQ (Frantar et al. 2022): quantize a weight column by column with error feedback, pure numpy.

The sweep of :mod:`obs` with the :class:`GridRounding` projection: each column is rounded to
the stored format's nearest code and the rounding error is pushed onto the columns not yet
visited, so that they compensate for it on the calibration inputs. Every dtype, scheme and
granularity of :func:`blockwise.quantize_blocks` (same scales, same codes, same decoding):

* per tensor and per channel: the scales (and zero points) are those of round-to-nearest,
  fixed before the sweep from the original weight;
* per block: a block's scale (and zero point) is chosen from the *updated* weights when the
  sweep enters the block (its ``block_size`` input channels, times the kernel positions of a
  convolution), by the same rule (absmax, range, or the fp8 scale search);
* a column is rounded exactly as :func:`blockwise.encode_rows` rounds it, and its stored
  value is the runtime's decoding of that code (:func:`blockwise.decode_rows`), so the result
  decodes on the runtime to exactly what the sweep produced.

With a diagonal Hessian nothing propagates and the result is round-to-nearest's, code for
code. ``order=True`` visits the columns by decreasing Hessian diagonal ("act-order"); only
where the scales are fixed before the sweep (per tensor, per channel).
"""

from __future__ import annotations

import math

import numpy as np

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.blockwise import (
    BlockParams,
    BlockQuantized,
    as_rows,
    block_params,
    block_shape,
    code_type,
    decode_rows,
    encode_rows,
)
from coreai_opt.coreai_utils.numerics.obs import DAMPENING, Projection, factor, sweep

__all__ = ["GridRounding", "gptq", "gptq_weight"]


class GridRounding(Projection):
    """Round each column to a quantization grid (module docstring).

    ``fixed``: one set of parameters per row, fixed before the sweep (per tensor or per
    channel); else ``group`` columns share a block whose parameters are chosen when the
    sweep enters it (a last partial block is padded with zeros to ``group`` columns, as
    :func:`blockwise.quantize_blocks` pads it). ``codes`` (``[columns, rows]``) and
    ``block_params`` (per block, in order) hold the result.
    """

    def __init__(
        self,
        rows: int,
        columns: int,
        dtype: DType,
        *,
        symmetric: bool,
        scale_dtype: np.dtype,
        out: np.dtype,
        fixed: BlockParams | None = None,
        group: int | None = None,
    ) -> None:
        if (fixed is None) == (group is None):
            msg = "give exactly one of fixed and group"
            raise ValueError(msg)
        self.dtype = dtype
        self.symmetric = symmetric
        self.scale_dtype = scale_dtype
        self.out = out
        self.group = group
        self.current: BlockParams | None = None
        self.block_params: list[BlockParams] = []
        self.codes = np.zeros((columns, rows), dtype=code_type(dtype))
        if fixed is not None:
            self._use(fixed)

    def _use(self, params: BlockParams) -> None:
        """Make ``params`` the current ones; integer grids get their float32 scales and
        offsets once, for the lean per-column path (the same arithmetic as
        :func:`blockwise.encode_rows` and :func:`blockwise.decode_rows`)."""
        self.current = params
        if params.limits is not None:
            self.scale32 = params.scale.astype(np.float32)
            self.shift32 = params.zero_point.astype(np.float32)

    def groups(self, columns: int) -> list[int] | None:
        if self.group is None:
            return None
        return [*range(0, columns, self.group), columns]

    def enter_group(self, start: int, values: np.ndarray, scale: np.ndarray) -> None:
        if self.group is None:
            return
        rows = np.zeros((values.shape[1], self.group), dtype=np.float32)
        rows[:, : values.shape[0]] = values.T
        params = block_params(
            rows,
            self.dtype,
            symmetric=self.symmetric,
            scale_dtype=self.scale_dtype,
            out=self.out,
        )
        self._use(params)
        self.block_params.append(params)

    def project(self, column: int, values: np.ndarray) -> np.ndarray:
        params = self.current
        if params is None:
            msg = "a column was projected before its block was entered"
            raise ValueError(msg)
        if params.limits is not None:  # rint(w / s) + z, clipped; then (q - z) * s
            scaled = np.divide(values, self.scale32, dtype=np.float32)
            np.rint(scaled, out=scaled)
            scaled += self.shift32
            np.clip(scaled, *params.limits, out=scaled)
            self.codes[column] = scaled
            scaled -= self.shift32
            scaled *= self.scale32
            decoded: np.ndarray = scaled.astype(self.out).astype(values.dtype, copy=False)
            return decoded
        line = values.astype(np.float32, copy=False)[:, None]
        codes = encode_rows(line, params, np.abs(line[:, 0]))
        self.codes[column] = codes[:, 0]
        result: np.ndarray = decode_rows(codes, params, self.out)[:, 0].astype(values.dtype)
        return result


def gptq(
    weight: np.ndarray,
    gram: np.ndarray,
    dtype: DType,
    *,
    symmetric: bool = True,
    scale_dtype: np.dtype | None = None,
    fixed: BlockParams | None = None,
    group: int | None = None,
    order: bool = False,
    dampening: float = DAMPENING,
    precision: type = np.float32,
) -> tuple[np.ndarray, np.ndarray, list[BlockParams]]:
    """Quantize ``weight [rows, columns]`` against ``gram [columns, columns]``.

    ``fixed`` (parameters per row, fixed before the sweep) or ``group`` (columns per block,
    parameters chosen in the sweep) as for :class:`GridRounding`; ``scale_dtype`` defaults
    to the weight's dtype. ``order`` visits the columns by decreasing Hessian diagonal (with
    ``fixed`` only). Returns ``(decoded [rows, columns] in the weight's dtype, codes [rows,
    columns], the per-block parameters in order (empty with ``fixed``))``.
    """
    rows, columns = weight.shape
    if gram.shape != (columns, columns):
        msg = f"gram of shape {gram.shape} does not match {columns} columns"
        raise ValueError(msg)
    if order and group is not None:
        msg = "ordering the columns needs scales fixed before the sweep (not per block)"
        raise ValueError(msg)
    out = weight.dtype
    rounding = GridRounding(
        rows,
        columns,
        dtype,
        symmetric=symmetric,
        scale_dtype=np.dtype(scale_dtype) if scale_dtype is not None else out,
        out=out,
        fixed=fixed,
        group=group,
    )
    permutation = np.argsort(-np.diagonal(gram), kind="stable") if order else None
    matrix, hessian = weight, gram
    if permutation is not None:
        matrix, hessian = weight[:, permutation], gram[np.ix_(permutation, permutation)]
    factored = factor(hessian, dampening=dampening, precision=precision)
    result = sweep(matrix, factored, rounding, precision=precision).astype(out)
    codes = rounding.codes.T
    if permutation is not None:
        inverse = np.argsort(permutation)
        result, codes = result[:, inverse], codes[:, inverse]
    return result, codes, rounding.block_params


def _stacked(parts: list[list[BlockParams]]) -> BlockParams:
    """The per-block parameters of every band (each a list of ``[band rows]`` sets, one per
    block) as one set of ``[rows, blocks]`` arrays."""
    first = parts[0][0]
    return BlockParams(
        first.dtype,
        np.concatenate([np.stack([p.scale for p in band], axis=1) for band in parts]),
        np.concatenate([np.stack([p.zero_point for p in band], axis=1) for band in parts]),
        first.limits,
        None,
    )


def _bands(
    weight: np.ndarray, stats: ActivationStats, out_axis: int, in_axis: int
) -> tuple[np.ndarray, list[tuple[slice, np.ndarray]], int]:
    """``(matrix [C_out, columns], [(rows of a band, its Gram)], kernel positions)``."""
    if stats.gram is None:
        msg = "gptq needs X^T X statistics"
        raise ValueError(msg)
    if stats.layout is StatsLayout.LINEAR:
        matrix = np.moveaxis(weight, (out_axis, in_axis), (0, 1))
        return matrix, [(slice(None), stats.gram[0])], 1
    if stats.layout is StatsLayout.CONV:
        size = weight.shape[0] // stats.groups
        bands = [(slice(g * size, (g + 1) * size), stats.gram[g]) for g in range(stats.groups)]
        return weight.reshape(weight.shape[0], -1), bands, math.prod(weight.shape[2:])
    msg = f"gptq does not support {stats.layout.value} statistics"
    raise ValueError(msg)


def gptq_weight(
    weight: np.ndarray,
    stats: ActivationStats,
    out_axis: int,
    in_axis: int,
    *,
    dtype: DType,
    granularity: str,
    block_size: int,
    symmetric: bool = True,
    scale_dtype: np.dtype | None = None,
    order: bool = False,
) -> BlockQuantized:
    """:func:`gptq` on a weight in its own layout, stored as :func:`quantize_blocks` stores
    it (same block shape, scales, zero points and decoding).

    ``linear`` statistics: a rank-2 weight with output axis ``out_axis``; ``conv``: a
    ``[C_out, C_in/g, k...]`` weight, each group of output channels against its group's
    Gram (columns: channel, then kernel positions; a block of ``block_size`` input channels
    is ``block_size * prod(k)`` consecutive columns). Per-tensor and per-channel parameters
    are round-to-nearest's on the original weight; ``order`` visits their columns by
    decreasing Hessian diagonal (per block the columns stay in order: each block's scales
    come from its updated columns). Raises ``ValueError`` without a Gram or
    for another layout, :class:`NonFiniteError` for NaN or Inf.
    """
    out = weight.dtype
    scales_in = np.dtype(scale_dtype) if scale_dtype is not None else out
    block = block_shape(weight.shape, granularity, out_axis, in_axis, block_size)
    grid = [-(-n // b) for n, b in zip(weight.shape, block, strict=True)]
    matrix, bands, taps = _bands(weight, stats, out_axis, in_axis)
    channels = matrix.shape[0]
    per_block = granularity == "per_block"
    fixed: BlockParams | None = None
    if not per_block:  # round-to-nearest's parameters, one per output channel or one in all
        rows, _ = as_rows(weight, block)
        fixed = block_params(rows, dtype, symmetric=symmetric, scale_dtype=scales_in, out=out)
    codes = np.empty(matrix.shape, dtype=code_type(dtype))
    blocks: list[list[BlockParams]] = []
    for band, gram in bands:
        rows_fixed = None
        if fixed is not None:
            index = np.arange(channels)[band]
            rows_fixed = fixed.take(index if granularity == "per_channel" else 0 * index)
        _, codes[band], params = gptq(
            matrix[band],
            gram,
            dtype,
            symmetric=symmetric,
            scale_dtype=scales_in,
            fixed=rows_fixed,
            group=block[in_axis] * taps if per_block else None,
            order=order and not per_block,
        )
        blocks.append(params)
    used = _stacked(blocks) if per_block else fixed
    if used is None:  # unreachable: one of the two is set
        msg = "no quantization parameters"
        raise ValueError(msg)
    stored = used.stored_zero_point(symmetric)

    def laid(values: np.ndarray) -> np.ndarray:
        """Per-block values ``[C_out, blocks]`` (or per-channel/-tensor ones) on the grid."""
        if per_block and weight.ndim == 2:
            values = np.moveaxis(values, (0, 1), (out_axis, in_axis))
        return np.ascontiguousarray(values.reshape(grid))

    if stats.layout is StatsLayout.LINEAR:
        codes = np.moveaxis(codes, (0, 1), (out_axis, in_axis))
    return BlockQuantized(
        dtype=dtype,
        codes=np.ascontiguousarray(codes.reshape(weight.shape)),
        scale=laid(used.scale),
        zero_point=None if stored is None else laid(stored),
        block=block,
    )
