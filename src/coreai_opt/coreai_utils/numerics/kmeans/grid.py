"""The companded bins of each row: where a value falls, what a bin stands for, the counts,
and the bins a cluster's midpoints cut (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreai_opt.coreai_utils.numerics.masks import check_finite
from coreai_opt.coreai_utils.numerics.parallel import (
    parallel_map,
    row_chunks,
    row_extremes,
    tiles,
    workers,
)

__all__ = ["Grid"]

_BINS_PER_ENTRY = 64
_MAX_BINS = 1 << 16
_ENOUGH_BINS = 1 << 13  # 32 per entry suffice for 256 entries
_LONG_ROW_BINS = 1 << 12  # long rows: one bin per 256 values, up to this many
_LLOYD_BINS = 1 << 20  # bins per batch of rows in the binned Lloyd
_SAMPLE = 64  # values per row read for the companding scale


@dataclass(frozen=True)
class Grid:
    """Per row ``bins`` bins, equal-width in the companded coordinate ``u = (x - middle) /
    (|x - middle| + scale)`` (fine near ``middle``, wide in the tails; any range fits in
    ``(-1, 1)`` and spans at least half of it): value ``x`` falls in bin ``floor((u - origin)
    / step)``, clipped to ``[0, bins)``, computed in float32 (so bins order values up to one
    bin: values next to a midpoint's bin are compared exactly). ``middle`` is 0 when the row
    spans 0, else the centre of its range; ``scale`` the mean distance to it. Bin ``j``
    stands for the value whose ``u`` is its centre (clipped to the row's range)."""

    middle: np.ndarray  # [R] float64 (a float32 value)
    scale: np.ndarray  # [R] float64
    origin: np.ndarray  # [R] float64, u of bin 0's lower edge
    step: np.ndarray  # [R] float64, bin width in u
    low: np.ndarray  # [R] float64, u of the row's least value
    high: np.ndarray  # [R] float64, u of the row's greatest value
    bins: int
    shift: int  # values are coded in ``bins << shift`` label bins, finer for the labels
    batch: int  # rows per Lloyd batch
    work: type  # float32, or float64 when |x - middle| + scale could overflow float32

    @staticmethod
    def of(rows: np.ndarray, k: int) -> Grid:
        count, n = rows.shape
        whole = 1 << max(1, (n - 1).bit_length())  # n rounded up to a power of two
        wanted = max(min(_BINS_PER_ENTRY * k, _ENOUGH_BINS), min(whole >> 8, _LONG_ROW_BINS))
        bins = min(_MAX_BINS, 16 * whole, wanted)
        # label bins: as fine as uint16 codes allow, but not more per row than values
        shift = (max(bins, min(_MAX_BINS, whole)) // bins).bit_length() - 1
        lo, hi = (extreme.astype(np.float64) for extreme in row_extremes(rows))
        check_finite(lo, hi)
        spans_zero = (lo <= 0) & (hi >= 0)
        middle = np.where(spans_zero, 0.0, (lo + hi) / 2).astype(np.float32).astype(np.float64)
        stride = max(1, n // _SAMPLE)  # per row, so a row's result does not depend on the batch
        # float32 differences (no overflow: middle is 0 or inside the row's range), summed in
        # float64
        sample = np.abs(rows[:, ::stride] - middle[:, None].astype(np.float32))
        reach = np.maximum(middle - lo, hi - middle)
        # the typical distance; never below 1e-6 of the largest, so u stays well inside (-1, 1)
        scale = np.maximum(sample.mean(axis=1, dtype=np.float64), reach * 1e-6)
        scale = np.where(scale > 0, scale, 1.0)
        low = (lo - middle) / (np.abs(lo - middle) + scale)
        high = (hi - middle) / (np.abs(hi - middle) + scale)
        spread = high - low
        step = np.where(spread > 0, spread / (bins - 1), 1.0)
        # shift the grid so that u = 0 is a bin centre (a cluster of zeros decodes to 0.0)
        centre = np.ceil(-low / step - 0.5)
        origin = np.where(spans_zero, -(centre + 0.5) * step, low)
        return Grid(
            middle=middle,
            scale=scale,
            origin=origin,
            step=step,
            low=low,
            high=high,
            bins=bins,
            shift=shift,
            batch=max(1, min(_LLOYD_BINS // bins, -(-count // workers()))),
            work=np.float64 if np.any(reach + scale > 1e38) else np.float32,
        )

    @property
    def label_bins(self) -> int:
        """Label bins per row: each bin split in ``2**shift``."""
        return self.bins << self.shift

    def position(self, values: np.ndarray, rows: slice) -> np.ndarray:
        """Positions in label bins (``work`` floats, in ``[0, label_bins - 1]``; the label
        bin is the integer part, its bin that shifted right by ``shift``) of ``values`` ``[r,
        m]`` in ``rows``: within 0.035 of exact (a few float32 roundings of ``|u| <= 1``,
        times at most ``2 * label_bins`` since the ``u`` range is at least 1/2 wide; at most
        2**16 label bins)."""
        work = self.work
        middle: np.ndarray = self.middle[rows, None].astype(work)
        exact = values.dtype == work and not middle.any()
        x = values if exact else np.subtract(values, middle, dtype=work)
        u = np.abs(x)
        u += self.scale[rows, None].astype(work)
        np.divide(x, u, out=u)
        u -= self.origin[rows, None].astype(work)
        u *= np.minimum((1 << self.shift) / self.step[rows, None], 1e30).astype(work)
        np.clip(u, 0, self.label_bins - 1, out=u)
        result: np.ndarray = u
        return result

    def centres(self, rows: slice, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(value, width)`` (float64 ``[r, len(bins)]``): the value that bins (float, may
        be fractional) of ``rows`` stand for, and the bin's width in value (the companding's
        derivative times the step)."""
        u = (bins + 0.5) * self.step[rows, None]
        u += self.origin[rows, None]
        np.clip(u, self.low[rows, None], self.high[rows, None], out=u)
        rest = np.abs(u)
        np.subtract(1, rest, out=rest)
        u /= rest
        u *= self.scale[rows, None]
        u += self.middle[rows, None]
        rest *= rest
        np.divide((self.scale[rows] * self.step[rows])[:, None], rest, out=rest)
        return u, rest

    def count(self, codes: np.ndarray) -> np.ndarray:
        """Values per bin (``[bins]``) of one row's label bin ``codes``."""
        return np.bincount(codes >> self.shift if self.shift else codes, minlength=self.bins)

    def code(self, rows: np.ndarray, codes: np.ndarray, start: int, stop: int) -> None:
        """Write the label bins of ``rows[start:stop]`` (whole rows, a tile at a time) into
        ``codes``."""
        for r0, r1 in row_chunks(stop - start, rows.shape[1]):
            part = slice(start + r0, start + r1)
            codes[part] = self.position(rows[part], part)

    def bin_counts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes [R, n] uint16 label bins, counts [R, bins])`` on the thread pool by tiles
        (for few, long rows: the counts take ``R * bins`` memory)."""
        codes = np.empty(rows.shape, dtype=np.uint16)
        bounds = tiles(*rows.shape)

        def tile(b: tuple[int, int, int, int]) -> np.ndarray:
            r0, r1, c0, c1 = b
            part = codes[r0:r1, c0:c1]
            part[...] = self.position(rows[r0:r1, c0:c1], slice(r0, r1))
            return np.stack([self.count(line) for line in part])

        partials = parallel_map(tile, bounds)
        counts = np.zeros((rows.shape[0], self.bins), dtype=np.int64)
        for (r0, r1, _, _), partial in zip(bounds, partials, strict=True):
            counts[r0:r1] += partial
        return codes, counts

    def cut_params(self, rows: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-row columns for :meth:`cuts`: middle, scale, origin, 1/step, flat offset."""
        return (
            self.middle[rows, None],
            self.scale[rows, None],
            self.origin[rows, None],
            1 / self.step[rows, None],
            base[:, None],
        )

    def cuts(
        self, centroids: np.ndarray, params: tuple[np.ndarray, ...], flat_centre: np.ndarray
    ) -> np.ndarray:
        """``[r, k + 1]`` flat bin ranges of the clusters (offset by each row's ``base``): a
        bin joins the left centroid when the value it stands for is at most the midpoint."""
        middle, scale, origin, inverse, base = params
        midpoint = (centroids[:, 1:] + centroids[:, :-1]) * 0.5
        shifted = midpoint - middle
        u = shifted / (np.abs(shifted) + scale)
        u -= origin
        u *= inverse
        np.clip(u, 0, self.bins - 1, out=u)
        flat = u.astype(np.intp)  # the bin: truncation is the floor of a value >= 0
        flat += base
        flat += np.take(flat_centre, flat) <= midpoint
        result = np.empty((centroids.shape[0], centroids.shape[1] + 1), dtype=np.intp)
        result[:, 1:-1] = flat
        result[:, :1] = base
        result[:, -1:] = base + self.bins
        return result
