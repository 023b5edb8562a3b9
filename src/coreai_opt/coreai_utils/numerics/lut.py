"""Palettization of dense weights: look-up tables per tensor, channel or group, pure numpy.

A weight is split into LUT groups along its output axis (``block``: one group is the whole
tensor, one output channel, or ``group_size`` consecutive output channels; a partial last
group allowed). Each group gets a LUT of ``2**nbits`` entries, each entry a vector of
``cluster_dim`` consecutive values along the input axis (scalars when 1), and every element
(vector) its nearest entry's index.

* scalar LUTs: the 1-D k-means of :func:`kmeans.palettize_rows`, all groups in one batch
  (binned Lloyd from cube-root-density starts; exact Lloyd on the distinct values for
  groups it cannot bin finely enough, so lossless with at most ``2**nbits`` distinct
  values), entries rounded to the weight's dtype.
* vector LUTs: k-means in ``cluster_dim`` dimensions: k-means++ seeding (seed 0) and Lloyd
  (float32 distances; until stable, at most 100 iterations) on a sample of at most 2**16
  vectors per group; indices are the nearest entries of the LUT as rounded to the weight
  dtype, by exact float64 distances (ties: the lower index).
* per-channel scale: each output channel is divided by its largest magnitude before
  clustering and multiplied back by the decoder (scalar LUTs only).
* LUT quantization (``lut_dtype``): each LUT is quantized symmetrically with one scale
  (:func:`blockwise.quantize_blocks`), and indices are assigned to the nearest entries of
  the LUT as the runtime decodes it.

:meth:`GroupedPalette.decode` is the runtime's arithmetic: the LUT is dequantized (one
rounding to the weight dtype), looked up, then scaled per channel (one rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics.blockwise import BlockQuantized, quantize_blocks
from coreai_opt.coreai_utils.numerics.kmeans import nearest_sorted, palettize_rows
from coreai_opt.coreai_utils.numerics.kmeans.weighted import weighted_rows
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError, all_finite, check_finite
from coreai_opt.coreai_utils.numerics.parallel import parallel_map, row_absmax, workers

__all__ = ["GroupedPalette", "kmeans_vectors", "palettize_groups"]

_SAMPLE = 1 << 16
_MAX_ITERATIONS = 100  # vector Lloyd on the sample: within 0.1 % of converged by then


@dataclass(frozen=True)
class GroupedPalette:
    """``indices`` (uint8; the weight's shape, its ``axis`` divided by ``cluster_dim``) into
    ``lut`` (``[groups, 2**nbits, cluster_dim]`` in the weight dtype, or the LUT's codes with
    ``lut_quantized``); ``channel_scale`` (``[C_out]``) or None. Groups run along ``axis``
    0 of the moved weight: ``group_size`` output channels each (the last may be partial)."""

    indices: np.ndarray
    lut: np.ndarray
    lut_quantized: BlockQuantized | None
    channel_scale: np.ndarray | None
    nbits: int
    cluster_dim: int
    group_size: int
    out_axis: int
    in_axis: int

    @property
    def nbytes(self) -> int:
        """Bytes stored: packed indices, the LUTs (their codes and scales when quantized) and
        the channel scales."""
        stored = -(-self.indices.size * self.nbits // 8) + self.lut.nbytes
        if self.lut_quantized is not None:
            stored += self.lut_quantized.scale.nbytes
        if self.channel_scale is not None:
            stored += self.channel_scale.nbytes
        return stored

    def lut_values(self, out: np.dtype) -> np.ndarray:
        """The LUT as the runtime holds it after dequantizing (``[groups, P, V]``)."""
        if self.lut_quantized is None:
            return self.lut
        return self.lut_quantized.dequantize(out)

    def decode(self, out: np.dtype) -> np.ndarray:
        """The dense weight as the runtime rebuilds it."""
        lut = self.lut_values(out)
        moved = np.moveaxis(self.indices, (self.out_axis, self.in_axis), (0, -1))
        channels = moved.shape[0]
        group_of = np.arange(channels) // self.group_size
        shape = moved.shape
        flat = moved.reshape(channels, -1)
        values = lut[group_of[:, None], flat]  # [C, n, V]
        dense = values.reshape(*shape[:-1], shape[-1] * self.cluster_dim)
        if self.channel_scale is not None:
            scale = self.channel_scale.astype(np.float32).reshape(-1, *([1] * (dense.ndim - 1)))
            dense = (dense.astype(np.float32) * scale).astype(out)
        result: np.ndarray = np.moveaxis(dense, (0, -1), (self.out_axis, self.in_axis))
        return np.ascontiguousarray(result)


def _scalar_luts(
    flat: np.ndarray, nbits: int, group_size: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(lut [groups, 2**nbits, 1], indices [C, n])`` for the groups of ``group_size`` rows
    of ``flat`` (``[C, n]``; the last group may be partial), by
    :func:`kmeans.palettize_rows` (the whole groups in one batch); with ``weights`` (``[C,
    n]``) refined by :func:`kmeans.weighted.weighted_rows` from there."""
    channels = flat.shape[0]
    whole = channels // group_size * group_size
    luts, indices = [], []
    for rows, size in ((slice(0, whole), group_size), (slice(whole, channels), channels - whole)):
        part = flat[rows]
        if part.shape[0]:
            grouped = part.reshape(part.shape[0] // size, -1)
            lut, codes = palettize_rows(grouped, nbits)
            if weights is not None:
                lut, codes = weighted_rows(
                    grouped, weights[rows].reshape(grouped.shape), nbits, lut
                )
            luts.append(lut[:, :, None])
            indices.append(codes.reshape(part.shape))
    if len(luts) == 1:
        return luts[0], indices[0]
    return np.concatenate(luts), np.concatenate(indices)


def _nearest_vectors(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each point (ties: the lower index), in chunks on
    the thread pool."""
    out = np.empty(points.shape[0], dtype=np.intp)
    step = max(1, (1 << 20) // max(centroids.shape[0], 1))

    def chunk(start: int) -> None:
        part = points[start : start + step]
        distance = np.zeros((part.shape[0], centroids.shape[0]))
        for d in range(points.shape[1]):
            distance += (part[:, d : d + 1] - centroids[None, :, d]) ** 2
        out[start : start + step] = np.argmin(distance, axis=1)

    parallel_map(chunk, range(0, points.shape[0], step))
    return out


def _lloyd_step(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, means)``: each of ``points`` (float32 ``[n, V]``) labelled with its
    nearest centroid by float32 ``|c|^2 - 2 x.c`` (exact enough to iterate on; ties: the
    lower index), and the mean of each cluster (float64; an empty cluster keeps its
    centroid); in chunks on the thread pool."""
    k, dims = centroids.shape
    cast = centroids.astype(np.float32)
    norms = np.einsum("ij,ij->i", cast, cast)
    twice = (2 * cast).T
    labels = np.empty(points.shape[0], dtype=np.intp)
    step = max(1 << 10, min((1 << 20) // k, -(-points.shape[0] // workers())))

    def chunk(start: int) -> tuple[np.ndarray, np.ndarray]:
        part = points[start : start + step]
        distance = norms - part @ twice
        mine = np.argmin(distance, axis=1)
        labels[start : start + step] = mine
        counts = np.bincount(mine, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(mine, weights=part[:, d], minlength=k) for d in range(dims)])
        return counts, sums

    parts = parallel_map(chunk, range(0, points.shape[0], step))
    counts = np.sum([p[0] for p in parts], axis=0)
    sums = np.sum([p[1] for p in parts], axis=0).T
    filled = counts > 0
    means = centroids.astype(np.float64)
    means[filled] = sums[filled] / counts[filled, None]
    return labels, means


def _lloyd(points: np.ndarray, centroids: np.ndarray, iterations: int) -> np.ndarray:
    """Lloyd iterations on float32 ``points`` (until the assignment is stable, at most
    ``iterations``); an empty cluster keeps its centroid."""
    labels: np.ndarray | None = None
    for _ in range(iterations):
        new, means = _lloyd_step(points, centroids)
        if labels is not None and np.array_equal(new, labels):
            break
        labels, centroids = new, means
    return centroids


def kmeans_vectors(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` centroids (float64 ``[k, dims]``) of float ``points`` ``[n, dims]``: k-means++
    seeding (float64) and Lloyd (float32 distances on the points scaled by a power of two
    to magnitudes near 1, at most 100 iterations) on a sample of at most 2**16 points. With
    at most ``k`` distinct points, those points (padded by repeating the last)."""
    data = np.asarray(points)
    # few distinct vectors: exactly those (a sample rules it out cheaply in the usual case)
    strided = data[:: max(1, data.shape[0] // _SAMPLE)].astype(np.float64)
    if np.unique(strided, axis=0).shape[0] <= k:
        distinct = np.unique(data.astype(np.float64), axis=0)
        if distinct.shape[0] <= k:
            pad = np.repeat(distinct[-1:], k - distinct.shape[0], axis=0)
            return np.concatenate((distinct, pad))
    rng = np.random.default_rng(seed)
    whole = data.shape[0] <= _SAMPLE
    chosen = data if whole else data[rng.choice(data.shape[0], _SAMPLE, replace=False)]
    sample = chosen.astype(np.float64)
    centroids = np.empty((k, data.shape[1]))
    centroids[0] = sample[rng.integers(sample.shape[0])]
    closest = ((sample - centroids[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = closest.sum()
        pick = (
            rng.choice(sample.shape[0], p=closest / total)
            if total > 0
            else rng.integers(sample.shape[0])
        )
        centroids[i] = sample[pick]
        closest = np.minimum(closest, ((sample - centroids[i]) ** 2).sum(axis=1))
    # float32 distances need magnitudes near 1: scale by a power of two (exact) and back
    largest = float(np.abs(sample).max())
    unit = 2.0 ** -np.floor(np.log2(largest)) if largest > 0 else 1.0
    moved = _lloyd((sample * unit).astype(np.float32), centroids * unit, _MAX_ITERATIONS)
    result: np.ndarray = moved / unit
    return result


def _vector_lut(values: np.ndarray, k: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    points = values.reshape(-1, dims)
    lut = kmeans_vectors(points, k).astype(values.dtype)
    indices = _nearest_vectors(points, lut.astype(np.float64))
    return lut, indices.astype(np.uint8)


def palettize_groups(
    weight: np.ndarray,
    nbits: int,
    *,
    out_axis: int,
    in_axis: int,
    group_size: int,
    cluster_dim: int = 1,
    per_channel_scale: bool = False,
    lut_dtype: DType | None = None,
    weights: np.ndarray | None = None,
) -> GroupedPalette:
    """Palettize ``weight`` with one LUT per ``group_size`` output channels (module doc).

    ``group_size`` at least the output channel count means one LUT for the tensor; 1 means
    one per channel. ``cluster_dim`` must divide the input axis (checked by the caller).
    ``weights`` (scalar LUTs only; broadcastable to ``weight``, non-negative): the
    importance of each value's error; the LUTs minimize ``sum(weights * error**2)`` (with
    a per-channel scale, in the weight's own units). Raises :class:`NonFiniteError` when a
    value is NaN or infinite.
    """
    out = weight.dtype
    k = 1 << nbits
    moved = np.moveaxis(weight, (out_axis, in_axis), (0, -1))
    channels = moved.shape[0]
    group_size = min(group_size, channels)
    channel_scale = None
    work = moved
    if per_channel_scale:
        absmax = row_absmax(moved.reshape(channels, -1))
        check_finite(absmax)
        channel_scale = np.where(absmax > 0, absmax, 1.0).astype(out)
        safe = np.where(channel_scale.astype(np.float32) > 0, channel_scale.astype(np.float32), 1.0)
        work = (moved.astype(np.float32) / safe.reshape(-1, *([1] * (moved.ndim - 1)))).astype(out)
    groups = -(-channels // group_size)
    importance = None
    if weights is not None:
        if cluster_dim != 1:
            msg = "weighted palettization is for scalar LUTs (cluster_dim 1)"
            raise ValueError(msg)
        moved_weights = np.moveaxis(
            np.broadcast_to(weights, weight.shape), (out_axis, in_axis), (0, -1)
        )
        importance = moved_weights.reshape(channels, -1).astype(np.float64)
        if channel_scale is not None:  # the error of a normalized value, in the weight's units
            importance = importance * channel_scale.astype(np.float64)[:, None] ** 2
    if cluster_dim == 1:  # palettize_rows checks for NaN and Inf
        lut, indices = _scalar_luts(
            np.ascontiguousarray(work).reshape(channels, -1), nbits, group_size, importance
        )
    else:
        if not all_finite(work):
            raise NonFiniteError
        results = parallel_map(
            lambda g: _vector_lut(
                np.ascontiguousarray(work[g * group_size : (g + 1) * group_size]), k, cluster_dim
            ),
            range(groups),
        )
        lut = np.stack([r[0] for r in results])  # [groups, k, V]
        indices = np.concatenate([r[1] for r in results])
    quantized = None
    if lut_dtype is not None:
        quantized = quantize_blocks(lut, (1, k, cluster_dim), lut_dtype, symmetric=True)
        decoded = quantized.dequantize(out).astype(np.float64)
        indices = np.concatenate(
            [_reassign(work, g, group_size, decoded[g], cluster_dim) for g in range(groups)]
        )
    indices = indices.reshape(*moved.shape[:-1], moved.shape[-1] // cluster_dim)
    return GroupedPalette(
        indices=np.moveaxis(indices, (0, -1), (out_axis, in_axis)),
        lut=lut if quantized is None else quantized.codes,
        lut_quantized=quantized,
        channel_scale=channel_scale,
        nbits=nbits,
        cluster_dim=cluster_dim,
        group_size=group_size,
        out_axis=out_axis,
        in_axis=in_axis,
    )


def _reassign(
    work: np.ndarray, group: int, group_size: int, lut: np.ndarray, cluster_dim: int
) -> np.ndarray:
    """Indices of the nearest entries of the decoded ``lut`` ``[k, V]`` for one group."""
    part = np.ascontiguousarray(work[group * group_size : (group + 1) * group_size])
    if cluster_dim == 1:
        values = part.reshape(-1).astype(np.float64)
        order = np.argsort(lut[:, 0], kind="stable")
        chosen: np.ndarray = order[nearest_sorted(values, lut[order, 0])].astype(np.uint8)
        return chosen
    points = part.reshape(-1, cluster_dim).astype(np.float64)
    return _nearest_vectors(points, lut).astype(np.uint8)
