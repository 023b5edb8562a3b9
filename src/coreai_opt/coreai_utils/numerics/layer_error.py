"""What a change ``delta`` to a weight does to its layer's output, from activation statistics.

For a layer ``y = W x`` the output error of ``W + delta`` on the calibration inputs is
``sum over rows ||delta x||^2 = trace(delta X^T X delta^T)``; divided by the row count it is
the mean squared output error per input row, the quantity SparseGPT, GPTQ and OBS rounding
each minimise for one layer. Pure numpy; the statistics are those of
:mod:`~coreai_opt.coreai_utils.numerics.activations`.
"""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout

__all__ = ["held_out_error", "lookup_error", "output_error", "unit_input_error"]


def output_error(delta: np.ndarray, stats: ActivationStats, out_axis: int, in_axis: int) -> float:
    """Mean over the calibration rows of ``||delta x||^2`` (``>= 0``).

    ``linear``: a rank-2 weight with output axis ``out_axis``; ``conv``: ``[C_out, C_in/g,
    k...]``, each group of output channels against its group's ``X^T X``; without ``X^T X``
    (``channels`` layout, or too many columns to keep one) the diagonal only:
    ``sum delta_ij^2 * E[x_j^2]``, which drops the correlations between inputs.
    """
    return _error(delta, stats, out_axis, in_axis, held_out=False)


def held_out_error(delta: np.ndarray, stats: ActivationStats, out_axis: int, in_axis: int) -> float:
    """:func:`output_error` as expected on inputs the rows do not include: ``X^T X`` shrunk
    towards its diagonal by ``d / (d + rows)`` (``d`` its columns).

    A change fitted to ``X^T X`` (GPTQ, SparseGPT, OBS rounding) can put its error in the
    directions the rows do not span; measured on those rows it then looks far smaller than
    it is on new inputs. With few rows for many inputs (a classifier after global pooling
    sees one row per image) the rows' correlations are mostly noise, so the estimate leans
    on the per-input energies, which the rows do pin down; with many rows it is the plain
    error. Without ``X^T X`` it is :func:`output_error` (already the diagonal).
    """
    return _error(delta, stats, out_axis, in_axis, held_out=True)


def _error(
    delta: np.ndarray, stats: ActivationStats, out_axis: int, in_axis: int, *, held_out: bool
) -> float:
    stats.flush()
    rows = max(stats.count, 1)
    if stats.gram is None:
        energy = stats.sq_sum.reshape(-1) / rows
        if energy.size != delta.shape[in_axis]:  # grouped: one mean energy for all inputs
            energy = np.full(delta.shape[in_axis], energy.mean())
        view = [1] * delta.ndim
        view[in_axis] = delta.shape[in_axis]
        weighted = delta.astype(np.float64) ** 2 * energy.reshape(view)
        return float(weighted.sum())
    if stats.layout is StatsLayout.CONV:
        matrix = delta.reshape(delta.shape[0], -1)
    else:
        matrix = np.moveaxis(delta, (out_axis, in_axis), (0, 1)).reshape(delta.shape[out_axis], -1)
    matrix = matrix.astype(np.float32, copy=False)
    band = matrix.shape[0] // stats.groups
    total = 0.0
    for group in range(stats.groups):
        part = matrix[group * band : (group + 1) * band]
        gram = (stats.gram[group] / rows).astype(np.float32)
        full = float(np.einsum("rc,rc->", part @ gram, part, dtype=np.float64))
        if held_out:
            shrink = gram.shape[0] / (gram.shape[0] + rows)
            diagonal = float(np.einsum("rc,c->", part * part, np.diag(gram), dtype=np.float64))
            full = (1.0 - shrink) * full + shrink * diagonal
        total += full
    return max(total, 0.0)


def lookup_error(delta: np.ndarray, rows_axis: int = 0) -> float:
    """Mean over the table's rows of ``||delta_row||^2``: the squared error of one looked-up
    embedding, every row equally likely (a lookup is a product with a one-hot input)."""
    flat = delta.reshape(-1)
    squares = float(np.vdot(flat, flat))
    return squares / max(int(delta.shape[rows_axis]), 1)


def unit_input_error(delta: np.ndarray) -> float:
    """``||delta||_F^2``: the output error for inputs of unit variance, uncorrelated (the
    data-free stand-in when no calibration says what the inputs are)."""
    flat = delta.reshape(-1)
    return float(np.vdot(flat, flat))
