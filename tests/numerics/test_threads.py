"""Threads change nothing: every fast path gives the same bytes with one worker or several."""

import sys

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.numerics import palettize, quantize
from coreai_opt.coreai_utils.numerics.kmeans import palettize_rows
from coreai_opt.coreai_utils.numerics.prune import prune_block, prune_magnitude, prune_nm
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight

parallel = sys.modules["coreai_opt.coreai_utils.numerics.parallel"]


def fast_paths(weight: np.ndarray) -> list[np.ndarray]:
    sparse = prune_magnitude(weight, 0.5, chunk_elements=4096)
    outputs: list[np.ndarray] = []
    for result in (
        sparse,
        prune_nm(weight, 2, 4, 1, chunk_elements=4096),
        prune_block(weight, 0.5, 4, 0, chunk_elements=4096),
    ):
        assert isinstance(result, SparseWeight)
        outputs += [result.values, result.packed_mask]
    for dtype in (DType.INT8, DType.UINT8, DType.FP8_E4M3FN):
        quantized = quantize(sparse, dtype, 0)
        outputs += [quantized.values.view(np.uint8), quantized.scale]
    palette = palettize(sparse.values, 4)
    outputs += [palette.lut, palette.indices]
    for nbits in (4, 8):  # several Lloyd batches: the stage pipeline
        outputs += list(palettize_rows(weight.reshape(16, -1), nbits))
    return outputs


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_one_worker_and_many_agree(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    weight = (np.random.default_rng(0).standard_normal((256, 96)) * 3).astype(dtype)
    weight[::7] = np.round(weight[::7])  # ties
    threaded = fast_paths(weight)
    monkeypatch.setattr(parallel, "workers", lambda: 1)
    single = fast_paths(weight)
    assert len(threaded) == len(single)
    for a, b in zip(threaded, single, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))
