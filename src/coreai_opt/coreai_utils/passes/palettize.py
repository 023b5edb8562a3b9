"""The palettize pass: look-up tables for dense weights, on the shared weight-pass skeleton."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.ir.palette import emit_lut_chain
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.numerics.lut import GroupedPalette, palettize_groups
from coreai_opt.coreai_utils.passes.outcomes import SparsifyResult, WeightOutcome, check_program
from coreai_opt.coreai_utils.passes.palettize_options import (
    PalettizeOptions,
    validate_palettize_options,
)
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded, run_weight_pass
from coreai_opt.coreai_utils.schemes import CompressionGranularity

__all__ = ["decide_palettize", "palettize_weight", "palettize_weights", "palettize_with_report"]

_PER_TENSOR = CompressionGranularity.PER_TENSOR


def palettize_weights(
    coreai_program: AIProgram,
    lut_dtype: DType | None = None,
    n_bits: int = 4,
    granularity: CompressionGranularity = CompressionGranularity.PER_TENSOR,
    group_size: int = 32,
    cluster_dim: int = 1,
    enable_per_channel_scale: bool = False,  # noqa: FBT001, FBT002
    weight_num_threshold: int = 1024,
    in_place: bool = False,  # noqa: FBT001, FBT002
) -> AIProgram:
    """Palettize the weights of a Core AI program with ``lut_to_dense``.

    The candidates, ``weight_num_threshold``, ``in_place`` and the warnings are those of
    :func:`sparsify_weights`. Each compressed weight is stored as ``ui<n_bits>`` indices
    into look-up tables of ``2**n_bits`` entries (in the weight's float type, or quantized
    to ``lut_dtype``), decompressed by ``lut_to_dense``.

    * ``granularity``: ``per_tensor`` one LUT; ``per_channel`` one per output channel;
      ``per_grouped_channel`` one per ``group_size`` consecutive output channels (a partial
      last group is allowed). A weight whose output axis is unknown gets one LUT, with a
      warning.
    * ``cluster_dim > 1``: vector palettization, each LUT entry a vector of ``cluster_dim``
      consecutive values along the input axis (k-means in ``cluster_dim`` dimensions: seeded
      k-means++ and Lloyd). A weight whose input axis is unknown or not divisible by
      ``cluster_dim`` is skipped with a warning.
    * ``enable_per_channel_scale``: each output channel is divided by its largest magnitude
      before clustering and rescaled by the decoder (scalar palettes only).
    * ``lut_dtype`` (``INT8``, ``UINT8``, ``FP8_E4M3FN``, ``FP8_E5M2``): each LUT is quantized
      symmetrically with one scale (unsigned: zero point 128), and indices point to the
      nearest entry of the LUT as decoded.
    * Scalar LUTs are the exact 1-D k-means (Lloyd to convergence from quantile starts);
      lossless when a weight (or group) has at most ``2**n_bits`` distinct values.

    Raises:
        TypeError: ``coreai_program`` is not an ``AIProgram``; an argument has the wrong type.
        ValueError: ``lut_dtype`` not None/INT8/UINT8/FP8_E4M3FN/FP8_E5M2; ``n_bits`` not in
            {1, 2, 3, 4, 6, 8}; ``granularity`` per_block; ``group_size`` or ``cluster_dim``
            not a positive int; ``enable_per_channel_scale`` with ``cluster_dim > 1``;
            ``weight_num_threshold`` negative.
    """
    return palettize_with_report(
        coreai_program,
        lut_dtype,
        n_bits,
        granularity,
        group_size,
        cluster_dim,
        enable_per_channel_scale,
        weight_num_threshold,
        in_place,
    ).program


def palettize_with_report(
    coreai_program: AIProgram,
    lut_dtype: DType | None = None,
    n_bits: int = 4,
    granularity: CompressionGranularity = CompressionGranularity.PER_TENSOR,
    group_size: int = 32,
    cluster_dim: int = 1,
    enable_per_channel_scale: bool = False,  # noqa: FBT001, FBT002
    weight_num_threshold: int = 1024,
    in_place: bool = False,  # noqa: FBT001, FBT002
    *,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """:func:`palettize_weights`, also returning one outcome per candidate weight (``mode``
    is the granularity used, ``joint`` names the palette)."""
    check_program(coreai_program)
    options = validate_palettize_options(
        lut_dtype=lut_dtype,
        n_bits=n_bits,
        granularity=granularity,
        group_size=group_size,
        cluster_dim=cluster_dim,
        enable_per_channel_scale=enable_per_channel_scale,
        weight_num_threshold=weight_num_threshold,
    )
    return run_weight_pass(
        coreai_program,
        in_place=in_place,
        threshold=options.weight_num_threshold,
        decide=lambda site: decide_palettize(site, options),
        encode=lambda weight, decision: _encode(weight, decision, options),
        on_weight=on_weight,
    )


def decide_palettize(site: WeightSite, options: PalettizeOptions) -> Decision:
    """The granularity for ``site``, or why it is skipped (read-only)."""
    wanted = options.granularity
    if options.cluster_dim > 1:
        if site.in_axis is None:
            reason = "vector palettization needs the input channel axis, which is unknown"
            return Decision(site, None, reason, warn=True)
        length = site.shape[site.in_axis]
        if length % options.cluster_dim:
            dims = options.cluster_dim
            reason = f"{length} input channels are not divisible by cluster_dim={dims}"
            return Decision(site, None, reason, warn=True)
    if site.out_axis is None:
        if options.enable_per_channel_scale:
            reason = "per-channel scale needs the output channel axis, which is unknown"
            return Decision(site, None, reason, warn=True)
        if wanted is not _PER_TENSOR:
            reason = "output channel axis unknown; palettized per_tensor"
            return Decision(site, _PER_TENSOR.value, reason, warn=True)
    return Decision(site, wanted.value)


def palettize_weight(
    weight: np.ndarray, site: WeightSite, granularity: str, options: PalettizeOptions
) -> GroupedPalette:
    """The numbers for one weight at ``granularity`` (pure numpy)."""
    rank = weight.ndim
    out_axis = site.out_axis if site.out_axis is not None else 0
    fallback = rank - 1 if out_axis != rank - 1 else 0
    in_axis = site.in_axis if site.in_axis is not None else fallback
    channels = weight.shape[out_axis]
    group = {"per_tensor": channels, "per_channel": 1}.get(granularity, options.group_size)
    return palettize_groups(
        weight,
        options.n_bits,
        out_axis=out_axis,
        in_axis=in_axis,
        group_size=group,
        cluster_dim=options.cluster_dim,
        per_channel_scale=options.enable_per_channel_scale,
        lut_dtype=options.lut_dtype,
    )


def _encode(weight: np.ndarray, decision: Decision, options: PalettizeOptions) -> Encoded:
    site = decision.site
    palette = palettize_weight(weight, site, decision.mode or _PER_TENSOR.value, options)
    joint = f"palettize{options.n_bits}"
    if options.cluster_dim > 1:
        joint += f"x{options.cluster_dim}"
    if options.lut_dtype is not None:
        joint += f" ({options.lut_dtype.value} LUT)"
    return Encoded(
        emit=lambda op: emit_lut_chain(op, palette), joint=joint, bytes_after=palette.nbytes
    )
