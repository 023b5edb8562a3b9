"""Converted torch models, compressed, run on the runtime and compared with torch."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from coreai_opt.coreai_utils import sparsify_weights
from tests.helpers import run_program
from tests.reference import ref_block, ref_magnitude, ref_nm
from tests.torch_models import CNN, MLP, TinyTransformer, convert, with_weights

THRESHOLD = 64


def expected_pruning(mode: str) -> Callable[[str, nn.Module, np.ndarray], np.ndarray]:
    def transform(name: str, layer: nn.Module, w: np.ndarray) -> np.ndarray:
        if w.size < THRESHOLD:
            return w
        embedding = isinstance(layer, nn.Embedding)
        if mode == "magnitude" or (mode == "block" and embedding):
            return ref_magnitude(w, 0.5)
        if mode == "block":
            return ref_block(w, 0.5, 4, axis=0)
        if embedding or w.shape[1] < 4:  # n:m needs m input channels (conv1 has 3)
            return w
        return ref_nm(w, 2, 4, axis=1)

    return transform


MODE_ARGS: dict[str, dict[str, Any]] = {
    "magnitude": dict(target_sparsity=0.5),
    "block": dict(target_sparsity=0.5, block_size=4),
    "n:m": dict(target_sparsity=None, n_m_ratio=(2, 4)),
}


def build(kind: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    if kind == "mlp":
        return MLP().eval(), {"x": torch.randn(5, 24)}
    if kind == "cnn":
        return CNN().eval(), {"x": torch.randn(2, 3, 6, 6)}
    return TinyTransformer().eval(), {"ids": torch.randint(0, 64, (2, 7), dtype=torch.int32)}


@pytest.mark.parametrize("mode", list(MODE_ARGS))
@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer"])
def test_compressed_model_matches_torch_with_pruned_weights(
    kind: str, mode: str, asset_path: Path
) -> None:
    model, inputs = build(kind)
    program = convert(model, inputs)
    compressed = sparsify_weights(program, weight_num_threshold=THRESHOLD, **MODE_ARGS[mode])
    got = run_program(compressed, {k: v.numpy() for k, v in inputs.items()}, asset_path)["y"]
    with torch.no_grad():
        expected = with_weights(model, expected_pruning(mode))(*inputs.values()).numpy()
        dense = model(*inputs.values()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, dense, rtol=1e-3, atol=1e-3), "pruning changed nothing"
