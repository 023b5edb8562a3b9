"""Wanda pruning (Sun et al. 2023): score ``|W_ij| * ||X_j||_2``, pure numpy.

``norms`` is broadcastable to the weight (see :func:`activations.input_norms`). Every
function returns ``keep`` (bool, shaped like the weight). Scores are compared as float64;
ties are broken by index, lower index pruned first, as in :mod:`masks`.
"""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.masks import block_mask, nm_mask, prune_count

__all__ = ["wanda_block_mask", "wanda_mask", "wanda_nm_mask", "wanda_scores"]


def wanda_scores(weight: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``|w| * norm`` as float64, shaped like ``weight``."""
    scores: np.ndarray = np.abs(weight.astype(np.float64)) * norms
    return scores


def wanda_mask(weight: np.ndarray, norms: np.ndarray, sparsity: float, out_axis: int) -> np.ndarray:
    """Unstructured Wanda: in each output channel (the slice at one index of ``out_axis``)
    the ``floor(slice_size * sparsity)`` lowest-score elements are dropped, ties by flat
    index within the slice. The weight loses ``channels * floor(slice_size * sparsity)``
    elements in all (more where it already has zeros beyond that)."""
    scores = np.moveaxis(wanda_scores(weight, norms), out_axis, 0)
    rows = scores.reshape(scores.shape[0], -1)
    count = prune_count(rows.shape[1], sparsity)
    order = np.argsort(rows, axis=1, kind="stable")
    keep = np.ones(rows.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :count], values=False, axis=1)
    return np.moveaxis(keep.reshape(scores.shape), 0, out_axis)


def wanda_nm_mask(weight: np.ndarray, norms: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """N:M Wanda: in each group of ``m`` consecutive input channels (``axis``) the ``n``
    lowest scores are dropped (ties by index; a trailing partial group as in
    :func:`masks.nm_mask`)."""
    return nm_mask(wanda_scores(weight, norms), n, m, axis)


def wanda_block_mask(
    weight: np.ndarray, norms: np.ndarray, sparsity: float, block_size: int, axis: int
) -> np.ndarray:
    """Block Wanda: blocks of ``block_size`` output channels (``axis``) scored by the L2
    norm of their scores; the lowest ``floor(blocks * sparsity)`` are dropped whole."""
    return block_mask(wanda_scores(weight, norms), sparsity, block_size, axis)
