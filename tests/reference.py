"""Slow, obviously-correct reference pruning used to check the library (loops, sorts)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def magnitudes(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight.astype(np.float64))


def ref_magnitude(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Pruned copy: the floor(size*sparsity) smallest |w| zeroed, ties by flat index."""
    flat = weight.reshape(-1).copy()
    n = math.floor(flat.size * sparsity)
    order = np.lexsort((np.arange(flat.size), magnitudes(flat)))
    flat[order[:n]] = 0
    return flat.reshape(weight.shape)


def ref_block(weight: np.ndarray, sparsity: float, block: int, axis: int) -> np.ndarray:
    moved = np.moveaxis(weight.copy(), axis, 0)
    channels = moved.shape[0]
    rest = moved.reshape(channels, -1)
    blocks = []
    for b in range(0, channels, block):
        for r in range(rest.shape[1]):
            score = float(np.sum(magnitudes(rest[b : b + block, r]) ** 2))
            blocks.append((score, len(blocks), b, r))
    n = math.floor(len(blocks) * sparsity)
    for _, _, b, r in sorted(blocks)[:n]:
        rest[b : b + block, r] = 0
    return np.moveaxis(rest.reshape(moved.shape), 0, axis)


def ref_nm(weight: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    moved = np.moveaxis(weight.copy(), axis, -1)
    channels = moved.shape[-1]
    rows = moved.reshape(-1, channels)
    for row in rows:
        for start in range(0, channels, m):
            group = list(range(start, min(start + m, channels)))
            padding = m - len(group)
            # padding ranks below every real element
            keyed = [(1, float(magnitudes(row[i : i + 1])[0]), i - start, i) for i in group]
            keyed += [(0, 0.0, len(group) + k, None) for k in range(padding)]
            for *_, index in sorted(keyed)[:n]:
                if index is not None:
                    row[index] = 0
    return np.moveaxis(rows.reshape(moved.shape), -1, axis)


def ref_lloyd(values: np.ndarray, k: int, iterations: int = 10_000) -> np.ndarray:
    """Plain Lloyd k-means on the raw values from quantile starts, run to convergence (on
    the distinct values weighted by their counts: the same iterations, faster)."""
    x = values.astype(np.float64).reshape(-1)
    points, counts = np.unique(x, return_counts=True)
    weights = counts.astype(np.float64)
    centroids = np.unique(np.quantile(x, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        labels = nearest_index(points, centroids)
        mass = np.bincount(labels, weights=weights, minlength=centroids.size)
        sums = np.bincount(labels, weights=weights * points, minlength=centroids.size)
        new = np.where(mass > 0, sums / np.maximum(mass, 1), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = np.unique(new)
    return centroids


def nearest_index(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for each of ``x``."""
    right = np.clip(np.searchsorted(centroids, x), 0, centroids.size - 1)
    left = np.clip(right - 1, 0, centroids.size - 1)
    closer_left = np.abs(x - centroids[left]) <= np.abs(x - centroids[right])
    return np.where(closer_left, left, right)


def mse_to_nearest(values: np.ndarray, centroids: np.ndarray) -> float:
    x = values.astype(np.float64)
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    return float(np.mean((x - c[nearest_index(x, c)]) ** 2))


def issue_layer(seed: int = 0) -> np.ndarray:
    """The quantization test layer: random normal 256x192 fp32, rows scaled over 0.2-3x."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.2, 3.0, 256, dtype=np.float32)[:, None]
    return (rng.standard_normal((256, 192)).astype(np.float32) * rows).astype(np.float32)


def ref_sparsegpt(
    weight: np.ndarray,
    gram: np.ndarray,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block: int = 128,
    dampening: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's reference sweep, transcribed plainly (float64, eager updates in a block).

    Unstructured: per block of ``block`` columns, the ``floor(numel * s)`` lowest
    ``w^2 / d^2`` (ties by column-major position); n:m over consecutive columns (``m``
    divides ``block``). Returns ``(pruned weight, keep)``.
    """
    w = weight.astype(np.float64).copy()
    h = gram.astype(np.float64).copy()
    rows, cols = w.shape
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += dampening * np.mean(np.diag(h)) * np.eye(cols)
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: U^T U = H^-1
    keep = np.ones_like(w, dtype=bool)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        mask1 = np.zeros_like(w1, dtype=bool)
        if sparsity is not None:
            tmp = w1**2 / np.diag(h1)[None, :] ** 2
            count = math.floor(tmp.size * sparsity)
            flat = tmp.T.reshape(-1)  # column-major positions
            order = np.lexsort((np.arange(flat.size), flat))
            pruned = np.zeros(flat.size, dtype=bool)
            pruned[order[:count]] = True
            mask1 = pruned.reshape(tmp.T.shape).T
        for i in range(i2 - i1):
            if n_m is not None and i % n_m[1] == 0:
                tmp = w1[:, i : i + n_m[1]] ** 2 / np.diag(h1)[i : i + n_m[1]][None, :] ** 2
                for r in range(rows):
                    order = np.lexsort((np.arange(tmp.shape[1]), tmp[r]))
                    mask1[r, i + order[: n_m[0]]] = True
            col = w1[:, i]
            d = h1[i, i]
            q = col.copy()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= np.outer(e, h1[i, i:])
            err1[:, i] = e
        w[:, i1:i2] = q1
        keep[:, i1:i2] = ~mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, keep


def ref_wanda(weight: np.ndarray, norms: np.ndarray, sparsity: float, out_axis: int) -> np.ndarray:
    """Pruned copy: per output slice, floor(slice * s) lowest |w| * norm, ties by index."""
    scores = np.abs(weight.astype(np.float64)) * np.broadcast_to(norms, weight.shape)
    pruned = np.moveaxis(weight.copy(), out_axis, 0)
    moved = np.moveaxis(scores, out_axis, 0)
    for channel in range(moved.shape[0]):
        flat_scores = moved[channel].reshape(-1)
        flat = pruned[channel].reshape(-1)
        count = math.floor(flat.size * sparsity)
        order = sorted(range(flat.size), key=lambda i: (flat_scores[i], i))
        flat[order[:count]] = 0
        pruned[channel] = flat.reshape(pruned[channel].shape)
    return np.moveaxis(pruned, 0, out_axis)


def ref_conv_patches(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """[groups, N*Ho*Wo, C/g*kh*kw] by explicit loops (2-D convolution, input pre-padded)."""
    n, c, h, w = x.shape
    kh, kw = kernel
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    per = c // groups
    out = np.zeros((groups, n * ho * wo, per * kh * kw))
    for g in range(groups):
        row = 0
        for b in range(n):
            for i in range(ho):
                for j in range(wo):
                    col = 0
                    for ch in range(per):
                        for p in range(kh):
                            for q in range(kw):
                                y = i * stride[0] + p * dilation[0]
                                z = j * stride[1] + q * dilation[1]
                                out[g, row, col] = x[b, g * per + ch, y, z]
                                col += 1
                    row += 1
    return out


def _ref_stored(raw: float, scales_in: np.dtype) -> float:
    """A scale as stored: rounded to its type, at least its smallest subnormal; 1 for 0."""
    import ml_dtypes

    if raw <= 0:
        return 1.0
    value = float(np.array(raw).astype(scales_in).astype(np.float64))
    tiny = float(ml_dtypes.finfo(scales_in).smallest_subnormal)
    return float(np.array(max(value, tiny)).astype(scales_in).astype(np.float64))


def _ref_float_block(
    values: np.ndarray, flat: np.ndarray, storage: np.dtype, scales_in: np.dtype, out: np.dtype
) -> np.ndarray:
    import ml_dtypes

    limit = float(ml_dtypes.finfo(storage).max)
    absmax = float(np.abs(flat).max())

    def encode(x: np.ndarray, s: float) -> np.ndarray:
        codes = np.clip(x / np.float32(s), -limit, limit).astype(np.float32).astype(storage)
        codes = codes.astype(np.float32)
        return np.where(codes == 0, np.float32(0), codes)  # zero is stored as +0

    sample = flat.astype(np.float32)[:: max(1, flat.size // 256)]
    if scales_in == np.dtype(ml_dtypes.float8_e8m0fnu):
        e0 = math.ceil(math.log2(absmax / limit)) if absmax > 0 else 0
        candidates = [2.0**e0, 2.0 ** (e0 - 1)]
    else:
        candidates = [absmax / limit * 2.0 ** (k / 32) for k in range(32)]
    best, best_error = 1.0, math.inf
    for candidate in candidates:
        s = _ref_stored(candidate, scales_in)
        rebuilt = (encode(sample, s) * np.float32(s)).astype(out)
        error = float(((rebuilt.astype(np.float64) - sample) ** 2).sum())
        if error < best_error:
            best, best_error = s, error
    return encode(values.astype(np.float32), best) * np.float32(best)


def _ref_int_block(
    values: np.ndarray, flat: np.ndarray, dtype: str, symmetric: bool, scales_in: np.dtype
) -> np.ndarray:
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    signed = not dtype.startswith("u")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if symmetric:
        half = 2 ** (bits - 1) - 1
        s = _ref_stored(float(np.abs(flat).max()) / half, scales_in)
        zp = 0 if signed else 2 ** (bits - 1)
        low, high = (-half, half) if signed else (1, 2**bits - 1)
    else:
        lo, hi = min(float(flat.min()), 0.0), max(float(flat.max()), 0.0)
        s = _ref_stored((hi - lo) / (qmax - qmin), scales_in)
        zp = int(np.clip(np.rint(qmin - lo / s), qmin, qmax))
        low, high = qmin, qmax
    q = np.clip(np.rint(values.astype(np.float32) / np.float32(s)) + zp, low, high)
    return (q - zp).astype(np.float32) * np.float32(s)


def ref_block_quantize(
    weight: np.ndarray,
    block: tuple[int, ...],
    dtype: str,
    symmetric: bool,
    scale_dtype: object = None,
) -> np.ndarray:
    """The weight as the runtime should rebuild it after blockwise quantization, computed
    block by block with plain scalar formulas (see numerics/blockwise.py for the rules)."""
    import itertools

    import ml_dtypes

    floats = {
        "fp8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "fp8_e5m2": ml_dtypes.float8_e5m2,
        "fp4_e2m1fn": ml_dtypes.float4_e2m1fn,
    }
    out = weight.dtype
    scales_in = np.dtype(scale_dtype) if scale_dtype is not None else out
    result = np.zeros(weight.shape, dtype=out)
    grid = [range(0, n, b) for n, b in zip(weight.shape, block, strict=True)]
    for corner in itertools.product(*grid):
        index = tuple(slice(c, c + b) for c, b in zip(corner, block, strict=True))
        values = weight[index].astype(np.float64)
        full = np.zeros(block)  # a partial block is zero-padded (the sample's stride)
        full[tuple(slice(0, n) for n in values.shape)] = values
        flat = full.reshape(-1)
        if dtype in floats:
            rebuilt = _ref_float_block(values, flat, np.dtype(floats[dtype]), scales_in, out)
        else:
            rebuilt = _ref_int_block(values, flat, dtype, symmetric, scales_in)
        result[index] = rebuilt.astype(out)
    return result


def ref_lut_decode(palette: object, out: np.dtype) -> np.ndarray:
    """Decode a GroupedPalette element by element (loops over output channels and vectors)."""
    p = palette
    lut = p.lut.astype(np.float32)  # type: ignore[attr-defined]
    quantized = p.lut_quantized  # type: ignore[attr-defined]
    if quantized is not None:
        codes = quantized.codes.astype(np.float32)
        zp = 0.0 if quantized.zero_point is None else quantized.zero_point.astype(np.float32)
        lut = ((codes - zp) * quantized.scale.astype(np.float32)).astype(out).astype(np.float32)
    indices = np.moveaxis(p.indices, (p.out_axis, p.in_axis), (0, -1))  # type: ignore[attr-defined]
    dims = p.cluster_dim  # type: ignore[attr-defined]
    dense = np.zeros((*indices.shape[:-1], indices.shape[-1] * dims), dtype=np.float32)
    for channel in range(indices.shape[0]):
        group = channel // p.group_size  # type: ignore[attr-defined]
        for position in np.ndindex(*indices.shape[1:]):
            entry = lut[group, indices[(channel, *position)]]
            start = position[-1] * dims
            dense[(channel, *position[:-1], slice(start, start + dims))] = entry
    result = dense.astype(out)
    if p.channel_scale is not None:  # type: ignore[attr-defined]
        scale = p.channel_scale.astype(np.float32)  # type: ignore[attr-defined]
        result = (dense * scale.reshape(-1, *([1] * (dense.ndim - 1)))).astype(out)
    return np.moveaxis(result, (0, -1), (p.out_axis, p.in_axis))  # type: ignore[attr-defined]


def ref_kmeans_vectors(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Plain k-means++ seeding (numpy Generator ``seed``) and Lloyd to convergence."""
    rng = np.random.default_rng(seed)
    x = points.astype(np.float64)
    centroids = [x[rng.integers(x.shape[0])]]
    for _ in range(1, k):
        d = np.min([((x - c) ** 2).sum(1) for c in centroids], axis=0)
        centroids.append(x[rng.choice(x.shape[0], p=d / d.sum())])
    c = np.array(centroids)
    for _ in range(1000):
        labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def vector_mse(points: np.ndarray, centroids: np.ndarray) -> float:
    x = points.astype(np.float64)
    d = ((x[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)
    return float(d.min(axis=1).mean())


def ref_obs(
    weight: np.ndarray,
    gram: np.ndarray,
    rounded: Callable[[int, np.ndarray], np.ndarray],
    dampening: float = 0.01,
) -> np.ndarray:
    """The OBS column sweep transcribed plainly (float64, one column at a time, every later
    column updated eagerly): ``rounded(c, w)`` gives column ``c``'s stored values (``w`` is
    the whole current weight, for rules that look at a group of columns). Dead columns are
    kept (rounded) and pass nothing on. Returns the decoded weight."""
    w = weight.astype(np.float64).copy()
    h = gram.astype(np.float64).copy()
    cols = w.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    h += dampening * np.mean(np.diag(h)) * np.eye(cols)
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    for c in range(cols):
        decoded = rounded(c, w)
        e = (w[:, c] - decoded) / upper[c, c]
        w[:, c] = decoded
        w[:, c + 1 :] -= np.outer(e, upper[c, c + 1 :])
    return w


def ref_gptq(
    weight: np.ndarray,
    gram: np.ndarray,
    bits: int,
    group: int | None = None,
    dampening: float = 0.01,
    *,
    order: bool = False,
) -> np.ndarray:
    """GPTQ by :func:`ref_obs`, symmetric signed ``bits``-bit codes: per-row scales
    ``absmax / qmax`` of the original weight, or with ``group`` of the updated weights when
    a group of columns is entered. ``order``: the columns by decreasing ``gram`` diagonal
    (ties by index), and with ``group`` every group's scales from the original weight
    ("static groups"). Rounding as the runtime decodes: ``rint(w / s)`` in float32, ``q *
    s`` in float32."""
    qmax = (1 << (bits - 1)) - 1

    def scales(block: np.ndarray) -> np.ndarray:
        absmax = np.abs(block.astype(np.float32)).max(axis=1).astype(np.float64)
        return np.where(absmax > 0, (absmax / qmax).astype(np.float32), 1.0).astype(np.float32)

    columns = weight.shape[1]
    permutation = np.argsort(-np.diag(gram), kind="stable") if order else np.arange(columns)
    if order and group is not None:
        fixed = [scales(weight[:, c - c % group : c - c % group + group]) for c in permutation]
    else:
        fixed = [scales(weight)] * columns
    scale = [fixed[0]]

    def rounded(c: int, w: np.ndarray) -> np.ndarray:
        if group is not None and not order and c % group == 0:
            scale[0] = scales(w[:, c : c + group])
        elif order or group is None:
            scale[0] = fixed[c]
        q = np.clip(np.rint(w[:, c].astype(np.float32) / scale[0]), -qmax, qmax)
        return (q.astype(np.float32) * scale[0]).astype(np.float64)

    swept = ref_obs(
        weight[:, permutation], gram[np.ix_(permutation, permutation)], rounded, dampening
    )
    return swept[:, np.argsort(permutation)]


def ref_lut_obs(
    weight: np.ndarray, gram: np.ndarray, lut: np.ndarray, dampening: float = 0.01
) -> np.ndarray:
    """Rounding to one sorted scalar ``lut`` with error feedback by :func:`ref_obs` (ties
    to the lower entry)."""
    entries = lut.astype(np.float64)

    def rounded(c: int, w: np.ndarray) -> np.ndarray:
        distance = np.abs(w[:, c, None] - entries[None, :])
        return entries[np.argmin(distance, axis=1)]

    return ref_obs(weight, gram, rounded, dampening)
