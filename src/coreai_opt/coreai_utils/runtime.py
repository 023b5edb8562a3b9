"""Run a saved Core AI asset on the Core AI runtime (public ``coreai`` API only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from coreai.authoring import AIModelAsset
from coreai.runtime import NDArray

__all__ = ["run_asset"]


def run_asset(
    asset: AIModelAsset | Path | str,
    inputs: dict[str, np.ndarray],
    function: str = "main",
) -> dict[str, np.ndarray]:
    """Run ``function`` of an ``.aimodel`` asset with ``inputs``; outputs by name.

    Inputs must have the exact dtypes and static shapes the function declares.
    """
    loaded = asset if isinstance(asset, AIModelAsset) else AIModelAsset.load(Path(asset))

    async def _run() -> dict[str, np.ndarray]:
        async with loaded.executable() as model:
            fn = model.load_function(function)
            if fn is None:
                msg = f"the asset has no function {function!r}; it has {model.function_names}"
                raise ValueError(msg)
            arrays = {name: NDArray(np.ascontiguousarray(value)) for name, value in inputs.items()}
            outputs = await fn(arrays)
            return {name: np.array(value.numpy()) for name, value in outputs.items()}

    return asyncio.run(_run())
