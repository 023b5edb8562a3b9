"""Padding kept out of the statistics: which activation rows map onto a padding mask.

Core AI programs have static shapes, so text is padded; the padded positions' activations
would enter ``X^T X`` and the Wanda norms. A linear tap's rows are its activation's vectors
along the contraction axis, in row-major order of the other axes; when those axes have the
mask's shape (size-1 axes aside, which do not change the order), row ``i`` is position
``i`` of the mask and is kept only where the mask is non-zero. Convolution patches and
transposed-convolution inputs do not map onto positions and keep every row.
"""

from __future__ import annotations

from coreai_opt.coreai_utils.ir.capture import Tap
from coreai_opt.coreai_utils.ir.constants import tensor_type
from coreai_opt.coreai_utils.numerics.activations import StatsLayout

__all__ = ["unmappable"]


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def unmappable(tap: Tap, mask_shape: tuple[int, ...]) -> str | None:
    """Why the rows of ``tap`` do not map onto a mask of ``mask_shape``; None when row
    ``i`` is mask position ``i``."""
    if tap.layout is not StatsLayout.LINEAR:
        return "a convolution's input patches do not map onto the mask's positions"
    ranked = tensor_type(tap.value.type)
    if ranked is None:
        return "its activation has no static shape"
    shape = tuple(int(n) for n in ranked.shape)
    rows = shape[: tap.axis] + shape[tap.axis + 1 :]
    if _squeezed(rows) != _squeezed(mask_shape):
        return (
            f"its activation {list(shape)} (rows {list(rows)}) does not map onto the mask's "
            f"shape {list(mask_shape)}"
        )
    return None
