"""Fast, deterministic 1-D k-means for palettization, batched over rows.

:func:`palettize_rows` gives every row of a ``[rows, n]`` array its own LUT of ``2**nbits``
entries and every value the index of its nearest entry; :func:`palettize` is one row.

* Bins. Each row's values are counted in ``B`` bins of equal width in the companded
  coordinate ``u = (x - m) / (|x - m| + s)`` (``m`` = 0 when the row spans 0, else the
  centre of its range; ``s`` the mean distance to ``m`` over 64 strided values, so a row's
  result never depends on the other rows): fine where values are dense, wide
  in the tails, and any outlier fits. ``B`` is 64 per LUT entry (at most 2**13), or the row
  length / 256 if more (at most 2**12), and at most 16x the row length. The grid puts a bin
  centre on 0.0, so a cluster of zeros keeps the entry 0.0 exactly. A bin stands for the
  value at its centre.
* Lloyd on the bins, all rows at once. In 1-D every cluster is a contiguous range of bins,
  so an iteration is one bin index per centroid midpoint and the cluster means from
  prefix sums. Starts: the quantiles of the cube root of the density (an optimal
  quantizer's point density follows the cube root of the data density; read on bins merged
  to hold about 16 values), which converges in fewer iterations and to a lower error than
  quantile starts. With at most 16 entries, rows also run from the optimal partition of
  their bins merged into 64 runs (half cut at equal steps of bins, half at equal steps of
  mass; :func:`optimal.optimal_centroids`, a dynamic program) and keep the lower error:
  with few entries Lloyd's local optima lie far apart, and on skewed, heavy-tailed or
  coarsely stored rows (lognormal, Student t, fp16 near 7) the cube-root starts' was up to
  1.5x above plain Lloyd's. Rows of fewer than 32 values per entry, or of fewer than 256
  with at most 16 entries, also run from the values' interpolated quantiles and keep the
  lower error (with few points the start decides which local optimum Lloyd reaches). Other rows
  also run from their binned quantiles (plain Lloyd's start) when that start is already
  below the error the cube-root starts converged to: on values that sit on a grid about
  as coarse as the LUT's spacing (evenly spread 16-bit floats, 64 or 256 entries)
  cube-root starts alone stopped 1.3-5.8x above plain Lloyd. A row stops when its
  clusters no longer change (at most 1000 iterations).
* Exact rows. A row with at most ``2**nbits`` non-empty bins, or whose bins are coarse for
  its clusters (the binning error, ``count * width**2 / 12`` over the bins, above 1 % of the
  clustered error: heavy tails; with at most 16 entries the bins' own clustered error, as a
  lone outlier in a wide tail bin takes an entry, else an estimate from the centroids'
  spacing), or, among rows not run from both starts, whose values fill at most 4 bins per
  entry (a bin stands for its centre, which misplaced the centroids of about 20 distinct
  values near 7: 1.07-1.22x plain Lloyd's error), is clustered exactly instead: Lloyd on its
  sorted distinct values from its binned centroids (coarse rows: the best and, with at most
  16 entries, the cube-root starts' result) or weighted quantile starts, and from the
  values' interpolated quantiles, keeping the best.
  So a row with at most ``2**nbits`` distinct values is lossless, and an exact row is never
  worse than plain Lloyd from quantiles; on heavy tails the binned start is far better (and
  converges in a few iterations where quantile starts take thousands).
* LUT and indices. Centroids are rounded to the values' dtype (sorted, distinct, padded by
  repeating the last entry; an exact row of 16-bit values then takes Lloyd steps whose means
  are rounded to its dtype, which never raise its error); each value gets its nearest entry
  (ties to the lower), exactly: from a table over label bins (the bins split, up to 2**16
  per row but no more than the row length rounded up to a power of two), with the values of
  the few label bins next to a midpoint compared with it.
* Threads. Rows are coded, counted, clustered and labelled a Lloyd batch at a time, in a
  pipeline on the thread pool (:func:`parallel.pipeline`): counting (``np.bincount`` holds
  the GIL) runs for one batch while the other threads code, cluster or label other batches,
  and the counts never take more than a few batches' memory. A few rows too long for one
  tile are coded and counted by tiles instead. The result does not depend on the threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from coreai_opt.coreai_utils.numerics.masks import check_finite
from coreai_opt.coreai_utils.numerics.optimal import optimal_centroids
from coreai_opt.coreai_utils.numerics.parallel import (
    parallel_map,
    pipeline,
    row_chunks,
    row_extremes,
    tiles,
    workers,
)

__all__ = ["Palette", "lloyd_weighted", "nearest_sorted", "palettize", "palettize_rows"]

_MAX_ITERATIONS = 100_000  # exact Lloyd: an iteration costs O(k log n), converging is cheap
_BIN_ITERATIONS = 1000
_BINS_PER_ENTRY = 64
_MAX_BINS = 1 << 16
_ENOUGH_BINS = 1 << 13  # 32 per entry suffice for 256 entries
_LONG_ROW_BINS = 1 << 12  # long rows: one bin per 256 values, up to this many
_BOTH_STARTS = 256  # rows of fewer values per entry also run Lloyd from their quantiles...
_BOTH_STARTS_ENTRIES = 16  # ...when there are at most this many entries
_FEW_PER_ENTRY = 32  # ...and always below this many values per entry
_BIN_ERROR = 0.01
_FEW_BINS = 4  # rows in at most this many bins per entry are refined exactly
_LLOYD_BINS = 1 << 20  # bins per batch of rows in the binned Lloyd
_EDGE = 0.125  # a midpoint this close to its bin's edge also marks the neighbour bin (> 0.07)
_SAMPLE = 64  # values per row read for the companding scale
_OPTIMAL_ENTRIES = 16  # up to this many entries Lloyd also starts from the optimal partition
_OPTIMAL_POINTS = 64  # of the bins merged into this many


@dataclass(frozen=True)
class Palette:
    """``lut[indices]`` approximates the values: a sorted ``lut`` of ``2**nbits`` entries."""

    lut: np.ndarray
    indices: np.ndarray
    nbits: int

    def decode(self) -> np.ndarray:
        """The palettized values, ``lut[indices]``."""
        decoded: np.ndarray = self.lut[self.indices]
        return decoded


def palettize(values: np.ndarray, nbits: int) -> Palette:
    """Palettize 1-D float ``values`` with ``2**nbits`` LUT entries in their own dtype.

    Lossless when ``values`` has at most ``2**nbits`` distinct values. Unused entries repeat
    the last one. Each value maps to its nearest entry of the LUT as rounded to the dtype.
    """
    lut, indices = palettize_rows(values.reshape(1, -1), nbits)
    return Palette(lut=lut[0], indices=indices[0], nbits=nbits)


def palettize_rows(rows: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lut, indices)`` for a ``[R, n]`` float array (module docstring): ``lut`` ``[R,
    2**nbits]`` sorted per row in the rows' dtype, ``indices`` ``[R, n]`` uint8 with
    ``lut[r, indices[r]]`` the nearest entry to each value of row ``r``. Raises
    :class:`NonFiniteError` when a value is NaN or infinite."""
    k = 1 << nbits
    count, n = rows.shape
    lut = np.zeros((count, k), dtype=rows.dtype)
    indices = np.zeros((count, n), dtype=np.uint8)
    if n == 0 or count == 0:
        return lut, indices
    values = _float32(rows)  # exact for 16-bit floats; numpy is slow on them
    grid = _Grid.of(values, k)
    exact = np.zeros(count, dtype=bool)
    coarse_starts: dict[int, tuple[np.ndarray, ...]] = {}  # coarse rows: binned centroids
    batches = [(start, min(start + grid.batch, count)) for start in range(0, count, grid.batch)]
    per_entry = n / k
    both = per_entry < _FEW_PER_ENTRY or (k <= _BOTH_STARTS_ENTRIES and per_entry < _BOTH_STARTS)

    def cluster(bounds: tuple[int, int], counts: np.ndarray) -> None:
        start, stop = bounds
        occupied = np.count_nonzero(counts, axis=1)
        few = occupied <= k
        exact[start:stop] = few
        if few.all():
            return
        quantiles = _quantiles(values[start:stop], k) if both else None
        centroids, coarse, runner_up = grid.lloyd(counts, k, few, start, quantiles=quantiles)
        if not both:  # values in a few bins each: the bins' centres misplace the centroids
            coarse |= (occupied <= _FEW_BINS * k) & ~few
        exact[start:stop] |= coarse
        for row in np.flatnonzero(coarse):
            starts = [centroids[row]]
            if runner_up is not None and not np.array_equal(runner_up[row], centroids[row]):
                starts.append(runner_up[row])
            coarse_starts[start + int(row)] = tuple(starts)
        lut[start:stop] = _padded_rows(centroids, rows.dtype)

    if len(tiles(count, n)) > count:  # few long rows: coded and counted by tiles
        codes, long_counts = grid.bin_counts(values)
        parallel_map(lambda b: cluster(b, long_counts[b[0] : b[1]]), batches)
        grid.assign(values, codes, lut, indices)
    else:  # a batch of rows at a time: coded, counted, clustered, labelled
        codes = np.empty((count, n), dtype=np.uint16)
        counted: dict[int, np.ndarray] = {}

        def code(i: int) -> None:
            grid.code(values, codes, *batches[i])

        def count_batch(i: int) -> None:
            start, stop = batches[i]
            counted[i] = np.stack([grid.count(line) for line in codes[start:stop]])

        def cluster_batch(i: int) -> None:
            cluster(batches[i], counted.pop(i))

        def label(i: int) -> None:
            grid.label(values, codes, lut, indices, *batches[i])

        # counting holds the GIL: one batch counts while the other threads code or cluster
        pipeline(len(batches), [code, count_batch, cluster_batch, label], serial=1)
    for row in np.flatnonzero(exact):
        lut[row], indices[row] = _exact_row(rows[row], k, coarse_starts.get(int(row), ()))
    return lut, indices


@dataclass(frozen=True)
class _Grid:
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
    def of(rows: np.ndarray, k: int) -> _Grid:
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
        return _Grid(
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

    def lloyd(
        self,
        counts: np.ndarray,
        k: int,
        skip: np.ndarray,
        start: int,
        *,
        quantiles: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Lloyd on the binned rows ``counts`` ``[r, bins]`` (rows ``start`` on), except
        rows in ``skip``: ``(centroids [r, k] sorted values, coarse [r] bool, cube_root)``,
        coarse rows' bins being too wide for their clusters. From cube-root-density starts;
        with at most 16 entries also from the optimal partition of the bins merged into 64
        runs; and from ``quantiles`` (``[r, k]`` sorted values) if given, else from the
        binned quantiles (plain Lloyd's starts) for the rows they start below the error
        reached so far; keeping the best per row (module docstring). ``cube_root``: with at
        most 16 entries the cube-root starts' own result ``[r, k]`` (a coarse row is
        refined exactly from it too), else None."""
        count, bins = counts.shape
        rows = slice(start, start + count)
        centre, width = self.centres(rows, np.arange(bins, dtype=np.float64))
        binning = np.einsum("ij,ij,ij->i", counts, width, width) / 12
        few_entries = k <= _OPTIMAL_ENTRIES
        # the bins' sum of squares: their clustered error is this minus the explained part
        squares = np.einsum("ij,ij,ij->i", counts, centre, centre) if few_entries else None
        del width
        prefix = np.zeros((2, count, bins + 1))
        prefix[0, :, 1:] = np.cumsum(counts, axis=1)  # in integers: several times faster
        first = _cube_root_starts(prefix[0], centre, k)
        moments = prefix[1, :, 1:]
        np.multiply(counts, centre, out=moments)
        np.cumsum(moments, axis=1, out=moments)
        flat_centre = np.concatenate((centre, centre[:, -1:]), axis=1).reshape(-1)
        del centre
        flat = prefix.reshape(2, -1)
        every = np.arange(count)
        params = self._cut_params(every + start, every * (bins + 1))
        active = np.flatnonzero(~skip)
        best = np.take(flat_centre, first + params[-1])
        self._iterate(best, active, params, flat_centre, flat)
        best_sums = self._sums(best, params, flat_centre, flat)
        best_explained = _explained(best_sums)
        cube_root = best.copy() if few_entries else None

        def improve(starts: np.ndarray, which: np.ndarray) -> None:
            # Lloyd from starts on the rows which: keep a row's result where it explains more
            self._iterate(starts, which, params, flat_centre, flat)
            sums = self._sums(starts, params, flat_centre, flat)
            explained = _explained(sums)
            better = np.zeros(count, dtype=bool)
            better[which] = explained[which] > best_explained[which]
            best[better], best_sums[:, better] = starts[better], sums[:, better]
            best_explained[better] = explained[better]

        if few_entries and active.size:
            runs = _merged_runs(prefix, _OPTIMAL_POINTS)[:, active]  # no copy of prefix
            optimal = best.copy()
            optimal[active] = optimal_centroids(runs[0], runs[1], k)
            improve(optimal, active)
        if quantiles is None:
            quantiles = np.take(flat_centre, _binned_quantiles(prefix[0], k))
            promising = _explained(self._sums(quantiles, params, flat_centre, flat))
            active = active[promising[active] > best_explained[active]]
        if active.size:
            improve(quantiles.copy(), active)
        # coarse: the binning error (count * width**2 / 12 over the bins) above 1 % of the
        # clustered error. With few entries, the bins' own clustered error: a lone outlier
        # in a wide tail bin takes an entry, and the bin's centre for it cost up to 1.09x.
        # With many, an estimate, mass * spacing**2 / 12 per cluster (spacing: half the
        # distance between its neighbours), which an outlier's gap inflates: counting the
        # bins' error there made many more rows of real weights exact (2x the time at 8 bits)
        # for 0.1-0.6 % less error.
        if squares is not None:
            clustered = squares - best_explained
        else:
            padded = np.concatenate((best[:, :1], best, best[:, -1:]), axis=1)
            spacing = (padded[:, 2:] - padded[:, :-2]) / 2
            clustered = np.einsum("ij,ij,ij->i", best_sums[0], spacing, spacing) / 12
        return best, (binning > _BIN_ERROR * clustered) & ~skip, cube_root

    def _iterate(
        self,
        centroids: np.ndarray,
        active: np.ndarray,
        params: tuple[np.ndarray, ...],
        flat_centre: np.ndarray,
        flat: np.ndarray,
    ) -> None:
        """Lloyd iterations on ``centroids`` (updated in place) of the ``active`` rows until
        their clusters stop changing; ``flat``: prefix sums of counts and moments."""
        k = centroids.shape[1]
        params = tuple(p[active] for p in params)
        cuts = np.full((active.size, k + 1), -1, dtype=np.intp)
        current = centroids[active]
        for _ in range(_BIN_ITERATIONS):
            if active.size == 0:
                break
            now = self._cuts(current, params, flat_centre)
            weight = np.diff(np.take(flat[0], now), axis=1)  # np.take: faster than indexing
            total = np.diff(np.take(flat[1], now), axis=1)
            filled = weight > 0
            if filled.all():  # means of consecutive clusters: already sorted
                moved = total / weight
            else:  # an empty cluster keeps its centroid, maybe out of order
                moved = np.where(filled, total / np.maximum(weight, 1), current)
                moved.sort(axis=1)
            going = np.any(now != cuts, axis=1)
            centroids[active] = moved
            if not going.all():
                active, cuts, current = active[going], now[going], moved[going]
                params = tuple(p[going] for p in params)
            else:
                cuts, current = now, moved

    def _sums(
        self,
        centroids: np.ndarray,
        params: tuple[np.ndarray, ...],
        flat_centre: np.ndarray,
        flat: np.ndarray,
    ) -> np.ndarray:
        """``[2, r, k]`` each cluster's count and sum of values (of its bins' values)."""
        sums: np.ndarray = np.diff(
            np.take(flat, self._cuts(centroids, params, flat_centre), axis=1), axis=2
        )
        return sums

    def _cut_params(self, rows: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-row columns for :meth:`_cuts`: middle, scale, origin, 1/step, flat offset."""
        return (
            self.middle[rows, None],
            self.scale[rows, None],
            self.origin[rows, None],
            1 / self.step[rows, None],
            base[:, None],
        )

    def _cuts(
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

    def assign(
        self, rows: np.ndarray, codes: np.ndarray, lut: np.ndarray, indices: np.ndarray
    ) -> None:
        """Write the nearest entry of each row's ``lut`` (ties to the lower) into ``indices``,
        on the thread pool by tiles (see :meth:`label`)."""
        table, bounds = self._label_table(lut, slice(None))

        def tile(b: tuple[int, int, int, int]) -> None:
            r0, r1, c0, c1 = b
            for r in range(r0, r1):
                _label_segment(
                    table[r], bounds[r], rows[r, c0:c1], codes[r, c0:c1], indices[r, c0:c1]
                )

        parallel_map(tile, tiles(*rows.shape))

    def label(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        lut: np.ndarray,
        indices: np.ndarray,
        start: int,
        stop: int,
    ) -> None:
        """Write the nearest entry of each of ``rows[start:stop]``'s ``lut`` (ties to the
        lower) into ``indices``.

        A value's label is the number of midpoints below it, read from a per-bin table;
        values in a midpoint's bin, or in the next bin when the midpoint is within
        ``_EDGE`` of the edge between them (bins order values only up to 2 x 0.035 of a bin),
        are compared with the midpoints exactly."""
        table, bounds = self._label_table(lut[start:stop], slice(start, stop))
        for i, r in enumerate(range(start, stop)):
            _label_segment(table[i], bounds[i], rows[r], codes[r], indices[r])

    def _label_table(self, lut: np.ndarray, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(table, bounds)`` for :meth:`label` of ``rows`` (``lut`` theirs): ``bounds``
        ``[r, k - 1]`` the midpoints between distinct entries (inf for repeats, so sorted);
        ``table`` ``[r, label_bins]`` uint8, the midpoints in earlier label bins, 255 on the
        label bins whose values are compared with the midpoints."""
        entries = lut.astype(np.float64)
        count, k = entries.shape
        size = self.label_bins
        distinct = entries[:, 1:] != entries[:, :-1]
        bounds = np.where(distinct, (entries[:, 1:] + entries[:, :-1]) / 2, np.inf)
        used = np.isfinite(bounds)
        position = self.position(np.where(used, bounds, 0.0), rows)
        bound_bins = position.astype(np.intp)
        fraction = position - bound_bins
        # table[j] = midpoints in label bins before j: label v runs over the bins after the
        # v-th midpoint's, up to the (v+1)-th's (repeats' midpoints sit past the end)
        edges = np.full((count, k + 1), size - 1, dtype=np.intp)
        edges[:, 0] = -1
        edges[:, 1:k] = np.sort(np.where(used, bound_bins, size - 1), axis=1)
        labels = np.tile(np.arange(k, dtype=np.uint8), count)
        table = np.repeat(labels, np.diff(edges, axis=1).reshape(-1)).reshape(count, size)
        flat_table = table.reshape(-1)
        flat = bound_bins + (np.arange(count, dtype=np.intp) * size)[:, None]
        flat_table[flat[used]] = 255  # 255 also marks the label 255: compared too
        flat_table[(flat + 1)[used & (fraction >= 1 - _EDGE) & (bound_bins < size - 1)]] = 255
        flat_table[(flat - 1)[used & (fraction < _EDGE) & (bound_bins > 0)]] = 255
        return table, bounds


def _label_segment(
    table: np.ndarray, bounds: np.ndarray, values: np.ndarray, codes: np.ndarray, out: np.ndarray
) -> None:
    """Labels of a piece of one row into ``out``: ``table`` at its label bin ``codes``, the
    values in marked bins (255) compared with the midpoints ``bounds``."""
    np.take(table, codes, out=out, mode="clip")  # mode: unbuffered
    where = np.flatnonzero(out == 255)
    if where.size:
        out[where] = np.searchsorted(bounds, values[where].astype(np.float64), side="left")


def _quantiles(rows: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` (float64) the rows' quantiles at ``(i + 0.5) / k``, from one sort per row:
    the values of ``np.quantile``'s default (linear between order statistics)."""
    ordered = np.sort(rows, axis=1).astype(np.float64)
    position = (rows.shape[1] - 1) * ((np.arange(k) + 0.5) / k)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, rows.shape[1] - 1)
    fraction = position - low
    below, above = ordered[:, low], ordered[:, high]
    step = above - below
    # numpy's interpolation: from the nearer order statistic
    result: np.ndarray = np.where(
        fraction >= 0.5, above - step * (1 - fraction), below + step * fraction
    )
    return result


def _explained(sums: np.ndarray) -> np.ndarray:
    """Per row, the sum over clusters of ``sum**2 / count`` from ``sums`` ``[2, r, k]``: a
    row's squared error is its values' sum of squares minus this, so the larger the
    better."""
    explained: np.ndarray = np.sum(sums[1] ** 2 / np.maximum(sums[0], 1), axis=1)
    return explained


def _binned_quantiles(mass: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` flat bin indices (row ``i``'s bins start at ``i * (bins + 1)``) of the
    quantiles at ``(j + 0.5) / k``: the bin holding that rank. ``mass``: ``[r, bins + 1]``
    prefix sums of the counts (from 0). Exact: the ranks and the row offsets are integers
    and dyadic fractions well inside float64's precision."""
    count, size = mass.shape
    totals = mass[:, -1:]
    ranks = (np.arange(k) + 0.5) / k * totals
    # the first prefix sum above the rank ends the bin that holds it
    within = _search_rows(mass, ranks, totals.max() + 1, side="right")
    result: np.ndarray = np.maximum(within - 1, 0) + np.arange(count)[:, None] * size
    return result


def _merged_runs(prefix: np.ndarray, points: int) -> np.ndarray:
    """``[2, r, points]`` counts and moments of each row's bins merged into ``points`` runs
    (some maybe empty): cut at equal steps of bins and at equal steps of mass, half each, so
    that both a dense peak and a long sparse tail are resolved. ``prefix``: ``[2, r, bins +
    1]`` prefix sums of counts and moments."""
    _, count, size = prefix.shape
    bins = size - 1
    half = points // 2
    even = np.broadcast_to(np.arange(half) * bins // half, (count, half))
    totals = prefix[0, :, -1:]
    ranks = np.arange(half) / half * totals
    by_mass = _search_rows(prefix[0], ranks, totals.max() + 1, side="right") - 1
    cuts = np.sort(np.concatenate((even, np.clip(by_mass, 0, bins)), axis=1), axis=1)
    edges = np.concatenate((cuts, np.full((count, 1), bins)), axis=1)
    runs: np.ndarray = np.diff(np.take_along_axis(prefix, edges[None], axis=2), axis=2)
    return runs


def _search_rows(
    rows: np.ndarray, targets: np.ndarray, gap: float, *, side: Literal["left", "right"]
) -> np.ndarray:
    """``np.searchsorted`` of ``targets`` ``[r, t]`` in each sorted row of ``rows`` ``[r, m]``
    (indices within the row), in one search: row ``i`` and its targets shifted by ``i *
    gap``, ``gap`` above every row's and target's spread."""
    shift = np.arange(rows.shape[0])[:, None]
    found = np.searchsorted(
        (rows + shift * gap).reshape(-1),
        (targets + shift * gap).reshape(-1),
        side=side,
    )
    within: np.ndarray = found.reshape(targets.shape) - shift * rows.shape[1]
    return within


def _float32(rows: np.ndarray) -> np.ndarray:
    """``rows`` as float32 (itself if it already is), converted by tiles on the thread pool."""
    if rows.dtype == np.float32:
        return rows
    out = np.empty(rows.shape, dtype=np.float32)

    def tile(b: tuple[int, int, int, int]) -> None:
        out[b[0] : b[1], b[2] : b[3]] = rows[b[0] : b[1], b[2] : b[3]]

    parallel_map(tile, tiles(*rows.shape))
    return out


def _cube_root_starts(mass: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """``[r, k]`` strictly increasing start bins: the quantiles of the cube root of the
    density (``cbrt(count / width) * width``), read on bins merged into 16 per entry (starts
    need no fine resolution; up to 16 bins each), or fewer, down to 2, so that a merged bin
    holds about 16 values (the root of counts of a value or two jitters the starts: uniform
    rows of 32 values per entry at 8 bits stopped up to 1.07x above plain Lloyd); ``mass``:
    prefix sums of the counts, ``centre``: each bin's value."""
    count, bins = mass.shape[0], mass.shape[1] - 1
    wanted = max(2 * k, min(16 * k, int(mass[0, -1]) // 16))  # every row holds n values
    merge = 16 if wanted == 16 * k else bins
    while merge > 1 and (bins % merge or bins // merge < wanted):
        merge //= 2
    wide = np.diff(mass[:, ::merge], axis=1)
    first = centre[:, ::merge]  # a merged bin spans from its first centre to the next
    span = np.empty(first.shape)
    np.subtract(first[:, 1:], first[:, :-1], out=span[:, :-1])
    span[:, -1] = centre[:, -1] + (first[:, -1] - first[:, -2]) - first[:, -1]
    wide *= span  # float64: span**2 of extreme rows overflows float32
    wide *= span
    peak = wide.max(axis=1, keepdims=True)
    # scaled to [0, 1] per row (the scale cancels below), then the root in float32
    density = np.empty(wide.shape, dtype=np.float32)
    np.divide(wide, np.where(peak > 0, peak, 1.0), out=density, casting="same_kind")
    with np.errstate(divide="ignore"):  # log(0) = -inf: a root of 0
        np.log(density, out=density)
    density *= np.float32(1 / 3)
    # float32 sums are several times faster and precise enough to place starts
    cumulative = np.cumsum(np.exp(density, out=density), axis=1).astype(np.float64)
    totals = cumulative[:, -1:]
    cumulative /= np.where(totals > 0, totals, 1.0)  # each row in [0, 1], whatever its scale
    targets = np.broadcast_to((np.arange(k) + 0.5) / k, (count, k))
    start = _search_rows(cumulative, targets, 2.0, side="left") * merge + merge // 2
    step = np.arange(k)
    start = np.maximum.accumulate(np.clip(start, 0, bins - 1) - step, axis=1) + step
    # strictly increasing in [0, bins) (rows of fewer bins than k are clustered exactly)
    result: np.ndarray = np.clip(np.minimum(start, bins - k + step), 0, bins - 1)
    return result


def _padded_rows(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Sorted centroids ``[r, k]`` rounded to ``dtype``, duplicates dropped, each row
    padded by repeating its last entry."""
    rounded = centroids.astype(dtype)
    wide = rounded.astype(np.float64)
    rows, k = wide.shape
    keep = np.ones((rows, k), dtype=bool)
    keep[:, 1:] = wide[:, 1:] != wide[:, :-1]
    position = np.cumsum(keep, axis=1) - 1
    distinct = np.empty_like(rounded)
    distinct[np.arange(rows)[:, None], position] = rounded
    last = position[:, -1:]
    result: np.ndarray = distinct[np.arange(rows)[:, None], np.minimum(np.arange(k), last)]
    return result


def _exact_row(
    values: np.ndarray, k: int, binned: tuple[np.ndarray, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """``(lut [k], indices)`` of one row by Lloyd on its exact distinct values: from each of
    the ``binned`` centroids of a row whose bins were coarse (on heavy tails far better
    starts than quantiles), else from the weighted quantiles; and from the values'
    interpolated quantiles, keeping the best (the start decides which local optimum Lloyd
    reaches; ties to the earlier start)."""
    wide = values.astype(np.float64)
    points, counts = np.unique(wide, return_counts=True)
    weights = counts.astype(np.float64)
    starts: list[np.ndarray | None] = [np.unique(start) for start in binned] or [None]
    if points.size > k:
        starts.append(np.unique(_quantiles(wide[None], k)[0]))
    runs = [lloyd_weighted(points, weights, k, start) for start in starts]
    centroids = min(runs, key=lambda run: _sse(points, weights, run))
    entries = np.unique(centroids.astype(values.dtype).astype(np.float64))
    if values.dtype.itemsize < 4:  # rounding to float32 moves an entry by ~1e-7 at most
        # on values a few storage steps apart (fp16 near 7) a cluster of two values has its
        # mean rounded onto one of them, which plain Lloyd then leaves
        entries = lloyd_weighted(points, weights, k, entries, stored=values.dtype)
    # k sorted entries for _padded_rows: the last one repeated
    edge = np.pad(entries, (0, k - entries.size), mode="edge")
    lut = _padded_rows(edge[None], values.dtype)[0]
    return lut, nearest_sorted(wide, entries)


def _sse(points: np.ndarray, weights: np.ndarray, centroids: np.ndarray) -> float:
    nearest_centroid = centroids[nearest_sorted(points, centroids)]
    return float(np.sum(weights * (points - nearest_centroid) ** 2))


def nearest_sorted(values: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Index (uint8) of the nearest of the sorted ``entries`` (at most 256) for each value,
    ties to the lower: the number of midpoints between neighbours below the value."""
    boundaries = (entries[1:] + entries[:-1]) / 2
    indices: np.ndarray = np.searchsorted(boundaries, values, side="left").astype(np.uint8)
    return indices


def lloyd_weighted(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    starts: np.ndarray | None = None,
    *,
    stored: np.dtype | None = None,
) -> np.ndarray:
    """Sorted centroids of a weighted 1-D k-means on sorted ``points``, from quantile starts
    (or the given sorted ``starts``).

    Iterates until the assignment is stable (or a fixed cap); an empty cluster keeps its
    centroid. With ``stored``, each mean is rounded to that dtype (a LUT's storage): no step
    raises the error, since the best stored value for a cluster is the one nearest its mean.
    Returns at most ``k`` distinct centroids; with no more than ``k`` points, the points
    themselves.
    """
    if points.size <= k:
        return points.copy()
    cumulative = np.cumsum(weights)
    if starts is None:
        targets = (np.arange(k) + 0.5) / k * cumulative[-1]
        starts = points[np.minimum(np.searchsorted(cumulative, targets), points.size - 1)]
    centroids = np.unique(starts)
    prefix_w = np.concatenate(([0.0], cumulative))
    prefix_x = np.concatenate(([0.0], np.cumsum(weights * points)))
    cuts: np.ndarray | None = None
    for _ in range(_MAX_ITERATIONS):
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        inner = np.searchsorted(points, boundaries, side="right")
        new_cuts = np.concatenate(([0], inner, [points.size]))
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
        mass = prefix_w[cuts[1:]] - prefix_w[cuts[:-1]]
        moment = prefix_x[cuts[1:]] - prefix_x[cuts[:-1]]
        # an empty cluster keeps its centroid (it may win points back later)
        centroids = np.sort(np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), centroids))
        if stored is not None:
            centroids = np.unique(centroids.astype(stored).astype(np.float64))
    return np.unique(centroids)
