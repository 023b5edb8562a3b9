"""The quantize pass: validate, plan per weight (read-only), then apply (the only mutation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.dtypes import DType, numpy_dtype
from coreai_opt.coreai_utils.ir.blockwise import emit_blockwise_chain
from coreai_opt.coreai_utils.ir.weights import WeightSite
from coreai_opt.coreai_utils.numerics.blockwise import BlockQuantized, block_shape, quantize_blocks
from coreai_opt.coreai_utils.passes.outcomes import SparsifyResult, WeightOutcome, check_program
from coreai_opt.coreai_utils.passes.quantize_options import (
    QuantizeOptions,
    validate_quantize_options,
)
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded, run_weight_pass
from coreai_opt.coreai_utils.schemes import CompressionGranularity, QScheme

__all__ = ["decide_quantize", "quantize_weight", "quantize_weights", "quantize_with_report"]

_PER_TENSOR = CompressionGranularity.PER_TENSOR
_PER_CHANNEL = CompressionGranularity.PER_CHANNEL
_PER_BLOCK = CompressionGranularity.PER_BLOCK


def quantize_weights(
    coreai_program: AIProgram,
    dtype: DType,
    qscheme: QScheme = QScheme.SYMMETRIC,
    granularity: CompressionGranularity = CompressionGranularity.PER_CHANNEL,
    block_size: int = 32,
    weight_num_threshold: int = 1024,
    scale_dtype: DType | None = None,
    in_place: bool = False,  # noqa: FBT001, FBT002
) -> AIProgram:
    """Quantize the weights of a Core AI program with ``blockwise_shift_scale``.

    The candidates, ``weight_num_threshold``, ``in_place`` and the warnings are those of
    :func:`sparsify_weights`. Each compressed weight is stored as codes of ``dtype`` plus a
    scale (and, asymmetric, a zero point) per block, decompressed by
    ``blockwise_shift_scale``; the runtime rebuilds ``scale * (q - zero_point)`` rounded
    once to the weight's dtype.

    Granularity (the output/input channel axes as for sparsify): ``per_tensor`` one scale;
    ``per_channel`` one per output channel; ``per_block`` one per output channel and per
    ``block_size`` consecutive input channels (a partial last block is allowed: the weight is
    split there and rejoined with ``concat``). A weight whose axes the consumers do not
    determine falls back to a coarser granularity (per_block -> per_channel -> per_tensor)
    with a warning; MXFP4 needs the input axis and skips such weights with a warning.

    Numerics (``numerics/blockwise.py``): integers symmetric ``scale = absmax / qmax``
    (signed codes in ``[-qmax, qmax]``; unsigned around the zero point ``2**(bits-1)``) or
    asymmetric over ``[min(w, 0), max(w, 0)]`` with a zero point per scale; codes are round
    half to even. fp8: the scale per block is searched over one binade for the least squared
    error; with ``scale_dtype=FP8_E8M0FNU`` power-of-two scales. ``FP4_E2M1FN`` is MXFP4:
    per_block with block_size 32 and E8M0 scales (its default scale type). Scales are stored
    in the weight's float type unless ``scale_dtype`` says otherwise.

    Raises:
        TypeError: ``coreai_program`` is not an ``AIProgram``; an argument has the wrong type.
        ValueError: ``dtype`` is not INT4, UINT4, INT8, UINT8, FP8_E4M3FN, FP8_E5M2 or
            FP4_E2M1FN; ``qscheme=asymmetric`` with a float dtype; ``granularity`` is
            per_grouped_channel; ``scale_dtype`` set for an integer dtype or other than
            FP8_E8M0FNU; FP4 without per_block and block_size 32; ``block_size`` not a
            positive int; ``weight_num_threshold`` negative; ``in_place`` not a bool.
    """
    return quantize_with_report(
        coreai_program,
        dtype,
        qscheme,
        granularity,
        block_size,
        weight_num_threshold,
        scale_dtype,
        in_place,
    ).program


def quantize_with_report(
    coreai_program: AIProgram,
    dtype: DType,
    qscheme: QScheme = QScheme.SYMMETRIC,
    granularity: CompressionGranularity = CompressionGranularity.PER_CHANNEL,
    block_size: int = 32,
    weight_num_threshold: int = 1024,
    scale_dtype: DType | None = None,
    in_place: bool = False,  # noqa: FBT001, FBT002
    *,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """:func:`quantize_weights`, also returning one outcome per candidate weight (``mode`` is
    the granularity used, ``joint`` the storage dtype)."""
    check_program(coreai_program)
    options = validate_quantize_options(
        dtype=dtype,
        qscheme=qscheme,
        granularity=granularity,
        block_size=block_size,
        scale_dtype=scale_dtype,
        weight_num_threshold=weight_num_threshold,
    )
    return run_weight_pass(
        coreai_program,
        in_place=in_place,
        threshold=options.weight_num_threshold,
        decide=lambda site: decide_quantize(site, options),
        encode=lambda weight, decision: _encode(weight, decision, options),
        on_weight=on_weight,
    )


def decide_quantize(site: WeightSite, options: QuantizeOptions) -> Decision:
    """The granularity for ``site`` (coarser when its axes are unknown), read-only."""
    wanted = options.granularity
    if wanted is _PER_BLOCK and site.in_axis is None:
        if options.dtype is DType.FP4_E2M1FN:
            reason = "MXFP4 needs the input channel axis; the consumers leave it unknown"
            return Decision(site, None, reason, warn=True)
        coarser = _PER_CHANNEL if site.out_axis is not None else _PER_TENSOR
        reason = f"input channel axis unknown; quantized {coarser.value}"
        return Decision(site, coarser.value, reason, warn=True)
    if wanted is _PER_CHANNEL and site.out_axis is None:
        reason = "output channel axis unknown; quantized per_tensor"
        return Decision(site, _PER_TENSOR.value, reason, warn=True)
    return Decision(site, wanted.value)


def quantize_weight(
    weight: np.ndarray, site: WeightSite, granularity: str, options: QuantizeOptions
) -> BlockQuantized:
    """The numbers for one weight at ``granularity`` (pure numpy)."""
    block = block_shape(site.shape, granularity, site.out_axis, site.in_axis, options.block_size)
    scales = numpy_dtype(options.scale_dtype) if options.scale_dtype is not None else None
    return quantize_blocks(
        weight,
        block,
        options.dtype,
        symmetric=options.qscheme is QScheme.SYMMETRIC,
        scale_dtype=scales,
    )


def _encode(weight: np.ndarray, decision: Decision, options: QuantizeOptions) -> Encoded:
    quantized = quantize_weight(weight, decision.site, decision.mode or _PER_TENSOR.value, options)
    return Encoded(
        emit=lambda op: emit_blockwise_chain(op, quantized),
        joint=options.dtype.value,
        bytes_after=quantized.nbytes,
    )
