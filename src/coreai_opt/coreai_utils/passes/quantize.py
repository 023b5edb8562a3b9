"""The quantize pass: validate, plan per weight (read-only), then apply (the only mutation)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.dtypes import DType, numpy_dtype
from coreai_opt.coreai_utils.ir.blockwise import emit_blockwise_chain
from coreai_opt.coreai_utils.ir.constants import read_constant
from coreai_opt.coreai_utils.ir.rewrite import replace_constant
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.numerics.blockwise import BlockQuantized, block_shape, quantize_blocks
from coreai_opt.coreai_utils.numerics.masks import all_finite
from coreai_opt.coreai_utils.passes.outcomes import (
    SparsifyResult,
    WeightOutcome,
    check_program,
    warn_weight,
)
from coreai_opt.coreai_utils.passes.quantize_options import (
    QuantizeOptions,
    validate_quantize_options,
)
from coreai_opt.coreai_utils.schemes import CompressionGranularity, QScheme

__all__ = ["QuantizePlan", "plan_quantize", "quantize_weights", "quantize_with_report"]

_PER_TENSOR = CompressionGranularity.PER_TENSOR
_PER_CHANNEL = CompressionGranularity.PER_CHANNEL
_PER_BLOCK = CompressionGranularity.PER_BLOCK


@dataclass(frozen=True)
class QuantizePlan:
    """What to do with one weight: its ``granularity`` (None: left dense, ``reason`` says
    why; a fallback to a coarser granularity is noted in ``reason`` with ``warn``)."""

    site: WeightSite
    granularity: CompressionGranularity | None
    reason: str | None = None
    warn: bool = False


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
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)
    program = coreai_program if in_place else copy.deepcopy(coreai_program)
    module = program._module._mlir_module  # noqa: SLF001
    plans = [_plan(site, options) for site in find_weights(module)]
    outcomes: list[WeightOutcome] = []
    with module.context:
        for plan in plans:
            if plan.warn:
                warn_weight(plan.site, plan.reason)
            outcome = _outcome(plan, options) if plan.granularity is None else _apply(plan, options)
            outcomes.append(outcome)
            if on_weight is not None:
                on_weight(len(outcomes), len(plans), outcome)
        module.operation.verify()
    return SparsifyResult(program, tuple(outcomes))


def plan_quantize(coreai_program: AIProgram, options: QuantizeOptions) -> list[QuantizePlan]:
    """The plan per candidate weight (read-only; no weight data)."""
    module = coreai_program._module._mlir_module  # noqa: SLF001
    return [_plan(site, options) for site in find_weights(module)]


def _plan(site: WeightSite, options: QuantizeOptions) -> QuantizePlan:
    if site.size < options.weight_num_threshold:
        threshold = options.weight_num_threshold
        reason = f"{site.size} elements, below weight_num_threshold={threshold}"
        return QuantizePlan(site, None, reason)
    wanted = options.granularity
    if wanted is _PER_BLOCK and site.in_axis is None:
        if options.dtype is DType.FP4_E2M1FN:
            reason = (
                "MXFP4 needs the weight's input channel axis, which its consumers leave unknown"
            )
            return QuantizePlan(site, None, reason, warn=True)
        coarser = _PER_CHANNEL if site.out_axis is not None else _PER_TENSOR
        reason = f"input channel axis unknown; quantized {coarser.value}"
        return QuantizePlan(site, coarser, reason, warn=True)
    if wanted is _PER_CHANNEL and site.out_axis is None:
        reason = "output channel axis unknown; quantized per_tensor"
        return QuantizePlan(site, _PER_TENSOR, reason, warn=True)
    return QuantizePlan(site, wanted)


def quantize_weight(
    weight: np.ndarray, plan: QuantizePlan, options: QuantizeOptions
) -> BlockQuantized:
    """The numbers for one weight under ``plan`` (pure numpy)."""
    site = plan.site
    granularity = plan.granularity or _PER_TENSOR
    block = block_shape(
        site.shape, granularity.value, site.out_axis, site.in_axis, options.block_size
    )
    scales = numpy_dtype(options.scale_dtype) if options.scale_dtype is not None else None
    return quantize_blocks(
        weight,
        block,
        options.dtype,
        symmetric=options.qscheme is QScheme.SYMMETRIC,
        scale_dtype=scales,
    )


def _apply(plan: QuantizePlan, options: QuantizeOptions) -> WeightOutcome:
    site = plan.site
    try:
        weight = read_constant(site.op, site.dtype)
    except ValueError as error:
        return _skip(plan, options, f"could not read the constant: {error}")
    if not all_finite(weight):
        return _skip(plan, options, "contains NaN or Inf")
    try:
        quantized = quantize_weight(weight, plan, options)
    except (ArithmeticError, MemoryError, ValueError) as error:
        return _skip(plan, options, f"could not compress: {type(error).__name__}: {error}")
    del weight
    replace_constant(site.op, emit_blockwise_chain(site.op, quantized))
    bits = 4 if options.dtype in (DType.INT4, DType.UINT4, DType.FP4_E2M1FN) else 8
    stored = -(-site.size * bits // 8) + quantized.scale.nbytes
    if quantized.zero_point is not None:
        stored += -(-quantized.zero_point.size * bits // 8)
    return _outcome(plan, options, compressed=True, bytes_after=stored)


def _skip(plan: QuantizePlan, options: QuantizeOptions, reason: str) -> WeightOutcome:
    warn_weight(plan.site, f"{reason}; left dense")
    return _outcome(QuantizePlan(plan.site, None, reason), options)


def _outcome(
    plan: QuantizePlan,
    options: QuantizeOptions,
    *,
    compressed: bool = False,
    bytes_after: int | None = None,
) -> WeightOutcome:
    site = plan.site
    before = site.size * site.dtype.itemsize
    granularity = plan.granularity.value if compressed and plan.granularity else None
    return WeightOutcome(
        name=site.name,
        id=site.id,
        path=site.path,
        source=site.source,
        shape=site.shape,
        dtype=str(site.dtype),
        consumers=site.consumers,
        kind=site.kind.value,
        mode=granularity,
        joint=options.dtype.value if compressed else None,
        reason=plan.reason,
        sparsity=None,
        bytes_before=before,
        bytes_after=before if bytes_after is None else bytes_after,
        algorithm=None,
    )
