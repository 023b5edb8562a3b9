"""Repeated pass calls keep the process flat: each output's data goes when the output goes."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

import numpy as np
import pytest
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils import palettize_weights, quantize_weights, sparsify_weights
from coreai_opt.coreai_utils.assets import load_program
from coreai_opt.coreai_utils.ir import find_weights, read_constant
from tests.helpers import linear_program, status_bytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")

_ROWS, _COLUMNS = 2048, 4096  # 32 MiB of fp32


PASSES: dict[str, tuple[Callable[[AIProgram], AIProgram], int]] = {
    # the pass, and the bytes of compressed data one call adds
    "sparsify": (lambda p: sparsify_weights(p, target_sparsity=0.5), _ROWS * _COLUMNS * 17 // 8),
    "quantize": (lambda p: quantize_weights(p, dtype="int8"), _ROWS * _COLUMNS),
    "palettize": (lambda p: palettize_weights(p, n_bits=4), _ROWS * _COLUMNS // 2),
}


def _weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((_ROWS, _COLUMNS)).astype(np.float32)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> AIProgram:
    path = tmp_path_factory.mktemp("memory") / "linear.aimodel"
    linear_program(_weight()).save_asset(path)
    return load_program(path)


@pytest.mark.parametrize("name", sorted(PASSES))
def test_ten_calls_keep_the_process_flat(name: str, loaded: AIProgram) -> None:
    # Before outputs had a context of their own, every call left its compressed data in the
    # input's context: RSS grew by that much per call for as long as the input lived.
    run, added = PASSES[name]
    sizes = []
    for _ in range(10):
        out = run(loaded)
        del out
        gc.collect()
        sizes.append(status_bytes("VmRSS"))
    assert sizes[-1] - sizes[1] < added, [s >> 20 for s in sizes]
    # and the input is as it was (nothing of it went with the copies)
    (site,) = find_weights(loaded._module._mlir_module)
    assert np.array_equal(read_constant(site.op, site.dtype), _weight())
