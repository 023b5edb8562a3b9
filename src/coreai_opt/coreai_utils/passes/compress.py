"""The numbers for one weight from its plan: prune (magnitude, Wanda, SparseGPT), then the
joint quantization or palettization of the kept values. Pure numpy on arrays read by the pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.activations import input_norms
from coreai_opt.coreai_utils.numerics.blockwise import BlockParams
from coreai_opt.coreai_utils.numerics.gptq import GridRounding
from coreai_opt.coreai_utils.numerics.kmeans import Palette, nearest_sorted, palettize
from coreai_opt.coreai_utils.numerics.lut_rounding import LutRounding
from coreai_opt.coreai_utils.numerics.obs import Projection
from coreai_opt.coreai_utils.numerics.prune import prune_block, prune_magnitude, prune_nm
from coreai_opt.coreai_utils.numerics.quantize import Quantized, quantize
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse
from coreai_opt.coreai_utils.numerics.sparsegpt import sparsegpt_weight
from coreai_opt.coreai_utils.numerics.wanda import wanda_block_mask, wanda_mask, wanda_nm_mask
from coreai_opt.coreai_utils.passes.options import Algorithm, SparsifyOptions
from coreai_opt.coreai_utils.passes.plan import Mode, WeightPlan

__all__ = ["Compressed", "compress_values", "joint_sweep", "prune"]


@dataclass(frozen=True)
class Compressed:
    """The numeric result for one weight, ready to be written into the IR."""

    sparse: SparseWeight
    joint: Quantized | Palette | None
    note: str | None


def compress_values(sparse: SparseWeight, plan: WeightPlan, options: SparsifyOptions) -> Compressed:
    """Quantize or palettize the kept values of ``sparse`` as configured (pure numpy)."""
    wanted = options.quantize_dtype or (
        f"palettize{options.palettize_nbits}" if options.palettize_nbits else None
    )
    if wanted is None:
        return Compressed(sparse, None, None)
    if sparse.values.size == 0:
        note = f"no non-zero values left; {wanted} skipped, stored as plain sparse"
        return Compressed(sparse, None, note)
    if options.quantize_dtype is not None:
        return Compressed(
            sparse, quantize(sparse, options.quantize_dtype, plan.site.out_axis), None
        )
    return Compressed(sparse, palettize(sparse.values, options.palettize_nbits or 8), None)


def joint_sweep(
    weight: np.ndarray, plan: WeightPlan, options: SparsifyOptions, first: Compressed
) -> Compressed:
    """SparseGPT once more with the kept values also rounded in the sweep, to the grid (the
    scales and zero point) or the LUT that prune-then-quantize chose in ``first``, so that
    later columns compensate the rounding too; the result stored with that grid or LUT."""
    site, stats, joint = plan.site, plan.stats, first.joint
    if joint is None or stats is None or site.out_axis is None or site.in_axis is None:
        return first
    out = weight.dtype
    channels = site.shape[site.out_axis]
    columns = site.size // channels
    rounding: Callable[[slice], Projection]
    if isinstance(joint, Quantized):
        params = _row_params(joint, channels)

        def rounding(rows: slice) -> Projection:
            own = params.take(np.arange(channels)[rows])
            return GridRounding(
                own.scale.size,
                columns,
                joint.dtype,
                symmetric=joint.dtype is not DType.UINT8,
                scale_dtype=out,
                out=out,
                fixed=own,
            )

    else:
        lut = joint.lut.astype(out)[None, :, None]

        def rounding(rows: slice) -> Projection:
            count = np.arange(channels)[rows].size
            return LutRounding(lut, np.zeros(count, dtype=np.intp), None, out, columns)

    n_m = options.n_m_ratio if plan.mode is Mode.N_M else None
    sparse = sparsegpt_weight(
        weight,
        stats,
        site.out_axis,
        site.in_axis,
        sparsity=None if n_m is not None else options.target_sparsity or 0.0,
        n_m=n_m,
        rounding=rounding,
    )
    if isinstance(joint, Quantized):
        return Compressed(sparse, quantize(sparse, joint.dtype, site.out_axis, like=joint), None)
    indices = nearest_sorted(sparse.values.astype(np.float64), joint.lut.astype(np.float64))
    return Compressed(sparse, Palette(joint.lut, indices, joint.nbits), None)


def _row_params(joint: Quantized, channels: int) -> BlockParams:
    """The grid of a sparse weight's quantization as one set of parameters per output
    channel (the form the sweep's :class:`GridRounding` takes)."""
    scale = np.broadcast_to(joint.scale.reshape(-1), (channels,))
    zero_point = np.full(channels, float(joint.zero_point))
    limits = {DType.INT8: (-127, 127), DType.UINT8: (0, 255)}.get(joint.dtype)
    return BlockParams(joint.dtype, np.ascontiguousarray(scale), zero_point, limits, None)


def prune(weight: np.ndarray, plan: WeightPlan, options: SparsifyOptions) -> SparseWeight:
    """The sparse form of ``weight`` under ``plan`` (pure numpy, on the fast path)."""
    site = plan.site
    if plan.algorithm is not Algorithm.MAGNITUDE and plan.stats is not None:
        return _prune_calibrated(weight, plan, options)
    if plan.mode is Mode.N_M and options.n_m_ratio is not None and site.in_axis is not None:
        return prune_nm(weight, *options.n_m_ratio, axis=site.in_axis)
    sparsity = options.target_sparsity if options.target_sparsity is not None else 0.0
    if plan.mode is Mode.BLOCK and options.block_size is not None and site.out_axis is not None:
        return prune_block(weight, sparsity, options.block_size, axis=site.out_axis)
    return prune_magnitude(weight, sparsity)


def _prune_calibrated(
    weight: np.ndarray, plan: WeightPlan, options: SparsifyOptions
) -> SparseWeight:
    """Wanda or SparseGPT for a weight whose statistics fit it (checked by the plan)."""
    site, stats = plan.site, plan.stats
    if stats is None or site.out_axis is None or site.in_axis is None:
        msg = "calibrated pruning needs statistics and channel axes"
        raise ValueError(msg)
    sparsity = options.target_sparsity if options.target_sparsity is not None else 0.0
    n_m = options.n_m_ratio if plan.mode is Mode.N_M else None
    if plan.algorithm is Algorithm.SPARSEGPT:
        if n_m is not None:
            return sparsegpt_weight(weight, stats, site.out_axis, site.in_axis, n_m=n_m)
        return sparsegpt_weight(weight, stats, site.out_axis, site.in_axis, sparsity=sparsity)
    norms = input_norms(stats, site.shape, site.out_axis, site.in_axis)
    if n_m is not None:
        keep = wanda_nm_mask(weight, norms, *n_m, axis=site.in_axis)
    elif plan.mode is Mode.BLOCK and options.block_size is not None:
        keep = wanda_block_mask(weight, norms, sparsity, options.block_size, site.out_axis)
    else:
        keep = wanda_mask(weight, norms, sparsity, site.out_axis)
    return to_sparse(weight, keep)
