"""Run a saved Core AI asset on the Core AI runtime (public ``coreai`` API only)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterable
from contextlib import closing
from pathlib import Path

import numpy as np
from coreai.authoring import AIModelAsset
from coreai.runtime import NDArray

__all__ = ["run_asset", "run_samples"]


def run_samples(
    asset: AIModelAsset | Path | str,
    samples: Iterable[dict[str, np.ndarray]],
    function: str = "main",
) -> Generator[dict[str, np.ndarray], None, None]:
    """Run ``function`` of an ``.aimodel`` asset on each sample in turn; outputs by name.

    The asset is compiled and loaded once. Inputs must have the exact dtypes and static
    shapes the function declares. Outputs are yielded one sample at a time, so a caller that
    reduces them holds one sample's outputs at once.
    """
    loaded = asset if isinstance(asset, AIModelAsset) else AIModelAsset.load(Path(asset))
    loop = asyncio.new_event_loop()
    try:
        executable = loaded.executable()
        model = loop.run_until_complete(executable.__aenter__())
        try:
            fn = model.load_function(function)
            if fn is None:
                msg = f"the asset has no function {function!r}; it has {model.function_names}"
                raise ValueError(msg)
            for inputs in samples:
                arrays = {name: NDArray(np.ascontiguousarray(v)) for name, v in inputs.items()}
                outputs = loop.run_until_complete(fn(arrays))
                yield {name: np.array(value.numpy()) for name, value in outputs.items()}
        finally:
            loop.run_until_complete(executable.__aexit__(None, None, None))
    finally:
        loop.close()


def run_asset(
    asset: AIModelAsset | Path | str,
    inputs: dict[str, np.ndarray],
    function: str = "main",
) -> dict[str, np.ndarray]:
    """Run ``function`` of an ``.aimodel`` asset with ``inputs``; outputs by name.

    Inputs must have the exact dtypes and static shapes the function declares.
    """
    with closing(run_samples(asset, [inputs], function)) as outputs:
        return next(outputs)
