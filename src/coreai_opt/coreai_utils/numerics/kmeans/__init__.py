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

The stages, one module each: ``grid`` (the companded bins: coding, counting, cuts),
``starts`` (quantile, cube-root and merged-run starts), ``optimal`` (the optimal partition
of a histogram), ``binned`` (Lloyd on the bins), ``labels`` (nearest entries), ``exact``
(Lloyd on distinct values, LUT rounding), ``rows`` (the driver and its pipeline) and
``weighted`` (k-means with a weight per value, for calibrated palettization).
"""

from coreai_opt.coreai_utils.numerics.kmeans.exact import lloyd_weighted, nearest_sorted
from coreai_opt.coreai_utils.numerics.kmeans.rows import Palette, palettize, palettize_rows

__all__ = ["Palette", "lloyd_weighted", "nearest_sorted", "palettize", "palettize_rows"]
