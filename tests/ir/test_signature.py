"""Graph inputs for validation: names, shapes, dtypes and index bounds."""

import numpy as np
import pytest
from coreai._compiler.ir import Module as IRModule
from coreai.authoring import AIProgram, Context

from coreai_opt.coreai_utils.ir.signature import graph_inputs, graph_names
from coreai_opt.coreai_utils.validation import compare_outputs, example_inputs

PROGRAM = """
coreai.graph private @helper(%t: tensor<4xf32>) -> tensor<4xf32> {
  coreai.output %t : tensor<4xf32>
}
coreai.graph @main(%ids: tensor<6xsi32> {coreai.name = "ids"},
                   %pos: tensor<2x3xui16> {coreai.name = "pos"},
                   %flag: tensor<2xi1> {coreai.name = "flag"},
                   %x: tensor<2x5xf16> {coreai.name = "x"}) -> tensor<6x4xf32> {
  %table = coreai.constant dense<1.0> : tensor<100x4xf32>
  %small = coreai.constant dense<1.0> : tensor<30x4xf32>
  %shape = coreai.constant dense<[6, 1]> : tensor<2xui32>
  %rows = coreai.reshape %ids, %shape : (tensor<6xsi32>, tensor<2xui32>) -> tensor<6x1xsi32>
  %a = coreai.gather_nd %table at %rows : (tensor<100x4xf32>, tensor<6x1xsi32>) to tensor<6x4xf32>
  %b = coreai.gather_nd %small at %rows : (tensor<30x4xf32>, tensor<6x1xsi32>) to tensor<6x4xf32>
  %y = coreai.add %a, %b : (tensor<6x4xf32>, tensor<6x4xf32>) -> tensor<6x4xf32>
  coreai.output %y : tensor<6x4xf32>
}
"""


@pytest.fixture
def program() -> AIProgram:
    with Context()._mlir_context:
        return AIProgram._from_mlir_module(IRModule.parse(PROGRAM))


def test_public_graphs_only(program: AIProgram) -> None:
    assert graph_names(program._module._mlir_module) == ["main"]


def test_inputs_with_index_bounds(program: AIProgram) -> None:
    specs = {s.name: s for s in graph_inputs(program._module._mlir_module, "main")}
    assert list(specs) == ["ids", "pos", "flag", "x"]
    assert (specs["ids"].shape, specs["ids"].dtype, specs["ids"].high) == (
        (6,),
        np.dtype(np.int32),
        30,
    )
    assert (specs["pos"].dtype, specs["pos"].high) == (np.dtype(np.uint16), None)
    assert specs["flag"].dtype == np.dtype(np.bool_)
    assert specs["x"].dtype == np.dtype(np.float16) and specs["x"].high is None


def test_unknown_graph(program: AIProgram) -> None:
    with pytest.raises(KeyError, match="no graph named 'nope'"):
        graph_inputs(program._module._mlir_module, "nope")


def test_example_inputs_are_seeded_and_in_range(program: AIProgram) -> None:
    first, again = example_inputs(program, seed=3), example_inputs(program, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert first["ids"].dtype == np.int32 and first["ids"].min() >= 0 and first["ids"].max() < 30
    assert first["pos"].dtype == np.uint16 and first["pos"].max() < 8
    assert (
        first["flag"].dtype == np.bool_
        and first["x"].dtype == np.float16
        and first["x"].shape == (2, 5)
    )


def test_compare_outputs() -> None:
    a = {"y": np.array([1.0, 2.0]), "z": np.array([1.0, 0.0])}
    b = {"y": np.array([1.0, 2.0]), "z": np.array([0.0, 1.0])}
    y, z = compare_outputs(a, b)
    assert (y.name, y.identical, y.cosine) == ("y", True, pytest.approx(1.0))
    assert (z.name, z.identical, z.cosine, z.snr_db) == (
        "z",
        False,
        0.0,
        pytest.approx(-3.0103, abs=1e-4),
    )
