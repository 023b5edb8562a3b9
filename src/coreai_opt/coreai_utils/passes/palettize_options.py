"""Validation of ``palettize_weights`` arguments into one immutable options record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coreai_opt.coreai_utils.arguments import ArgumentTypeError, check_int, member
from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.passes.options import (
    PALETTIZE_NBITS,
    check_threshold,
    choose_algorithm,
)
from coreai_opt.coreai_utils.schemes import CompressionGranularity

__all__ = [
    "LUT_DTYPES",
    "PALETTIZE_OVERRIDABLE",
    "PalettizeAlgorithm",
    "PalettizeOptions",
    "check_palettize_algorithm",
    "validate_palettize_options",
]

LUT_DTYPES = (DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2)


class PalettizeAlgorithm(StrEnum):
    """How the LUTs and indices are chosen: plain k-means (``kmeans``); k-means with every
    value weighted by its input channel's activation energy (``weighted_kmeans``); those
    LUTs with every index chosen by OBS rounding with error feedback (``obs``)."""

    KMEANS = "kmeans"
    WEIGHTED_KMEANS = "weighted_kmeans"
    OBS = "obs"


CALIBRATED_DEFAULT = PalettizeAlgorithm.OBS
"""The algorithm with calibration when none is named: the best measured one (see the
README's language-model and MiniLM tables)."""

PALETTIZE_OVERRIDABLE = (
    "lut_dtype",
    "n_bits",
    "granularity",
    "group_size",
    "cluster_dim",
    "enable_per_channel_scale",
    "weight_num_threshold",
    "algorithm",
)
"""The options of ``palettize_weights`` an override may set."""


@dataclass(frozen=True)
class PalettizeOptions:
    """Validated configuration of :func:`palettize_weights`."""

    lut_dtype: DType | None
    n_bits: int
    granularity: CompressionGranularity
    group_size: int
    cluster_dim: int
    enable_per_channel_scale: bool
    weight_num_threshold: int
    algorithm: PalettizeAlgorithm = PalettizeAlgorithm.KMEANS


def validate_palettize_options(
    *,
    lut_dtype: object,
    n_bits: object,
    granularity: object,
    group_size: object,
    cluster_dim: object,
    enable_per_channel_scale: object,
    weight_num_threshold: object,
    algorithm: object = None,
    calibrated: bool = False,
) -> PalettizeOptions:
    """Check every argument; raise ``ValueError`` (``TypeError`` for wrong types) naming it."""
    lut = None
    if lut_dtype is not None:
        lut = member(DType, "lut_dtype", lut_dtype)
        if lut not in LUT_DTYPES:
            allowed = ", ".join(f"DType.{d.name}" for d in LUT_DTYPES)
            msg = f"lut_dtype must be None or one of {allowed}; got {lut_dtype!r}"
            raise ValueError(msg)
    bits = check_int("n_bits", n_bits, 1, f"one of {set(PALETTIZE_NBITS)}")
    if bits not in PALETTIZE_NBITS:
        msg = f"n_bits must be one of {set(PALETTIZE_NBITS)}, got {n_bits!r}"
        raise ValueError(msg)
    grain = member(CompressionGranularity, "granularity", granularity)
    if grain is CompressionGranularity.PER_BLOCK:
        msg = (
            "granularity=per_block is for quantize_weights; palettize_weights takes "
            "per_tensor, per_channel or per_grouped_channel"
        )
        raise ValueError(msg)
    if not isinstance(enable_per_channel_scale, bool):
        msg = f"enable_per_channel_scale must be a bool, got {enable_per_channel_scale!r}"
        raise ArgumentTypeError(msg)
    dims = check_int("cluster_dim", cluster_dim, 1, "a positive int")
    if dims > 1 and enable_per_channel_scale:
        msg = f"enable_per_channel_scale works with scalar palettes only, not cluster_dim={dims}"
        raise ValueError(msg)
    return PalettizeOptions(
        lut_dtype=lut,
        n_bits=bits,
        granularity=grain,
        group_size=check_int("group_size", group_size, 1, "a positive int"),
        cluster_dim=dims,
        enable_per_channel_scale=enable_per_channel_scale,
        weight_num_threshold=check_threshold(weight_num_threshold),
        algorithm=check_palettize_algorithm(algorithm, calibrated=calibrated),
    )


def check_palettize_algorithm(value: object, *, calibrated: bool) -> PalettizeAlgorithm:
    """The algorithm: ``value`` checked, None resolved (:data:`CALIBRATED_DEFAULT` when
    ``calibrated``)."""
    return choose_algorithm(
        PalettizeAlgorithm,
        value,
        calibrated=calibrated,
        plain=PalettizeAlgorithm.KMEANS,
        calibrated_default=CALIBRATED_DEFAULT,
    )
