"""Storage and reconstruction error of every mode on the quantization test layer.

Run with ``python -m bench.modes``: builds the 256x192 fp32 layer (random normal rows
scaled over 0.2-3x), compresses it with each mode at target sparsity 0.5, reads the weight
back from the Core AI runtime, and prints a markdown table: relative error against the
pruned weight, and the saved asset's size against the dense fp32 asset.
"""

import tempfile
from pathlib import Path
from typing import Annotated, Any

import coreai.authoring as ca
import numpy as np
from coreai.authoring import AIProgram, Module, TensorType, Value, graph

from coreai_opt.coreai_utils import DType, sparsify_weights
from coreai_opt.coreai_utils.numerics import magnitude_mask, to_sparse
from coreai_opt.coreai_utils.runtime import run_asset

OUT, IN = 256, 192

_QUANT = "nnz x 8 + mask + 1 scale/out channel"
MODES: list[tuple[str, dict[str, Any], str]] = [
    ("magnitude", {}, "nnz x 32 bits + 1 bit/element mask"),
    ("magnitude + int8", {"quantize_dtype": DType.INT8}, _QUANT),
    ("magnitude + uint8", {"quantize_dtype": DType.UINT8}, _QUANT + " + 1 zero point"),
    ("magnitude + fp8_e4m3fn", {"quantize_dtype": DType.FP8_E4M3FN}, _QUANT),
    ("magnitude + fp8_e5m2", {"quantize_dtype": DType.FP8_E5M2}, _QUANT),
    *[
        (f"magnitude + palettize {n}", {"palettize_nbits": n}, f"nnz x {n} + mask + LUT of {2**n}")
        for n in (1, 2, 3, 4, 6, 8)
    ],
]


def layer() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = np.linspace(0.2, 3.0, OUT, dtype=np.float32)[:, None]
    return (rng.standard_normal((OUT, IN)).astype(np.float32) * rows).astype(np.float32)


def program(weight: np.ndarray) -> AIProgram:
    module = Module.create()
    with module:

        @graph  # type: ignore[untyped-decorator]
        def main(
            x: Annotated[Value, TensorType((IN, IN), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((IN, OUT), np.float32, name="y")]:
            return ca.batch_matmul(x, ca.transpose(weight, np.array([1, 0], dtype=np.uint32)))

    return AIProgram(module)


def asset_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    weight = layer()
    pruned = to_sparse(weight, magnitude_mask(weight, 0.5)).dense()
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = Path(tmp) / "dense.aimodel"
        program(weight).save_asset(dense_path)
        dense_size = asset_bytes(dense_path)
        print("| mode | stores per weight | bits/element | rel. error vs pruned | asset / dense |")
        print("|---|---|---|---|---|")
        for name, kwargs, stores in MODES:
            path = Path(tmp) / "m.aimodel"
            sparsify_weights(program(weight), **kwargs).save_asset(path)
            rebuilt = run_asset(path, {"x": np.eye(IN, dtype=np.float32)})["y"].T
            error = np.linalg.norm(rebuilt - pruned) / np.linalg.norm(pruned)
            size = asset_bytes(path)
            bits = (size - (dense_size - weight.nbytes)) * 8 / weight.size
            print(f"| {name} | {stores} | {bits:.2f} | {error:.2e} | {size / dense_size:.3f} |")


if __name__ == "__main__":
    main()
