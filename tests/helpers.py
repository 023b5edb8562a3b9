"""Building small Core AI programs and running them on the Core AI runtime."""

from pathlib import Path
from typing import Annotated, Any

import coreai.authoring as ca
import numpy as np
from coreai.authoring import AIProgram, Module, TensorType, Value, graph
from coreai.authoring.constant import constant

from coreai_opt.coreai_utils.runtime import run_asset

_PERM_T = np.array([1, 0], dtype=np.uint32)


def status_bytes(field: str) -> int:
    """A field of /proc/self/status (``VmRSS``, ``RssFile``...), in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def run_program(
    program: AIProgram, inputs: dict[str, np.ndarray], path: Path, function: str = "main"
) -> dict[str, np.ndarray]:
    """Verify, save to ``path`` (a .aimodel), load back and run."""
    program.save_asset(path)
    return run_asset(path, inputs, function)


def linear_program(weight: np.ndarray) -> AIProgram:
    """``y = x @ W.T`` for a torch-layout weight ``W [out, in]``; input ``x`` is ``[in, in]``.

    Run with ``x = I`` it returns ``W.T`` as the runtime reconstructed it.
    """
    out_features, in_features = weight.shape
    dtype = weight.dtype
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((in_features, in_features), dtype, name="x")],
        ) -> Annotated[Value, TensorType((in_features, out_features), dtype, name="y")]:
            return ca.batch_matmul(x, ca.transpose(weight, _PERM_T))

    return AIProgram(module)


def read_back_linear(program: AIProgram, in_features: int, dtype: Any, path: Path) -> np.ndarray:
    """The weight ``W`` of a :func:`linear_program` as the runtime rebuilds it."""
    y = run_program(program, {"x": np.eye(in_features, dtype=dtype)}, path)["y"]
    return np.ascontiguousarray(y.T)


def nested_program(weight: np.ndarray) -> AIProgram:
    """``main`` invokes a private graph that holds the linear weight ``W [out, in]``."""
    out_features, in_features = weight.shape
    dtype = weight.dtype
    module = Module.create()
    with module:

        @graph(private=True)
        def inner(
            x: Annotated[Value, TensorType((in_features, in_features), dtype, name="x")],
        ) -> Annotated[Value, TensorType((in_features, out_features), dtype, name="y")]:
            return ca.batch_matmul(x, ca.transpose(weight, _PERM_T))

        @graph
        def main(
            x: Annotated[Value, TensorType((in_features, in_features), dtype, name="x")],
        ) -> Annotated[Value, TensorType((in_features, out_features), dtype, name="y")]:
            return inner(x)[0]

    return AIProgram(module)


def both_sides_program(weight: np.ndarray) -> AIProgram:
    """``W @ x + x @ W`` for a square ``W``: the consumers disagree on its channel axes."""
    size = weight.shape[0]
    module = Module.create()
    with module:

        @graph
        def main(
            x: Annotated[Value, TensorType((size, size), weight.dtype, name="x")],
        ) -> Annotated[Value, TensorType((size, size), weight.dtype, name="y")]:
            w = constant(weight)
            return ca.add(ca.batch_matmul(w, x), ca.batch_matmul(x, w))

    return AIProgram(module)
