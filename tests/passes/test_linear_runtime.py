"""Every sparsity mode, in every float dtype, read back from the Core AI runtime."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils import sparsify_weights
from tests.helpers import linear_program, nested_program, read_back_linear
from tests.reference import ref_block, ref_magnitude, ref_nm

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]
OUT, IN = 24, 38  # IN is not a multiple of 4 or 8: partial n:m groups, ragged mask bytes


def make_weight(dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((OUT, IN)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.05] = 0.0  # some existing zeros
    weight[3, :8] = 0.75  # ties
    return weight.astype(dtype)


def bits(array: np.ndarray) -> np.ndarray:
    """Bit patterns with -0.0 folded into +0.0 (a pruned position is +0.0)."""
    array = np.where(array == 0, np.zeros((), array.dtype), array)
    return array.view(f"u{array.dtype.itemsize}")


CASES = {
    "magnitude": (dict(target_sparsity=0.5), lambda w: ref_magnitude(w, 0.5)),
    "magnitude-0.8": (dict(target_sparsity=0.8), lambda w: ref_magnitude(w, 0.8)),
    "block4": (dict(target_sparsity=0.5, block_size=4), lambda w: ref_block(w, 0.5, 4, 0)),
    "block5-partial": (dict(target_sparsity=0.3, block_size=5), lambda w: ref_block(w, 0.3, 5, 0)),
    "2:4": (dict(target_sparsity=None, n_m_ratio=(2, 4)), lambda w: ref_nm(w, 2, 4, 1)),
    "3:8": (dict(target_sparsity=None, n_m_ratio=(3, 8)), lambda w: ref_nm(w, 3, 8, 1)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", list(CASES))
def test_runtime_rebuilds_exact_pruned_weight(case: str, dtype: type, asset_path: Path) -> None:
    kwargs, reference = CASES[case]
    weight = make_weight(dtype)
    program = sparsify_weights(linear_program(weight), weight_num_threshold=0, **kwargs)
    rebuilt = read_back_linear(program, IN, dtype, asset_path)
    expected = reference(weight)
    assert rebuilt.dtype == weight.dtype
    assert np.array_equal(bits(rebuilt), bits(expected))


def test_zero_count_is_max_of_target_and_existing(asset_path: Path) -> None:
    weight = make_weight(np.float32)
    weight[:, : IN // 2 + 3] = 0.0  # more than 40% zeros already
    existing = int(np.count_nonzero(weight == 0))
    program = sparsify_weights(linear_program(weight), target_sparsity=0.4, weight_num_threshold=0)
    rebuilt = read_back_linear(program, IN, np.float32, asset_path)
    assert np.count_nonzero(rebuilt == 0) == max(int(weight.size * 0.4), existing)


@pytest.mark.parametrize("sparsity", [0.0, 1.0])
def test_extreme_sparsities(sparsity: float, asset_path: Path) -> None:
    weight = make_weight(np.float32)
    program = sparsify_weights(
        linear_program(weight), target_sparsity=sparsity, weight_num_threshold=0
    )
    rebuilt = read_back_linear(program, IN, np.float32, asset_path)
    assert np.array_equal(bits(rebuilt), bits(ref_magnitude(weight, sparsity)))


def test_weight_in_invoked_private_graph(asset_path: Path) -> None:
    weight = make_weight(np.float32)
    program = sparsify_weights(nested_program(weight), weight_num_threshold=0)
    rebuilt = read_back_linear(program, IN, np.float32, asset_path)
    assert np.array_equal(bits(rebuilt), bits(ref_magnitude(weight, 0.5)))


@pytest.mark.parametrize(("threshold", "compressed"), [(OUT * IN, True), (OUT * IN + 1, False)])
def test_threshold_is_a_minimum_count(threshold: int, compressed: bool, asset_path: Path) -> None:
    weight = make_weight(np.float32)
    program = sparsify_weights(linear_program(weight), weight_num_threshold=threshold)
    rebuilt = read_back_linear(program, IN, np.float32, asset_path)
    expected = ref_magnitude(weight, 0.5) if compressed else weight
    assert np.array_equal(bits(rebuilt), bits(expected))


def test_weight_in_a_namespaced_graph(asset_path: Path) -> None:
    from typing import Annotated

    import coreai.authoring as ca
    from coreai.authoring import AIProgram, Module, TensorType, Value, graph
    from coreai.authoring.namespace import NamespaceOp

    from coreai_opt.coreai_utils.validation import entry_points, runtime_function
    from tests.helpers import run_program

    weight = make_weight(np.float32)
    module = Module.create()
    with module, NamespaceOp("ns"):

        @graph
        def inner(
            x: Annotated[Value, TensorType((IN, IN), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((IN, OUT), np.float32, name="y")]:
            return ca.batch_matmul(x, ca.transpose(weight, np.array([1, 0], np.uint32)))

    program = sparsify_weights(AIProgram(module), weight_num_threshold=0)
    assert entry_points(program) == ["ns.inner"]
    function = runtime_function("ns.inner")
    rebuilt = run_program(program, {"x": np.eye(IN, dtype=np.float32)}, asset_path, function)["y"].T
    assert np.array_equal(bits(rebuilt), bits(ref_magnitude(weight, 0.5)))
