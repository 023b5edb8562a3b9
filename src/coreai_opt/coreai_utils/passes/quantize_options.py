"""Validation of ``quantize_weights`` arguments into one immutable options record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coreai_opt.coreai_utils.arguments import check_int, member
from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.passes.options import check_threshold, choose_algorithm
from coreai_opt.coreai_utils.schemes import CompressionGranularity, QScheme

__all__ = [
    "QUANTIZE_CLEARS",
    "QUANTIZE_OVERRIDABLE",
    "QUANTIZE_WEIGHT_DTYPES",
    "QuantizeAlgorithm",
    "QuantizeOptions",
    "check_quantize_algorithm",
    "validate_quantize_options",
]


class QuantizeAlgorithm(StrEnum):
    """How the codes are chosen: each value rounded to the nearest code (``rtn``), or column
    by column with the error pushed onto the columns not yet rounded (``gptq``)."""

    RTN = "rtn"
    GPTQ = "gptq"


QUANTIZE_OVERRIDABLE = (
    "dtype",
    "qscheme",
    "granularity",
    "block_size",
    "scale_dtype",
    "weight_num_threshold",
    "algorithm",
)
"""The options of ``quantize_weights`` an override may set."""
QUANTIZE_CLEARS = {"dtype": ("scale_dtype",)}
"""An override's ``dtype`` clears ``scale_dtype`` unless it sets that too (an fp8 call's
power-of-two scales do not apply to an int8 override)."""

QUANTIZE_WEIGHT_DTYPES = (
    DType.INT4,
    DType.UINT4,
    DType.INT8,
    DType.UINT8,
    DType.FP8_E4M3FN,
    DType.FP8_E5M2,
    DType.FP4_E2M1FN,
)
_FLOATS = (DType.FP8_E4M3FN, DType.FP8_E5M2, DType.FP4_E2M1FN)
MX_BLOCK = 32


@dataclass(frozen=True)
class QuantizeOptions:
    """Validated configuration of :func:`quantize_weights`. ``scale_dtype`` None means the
    weight's own float type (FP4 always has E8M0 scales)."""

    dtype: DType
    qscheme: QScheme
    granularity: CompressionGranularity
    block_size: int
    scale_dtype: DType | None
    weight_num_threshold: int
    algorithm: QuantizeAlgorithm = QuantizeAlgorithm.RTN


def validate_quantize_options(
    *,
    dtype: object,
    qscheme: object,
    granularity: object,
    block_size: object,
    scale_dtype: object,
    weight_num_threshold: object,
    algorithm: object = None,
    calibrated: bool = False,
) -> QuantizeOptions:
    """Check every argument; raise ``ValueError`` (``TypeError`` for wrong types) naming it."""
    target = member(DType, "dtype", dtype)
    if target not in QUANTIZE_WEIGHT_DTYPES:
        allowed = ", ".join(f"DType.{d.name}" for d in QUANTIZE_WEIGHT_DTYPES)
        msg = f"dtype must be one of {allowed}; got {dtype!r}"
        raise ValueError(msg)
    scheme = member(QScheme, "qscheme", qscheme)
    grain = member(CompressionGranularity, "granularity", granularity)
    if grain is CompressionGranularity.PER_GROUPED_CHANNEL:
        msg = (
            "granularity=per_grouped_channel is for palettize_weights; quantize_weights takes "
            "per_tensor, per_channel or per_block"
        )
        raise ValueError(msg)
    block = check_int("block_size", block_size, 1, "a positive int")
    floating = target in _FLOATS
    if floating and scheme is QScheme.ASYMMETRIC:
        msg = f"qscheme=asymmetric needs an integer dtype; {target.value} is symmetric only"
        raise ValueError(msg)
    scales: DType | None = None
    if scale_dtype is not None:
        scales = member(DType, "scale_dtype", scale_dtype)
        if not floating:
            msg = (
                f"scale_dtype is for floating-point dtypes; {target.value} scales use the "
                f"weight's float type (got scale_dtype={scale_dtype!r})"
            )
            raise ValueError(msg)
        if scales is not DType.FP8_E8M0FNU:
            msg = f"scale_dtype must be None or DType.FP8_E8M0FNU; got {scale_dtype!r}"
            raise ValueError(msg)
    if target is DType.FP4_E2M1FN:
        if grain is not CompressionGranularity.PER_BLOCK or block != MX_BLOCK:
            msg = (
                "dtype=fp4_e2m1fn (MXFP4) needs granularity=per_block with block_size=32; "
                f"got granularity={grain.value}, block_size={block}"
            )
            raise ValueError(msg)
        scales = DType.FP8_E8M0FNU
    return QuantizeOptions(
        dtype=target,
        qscheme=scheme,
        granularity=grain,
        block_size=block,
        scale_dtype=scales,
        weight_num_threshold=check_threshold(weight_num_threshold),
        algorithm=check_quantize_algorithm(algorithm, calibrated=calibrated),
    )


def check_quantize_algorithm(value: object, *, calibrated: bool) -> QuantizeAlgorithm:
    """The algorithm: ``value`` checked, None resolved (gptq when ``calibrated``)."""
    return choose_algorithm(
        QuantizeAlgorithm,
        value,
        calibrated=calibrated,
        plain=QuantizeAlgorithm.RTN,
        calibrated_default=QuantizeAlgorithm.GPTQ,
    )
