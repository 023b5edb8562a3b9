"""Quantization schemes and granularities of the sibling passes (string enums, like DType)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CompressionGranularity", "QScheme"]


class QScheme(StrEnum):
    """Symmetric (zero point fixed) or asymmetric (a zero point per scale) quantization."""

    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


class CompressionGranularity(StrEnum):
    """What one scale (or look-up table) covers.

    ``per_tensor``: the whole weight; ``per_channel``: one output channel;
    ``per_block``: one output channel by ``block_size`` consecutive input channels
    (quantization); ``per_grouped_channel``: ``group_size`` consecutive output channels
    (palettization).
    """

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    PER_BLOCK = "per_block"
    PER_GROUPED_CHANNEL = "per_grouped_channel"
