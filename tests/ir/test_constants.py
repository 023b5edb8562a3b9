"""Reading constants in every storage form, and the bytecode reader behind resource blobs."""

import io
import mmap

import ml_dtypes
import numpy as np
import pytest
from coreai._compiler._mlir_libs._coreaiIR._bindings.mlir.dialects.coreai import (
    create_elements_attr,
)
from coreai._compiler.dialects._coreai_ops_gen import ConstantOp
from coreai._compiler.ir import (
    BF16Type,
    DenseElementsAttr,
    DenseResourceElementsAttr,
    F16Type,
    F32Type,
    FloatAttr,
    InsertionPoint,
    Location,
    Module,
    Operation,
    RankedTensorType,
)
from coreai.authoring import Context

from coreai_opt.coreai_utils.ir.bytecode import (
    BytecodeError,
    check_bytecode,
    resource_blob,
    resource_section,
)
from coreai_opt.coreai_utils.ir.constants import (
    MAPPED_BYTES,
    ConstantReadError,
    _blob_buffer,
    make_constant,
    read_constant,
)

TYPES = {
    "f32": (np.dtype(np.float32), F32Type.get),
    "f16": (np.dtype(np.float16), F16Type.get),
    "bf16": (np.dtype(ml_dtypes.bfloat16), BF16Type.get),
}


@pytest.fixture
def block() -> object:
    """An active context, location and insertion point in a fresh module."""
    with Context()._mlir_context, Location.unknown():
        module = Module.create()
        with InsertionPoint(module.body):
            yield module


def sample(dtype: np.dtype, size: int) -> np.ndarray:
    values = np.random.default_rng(size).standard_normal(size).astype(np.float32) * 100
    values[:4] = [np.inf, -np.inf, -0.0, 0.0][: min(4, size)]
    return values.astype(dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(
        np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))
    )


def constant_op(attr: object) -> Operation:
    return ConstantOp(value=attr).operation


@pytest.mark.parametrize("name", list(TYPES))
@pytest.mark.parametrize("size", [1, 6, 100, 101, 700, 5000])
def test_elements_attr_roundtrip(block: object, name: str, size: int) -> None:
    """create_elements_attr (what coreai-torch uses): inline for small, resource for large."""
    dtype, mlir = TYPES[name]
    data = sample(dtype, size).reshape(-1, 1)
    attr = create_elements_attr(
        Location.unknown(), RankedTensorType.get(list(data.shape), mlir()), data
    )
    assert same_bits(read_constant(constant_op(attr), dtype), data)


@pytest.mark.parametrize("name", list(TYPES))
def test_bf16_and_friends_nan_survive(block: object, name: str) -> None:
    dtype, mlir = TYPES[name]
    data = np.array([np.nan, 1.5, -np.inf], dtype=np.float32).astype(dtype)
    attr = create_elements_attr(Location.unknown(), RankedTensorType.get([3], mlir()), data)
    got = read_constant(constant_op(attr), dtype)
    assert np.isnan(got[0].astype(np.float32)) and same_bits(got[1:], data[1:])


@pytest.mark.parametrize("name", list(TYPES))
def test_splat(block: object, name: str) -> None:
    dtype, mlir = TYPES[name]
    attr = DenseElementsAttr.get_splat(
        RankedTensorType.get([3, 5], mlir()), FloatAttr.get(mlir(), -2.25)
    )
    got = read_constant(constant_op(attr), dtype)
    assert got.shape == (3, 5) and np.all(got.astype(np.float32) == -2.25)


@pytest.mark.parametrize("name", list(TYPES))
def test_resource_roundtrip_with_several_uses(block: object, name: str) -> None:
    dtype, mlir = TYPES[name]
    data = sample(dtype, 24).reshape(4, 6)
    result = make_constant(data, data.shape, mlir())
    ConstantOp(value=DenseElementsAttr.get(np.zeros(2, np.float32)))
    # two users: writing such an op's bytecode directly would abort the process
    from coreai._compiler.dialects import _coreai_ops_gen as ops

    ops.add(result, result)
    ops.add(result, result)
    got = read_constant(result.owner.operation, dtype)
    assert same_bits(got, data)
    assert not got.flags.writeable


def test_inline_f32(block: object) -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    op = constant_op(DenseElementsAttr.get(data))
    assert same_bits(read_constant(op, np.dtype(np.float32)), data)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0, 2)])
def test_zero_size(block: object, shape: tuple[int, ...]) -> None:
    data = np.zeros(shape, dtype=np.float32)
    op = constant_op(DenseElementsAttr.get(data))
    assert read_constant(op, np.dtype(np.float32)).shape == shape


def test_elided_resource_is_a_read_error() -> None:
    """A resource without its blob (``dense_resource<__elided__>``) raises."""
    text = (
        "func.func @f() -> tensor<4x3xf32> {\n"
        '  %0 = "coreai.constant"() {value = dense_resource<__elided__> : tensor<4x3xf32>}'
        " : () -> tensor<4x3xf32>\n"
        "  return %0 : tensor<4x3xf32>\n}"
    )
    with Context()._mlir_context:
        module = Module.parse(text)
        op = module.body.operations[0].regions[0].blocks[0].operations[0]
        with pytest.raises(ConstantReadError, match="holds 0 bytes"):
            read_constant(op, np.dtype(np.float32))


@pytest.mark.parametrize("held", [1000, 1999, 2001, 3000])
def test_a_blob_of_the_wrong_size_is_a_read_error(block: object, held: int) -> None:
    """The bindings accept a blob shorter or longer than its type; the read refuses both."""
    data = np.arange(held, dtype=np.float32)
    attr = DenseResourceElementsAttr.get_from_buffer(
        data, "odd", RankedTensorType.get([2000], F32Type.get())
    )
    with pytest.raises(ConstantReadError, match="not the 8000 bytes"):
        read_constant(constant_op(attr), np.dtype(np.float32))


@pytest.mark.parametrize("held", [3, 5, 8])
def test_a_small_blob_of_the_wrong_size_is_a_read_error(block: object, held: int) -> None:
    """Below the one-piece shortcut the blob's own size field decides: the read took the
    section's last 16 bytes and returned wrong values for these."""
    data = np.arange(held, dtype=np.float32)
    attr = DenseResourceElementsAttr.get_from_buffer(
        data, "odd", RankedTensorType.get([4], F32Type.get())
    )
    with pytest.raises(ConstantReadError, match=f"holds {4 * held} bytes, expected 16"):
        read_constant(constant_op(attr), np.dtype(np.float32))


def test_resource_section_of_real_bytecode(block: object) -> None:
    data = np.arange(10, dtype=np.float32)
    op = constant_op(
        DenseResourceElementsAttr.get_from_buffer(
            data, "blob", RankedTensorType.get([10], F32Type.get())
        )
    )
    buffer = io.BytesIO()
    op.write_bytecode(buffer)
    check_bytecode(buffer.getvalue())
    assert bytes(resource_section(buffer.getvalue())[-40:]) == data.tobytes()
    assert bytes(resource_blob(buffer.getvalue())) == data.tobytes()


@pytest.mark.parametrize("data", [b"", b"MLIR", b"ML\xefR", b"ML\xefR\x0dprod\x00\x05\x21"])
def test_bad_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(BytecodeError):
        check_bytecode(data)
    with pytest.raises(BytecodeError):
        resource_section(data)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, ml_dtypes.bfloat16])
def test_a_large_blob_gets_pages_of_its_own(dtype: type) -> None:
    # so that its memory goes back to the system when its context goes, not to the C heap
    data = np.arange(MAPPED_BYTES, dtype=np.float32).astype(dtype).reshape(16, -1)
    buffer = _blob_buffer(data)
    assert not np.shares_memory(buffer, data) and buffer.ctypes.data % mmap.PAGESIZE == 0
    assert same_bits(buffer, data) and buffer.dtype == data.dtype
    assert not buffer.flags.writeable and buffer.flags.c_contiguous
    small = np.arange(8, dtype=np.float32)
    assert np.shares_memory(_blob_buffer(small), small)


def test_a_mapped_blob_round_trips(block: object) -> None:
    data = sample(np.dtype(np.float32), MAPPED_BYTES)
    result = make_constant(data, data.shape, F32Type.get())
    assert same_bits(read_constant(result.owner.operation, np.dtype(np.float32)), data)
