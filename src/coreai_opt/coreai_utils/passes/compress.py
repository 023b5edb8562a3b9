"""The numbers for one weight from its plan: prune (magnitude, Wanda, SparseGPT), then the
joint quantization or palettization of the kept values. Pure numpy on arrays read by the pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import input_norms
from coreai_opt.coreai_utils.numerics.kmeans import Palette, palettize
from coreai_opt.coreai_utils.numerics.prune import prune_block, prune_magnitude, prune_nm
from coreai_opt.coreai_utils.numerics.quantize import Quantized, quantize
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse
from coreai_opt.coreai_utils.numerics.sparsegpt import sparsegpt_weight
from coreai_opt.coreai_utils.numerics.wanda import wanda_block_mask, wanda_mask, wanda_nm_mask
from coreai_opt.coreai_utils.passes.options import Algorithm, SparsifyOptions
from coreai_opt.coreai_utils.passes.plan import Mode, WeightPlan

__all__ = ["Compressed", "compress_values", "prune"]


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
