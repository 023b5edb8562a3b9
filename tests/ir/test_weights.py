"""Which constants are weights, and their channel axes, for every consumer pattern."""

from collections.abc import Callable
from typing import Annotated

import coreai.authoring as ca
import numpy as np
from coreai._compiler.ir import Module as IRModule
from coreai.authoring import AIProgram, Context, Module, TensorType, Value, graph
from coreai.authoring.constant import constant

from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite, find_weights

F32 = np.float32
U32 = np.uint32


def sites_of(
    body: Callable[[Value], Value], in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[WeightSite]:
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType(in_shape, F32, name="x")],
        ) -> Annotated[Value, TensorType(out_shape, F32, name="y")]:
            return body(x)

    return find_weights(AIProgram(module)._module._mlir_module)


def w(*shape: int) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=F32).reshape(shape) + 1


def one(site: list[WeightSite]) -> tuple[LayerKind, int | None, int | None]:
    assert len(site) == 1
    return site[0].kind, site[0].out_axis, site[0].in_axis


def test_torch_linear_through_transpose() -> None:
    sites = sites_of(
        lambda x: ca.batch_matmul(x, ca.transpose(w(6, 4), np.array([1, 0], U32))), (3, 4), (3, 6)
    )
    assert one(sites) == (LayerKind.LINEAR, 0, 1)
    assert sites[0].shape == (6, 4)
    assert sites[0].consumers == ("coreai.transpose",)


def test_weight_as_second_matmul_operand_is_in_by_out() -> None:
    assert one(sites_of(lambda x: ca.batch_matmul(x, w(4, 6)), (3, 4), (3, 6))) == (
        LayerKind.LINEAR,
        1,
        0,
    )


def test_weight_as_first_matmul_operand_is_out_by_in() -> None:
    assert one(sites_of(lambda x: ca.batch_matmul(w(6, 3), x), (3, 4), (6, 4))) == (
        LayerKind.LINEAR,
        0,
        1,
    )


def test_batched_weight_through_permutation() -> None:
    # W [2, out=5, in=4] -> transpose (0, 2, 1) -> [2, 4, 5] as matmul rhs
    sites = sites_of(
        lambda x: ca.batch_matmul(x, ca.transpose(w(2, 5, 4), np.array([0, 2, 1], U32))),
        (2, 3, 4),
        (2, 3, 5),
    )
    assert one(sites) == (LayerKind.LINEAR, 1, 2)


CHAINED = """
coreai.graph @main(%x: tensor<3x2x4xf32>) -> tensor<3x2x6xf32> {
  %w = coreai.constant dense<1.0> : tensor<6x2x4xf32>
  %p1 = coreai.constant dense<[1, 0, 2]> : tensor<3xui32>
  %p2 = coreai.constant dense<[0, 2, 1]> : tensor<3xui32>
  %t1 = coreai.transpose %w, %p1 : (tensor<6x2x4xf32>, tensor<3xui32>) -> tensor<2x6x4xf32>
  %t2 = coreai.transpose %t1, %p2 : (tensor<2x6x4xf32>, tensor<3xui32>) -> tensor<2x4x6xf32>
  %x2 = coreai.transpose %x, %p1 : (tensor<3x2x4xf32>, tensor<3xui32>) -> tensor<2x3x4xf32>
  %y = coreai.batch_matmul %x2, %t2 : (tensor<2x3x4xf32>, tensor<2x4x6xf32>) -> tensor<2x3x6xf32>
  %y2 = coreai.transpose %y, %p1 : (tensor<2x3x6xf32>, tensor<3xui32>) -> tensor<3x2x6xf32>
  coreai.output %y2 : tensor<3x2x6xf32>
}
"""


def test_chained_transposes_compose() -> None:
    # W [6, 2, 4] -(1,0,2)-> [2, 6, 4] -(0,2,1)-> [2, 4, 6] = matmul rhs [batch, in, out]:
    # rhs axes in=1, out=2 map to t1 axes 2, 1, and to W axes 2, 0.
    with Context()._mlir_context:
        module = IRModule.parse(CHAINED)
        assert one(find_weights(module)) == (LayerKind.LINEAR, 0, 2)


def test_conv2d_weight() -> None:
    one_two = np.array([1, 1], U32)
    sites = sites_of(
        lambda x: ca.conv2d(x, w(6, 2, 3, 3), one_two, one_two, np.array(2, U32)),
        (1, 4, 5, 5),
        (1, 6, 3, 3),
    )
    assert one(sites) == (LayerKind.CONV, 0, 1)


def test_conv_transpose2d_weight_is_in_by_out() -> None:
    ones, zeros = np.array([1, 1], U32), np.array([0, 0], U32)
    sites = sites_of(
        lambda x: ca.conv_transpose2d(x, w(4, 3, 3, 3), ones, zeros, ones, zeros, np.array(1, U32)),
        (1, 4, 5, 5),
        (1, 3, 7, 7),
    )
    assert one(sites) == (LayerKind.CONV, 1, 0)


def test_embedding_table() -> None:
    module = Module.create()
    with module:

        @graph
        def main(
            ids: Annotated[Value, TensorType((3,), np.int32, name="ids")],
        ) -> Annotated[Value, TensorType((3, 4), F32, name="y")]:
            return ca.gather_nd(w(10, 4), ca.reshape(ids, np.array([3, 1], U32)))

    sites = find_weights(AIProgram(module)._module._mlir_module)
    assert one(sites) == (LayerKind.EMBEDDING, 0, 1)
    assert not sites[0].structured


def test_tied_embedding_and_head_agree_on_axes() -> None:
    module = Module.create()
    with module:

        @graph
        def main(
            ids: Annotated[Value, TensorType((3,), np.int32, name="ids")],
        ) -> Annotated[Value, TensorType((3, 10), F32, name="y")]:
            table = constant(w(10, 4))
            h = ca.gather_nd(table, ca.reshape(ids, np.array([3, 1], U32)))
            return ca.batch_matmul(h, ca.transpose(table, np.array([1, 0], U32)))

    sites = find_weights(AIProgram(module)._module._mlir_module)
    # reported (and selected by kind:embedding) as the embedding it is; the matmul keeps
    # the structured modes open to it
    assert one(sites) == (LayerKind.EMBEDDING, 0, 1)
    assert sites[0].structured
    assert sites[0].consumers == ("coreai.gather_nd", "coreai.transpose")


def test_disagreeing_axes_are_unknown() -> None:
    def body(x: Value) -> Value:
        shared = constant(w(4, 4))
        return ca.add(
            ca.batch_matmul(x, shared),
            ca.batch_matmul(x, ca.transpose(shared, np.array([1, 0], U32))),
        )

    assert one(sites_of(body, (3, 4), (3, 4))) == (LayerKind.OTHER, None, None)


TRANSPOSE_INTO_ADD = """
coreai.graph @main(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  %w = coreai.constant dense<1.0> : tensor<4x3xf32>
  %p = coreai.constant dense<[1, 0]> : tensor<2xui32>
  %t = coreai.transpose %w, %p : (tensor<4x3xf32>, tensor<2xui32>) -> tensor<3x4xf32>
  %y = coreai.add %x, %t : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  coreai.output %y : tensor<3x4xf32>
}
"""


def test_transpose_into_non_weight_op_is_candidate_without_axes() -> None:
    # transpose is a weight-consuming op (the spec's list); its result's use decides no axes
    with Context()._mlir_context:
        module = IRModule.parse(TRANSPOSE_INTO_ADD)
        assert one(find_weights(module)) == (LayerKind.OTHER, None, None)


def test_bias_like_constant_is_not_a_weight() -> None:
    assert sites_of(lambda x: ca.add(x, w(3, 4)), (3, 4), (3, 4)) == []


def test_integer_constant_is_not_a_weight() -> None:
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((3, 4), np.int32, name="x")],
        ) -> Annotated[Value, TensorType((3, 6), np.int32, name="y")]:
            return ca.batch_matmul(x, np.ones((4, 6), dtype=np.int32))

    assert find_weights(AIProgram(module)._module._mlir_module) == []


def test_constant_with_weight_and_other_consumers_is_not_a_weight() -> None:
    def body(x: Value) -> Value:
        shared = constant(w(4, 4))
        return ca.add(ca.batch_matmul(x, shared), ca.broadcasting_add(x, shared))

    assert sites_of(body, (4, 4), (4, 4)) == []


def test_names_are_graph_scoped_ordinals() -> None:
    sites = sites_of(
        lambda x: ca.batch_matmul(ca.batch_matmul(x, w(4, 4)), w(4, 5)), (3, 4), (3, 5)
    )
    assert [s.name.split(" ")[0] for s in sites] == ["@main/w0", "@main/w1"]
    assert all("test_weights.py:" in s.name for s in sites)
