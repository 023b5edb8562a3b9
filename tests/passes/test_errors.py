"""Every documented error, raised before the program is touched, naming the argument."""

from typing import Any

import numpy as np
import pytest

from coreai_opt.coreai_utils import DType, sparsify_weights
from tests.helpers import linear_program


@pytest.fixture(scope="module")
def program() -> Any:
    return linear_program(np.ones((8, 8), dtype=np.float32))


VALUE_ERRORS = [
    (dict(target_sparsity=0.5, n_m_ratio=(2, 4)), "mutually exclusive"),
    (dict(target_sparsity=None, n_m_ratio=None), "one of target_sparsity and n_m_ratio"),
    (dict(quantize_dtype=DType.INT8, palettize_nbits=4), "quantize_dtype .* palettize_nbits"),
    (dict(quantize_dtype=DType.INT4), "quantize_dtype must be"),
    (dict(quantize_dtype=DType.FP16), "quantize_dtype must be"),
    (dict(quantize_dtype="float8"), "quantize_dtype must be"),
    (dict(quantize_dtype=8), "quantize_dtype must be"),
    (dict(palettize_nbits=5), "palettize_nbits must be one of"),
    (dict(palettize_nbits=0), "palettize_nbits must be one of"),
    (dict(palettize_nbits=True), "palettize_nbits must be one of"),
    (dict(palettize_nbits=4.0), "palettize_nbits must be one of"),
    (dict(block_size=1), "block_size must be greater than 1, got 1"),
    (dict(block_size=0), "block_size must be greater than 1"),
    (dict(block_size=-4), "block_size must be greater than 1"),
    (dict(target_sparsity=None, n_m_ratio=(2, 4, 8)), "n_m_ratio must have length 2"),
    (dict(target_sparsity=None, n_m_ratio=(2,)), "n_m_ratio must have length 2"),
    (dict(target_sparsity=None, n_m_ratio=(2.0, 4)), "n_m_ratio must contain integers"),
    (dict(target_sparsity=None, n_m_ratio=(True, 4)), "n_m_ratio must contain integers"),
    (dict(target_sparsity=None, n_m_ratio=(1, 0)), "m > 0"),
    (dict(target_sparsity=None, n_m_ratio=(0, -2)), "m > 0"),
    (dict(target_sparsity=None, n_m_ratio=(5, 4)), r"n in \[0, m\]"),
    (dict(target_sparsity=None, n_m_ratio=(-1, 4)), r"n in \[0, m\]"),
    (dict(target_sparsity=None, n_m_ratio=5), "n_m_ratio must be a pair"),
    (dict(target_sparsity=1.5), r"target_sparsity must be in \[0, 1\], got 1.5"),
    (dict(target_sparsity=-0.1), r"target_sparsity must be in \[0, 1\]"),
    (dict(target_sparsity=float("nan")), "target_sparsity must be in"),
    (dict(weight_num_threshold=-1), "weight_num_threshold must be non-negative"),
    (dict(block_size=4, target_sparsity=None, n_m_ratio=(2, 4)), "block_size .* n_m_ratio"),
]


@pytest.mark.parametrize(("kwargs", "message"), VALUE_ERRORS, ids=[str(k) for k, _ in VALUE_ERRORS])
def test_value_errors(program: Any, kwargs: dict[str, Any], message: str) -> None:
    before = str(program)
    with pytest.raises(ValueError, match=message):
        sparsify_weights(program, **kwargs)
    assert str(program) == before


TYPE_ERRORS = [
    (dict(target_sparsity="0.5"), "target_sparsity must be a real number"),
    (dict(target_sparsity=True), "target_sparsity must be a real number"),
    (dict(block_size=4.0), "block_size must be an int"),
    (dict(block_size=True), "block_size must be an int"),
    (dict(weight_num_threshold=10.5), "weight_num_threshold must be an int"),
    (dict(weight_num_threshold=None), "weight_num_threshold must be an int"),
    (dict(in_place="yes"), "in_place must be a bool"),
]


@pytest.mark.parametrize(("kwargs", "message"), TYPE_ERRORS, ids=[str(k) for k, _ in TYPE_ERRORS])
def test_type_errors(program: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        sparsify_weights(program, **kwargs)


def test_wrong_type_errors_are_also_value_errors(program: Any) -> None:
    with pytest.raises(ValueError, match="target_sparsity"):
        sparsify_weights(program, target_sparsity="half")


@pytest.mark.parametrize("not_a_program", [None, "model.aimodel", np.zeros(3)])
def test_program_must_be_aiprogram(not_a_program: Any) -> None:
    with pytest.raises(TypeError, match=r"coreai_program must be a coreai\.authoring\.AIProgram"):
        sparsify_weights(not_a_program)


def test_string_dtype_values_accepted(program: Any) -> None:
    from coreai_opt.coreai_utils.passes.options import validate_options

    options = validate_options(
        target_sparsity=0.5,
        block_size=None,
        n_m_ratio=[2, 4][:0] or None,
        quantize_dtype="int8",
        palettize_nbits=None,
        weight_num_threshold=0,
    )
    assert options.quantize_dtype is DType.INT8


def test_numpy_scalars_accepted(program: Any) -> None:
    from coreai_opt.coreai_utils.passes.options import validate_options

    options = validate_options(
        target_sparsity=np.float32(0.25),
        block_size=np.int64(4),
        n_m_ratio=None,
        quantize_dtype=None,
        palettize_nbits=None,
        weight_num_threshold=np.int32(7),
    )
    assert (options.target_sparsity, options.block_size, options.weight_num_threshold) == (
        0.25,
        4,
        7,
    )
