"""Building small Core AI programs and running them on the Core AI runtime."""


import asyncio
from pathlib import Path
from typing import Annotated, Any

import coreai.authoring as ca
import numpy as np
from coreai.authoring import AIModelAsset, AIProgram, Module, TensorType, Value, graph
from coreai.runtime import NDArray

_PERM_T = np.array([1, 0], dtype=np.uint32)


def run_asset(asset: AIModelAsset, inputs: dict[str, np.ndarray], function: str = "main") -> dict[str, np.ndarray]:
    """Run ``function`` of a saved asset on the Core AI runtime."""

    async def _run() -> dict[str, np.ndarray]:
        async with asset.executable() as model:
            fn = model.load_function(function)
            assert fn is not None, f"no function {function}"
            out = await fn({k: NDArray(np.ascontiguousarray(v)) for k, v in inputs.items()})
            return {k: np.array(v.numpy()) for k, v in out.items()}  # type: ignore[union-attr]

    return asyncio.run(_run())


def run_program(program: AIProgram, inputs: dict[str, np.ndarray], path: Path, function: str = "main") -> dict[str, np.ndarray]:
    """Verify, save to ``path`` (a .aimodel), load back and run."""
    asset = program.save_asset(path)
    reloaded = AIModelAsset.load(asset.path)
    return run_asset(reloaded, inputs, function)


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
