"""Readable weight names from the program's debug information."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from coreai_opt.cli.demo_model import build_demo_program
from coreai_opt.coreai_utils.ir.names import unique_paths
from coreai_opt.coreai_utils.ir.weights import find_weights
from tests.helpers import nested_program
from tests.torch_models import CNN, MLP, TinyTransformer, convert


def paths(program: object) -> list[tuple[str, str, str | None]]:
    sites = find_weights(program._module._mlir_module)  # type: ignore[attr-defined]
    return [(s.id, s.path, s.source) for s in sites]


def test_mlp_paths_follow_the_module_call_stack() -> None:
    program = convert(MLP().eval(), {"x": torch.randn(5, 24)}, debug=True)
    line = MLP.forward.__code__.co_firstlineno + 1  # the model's own line calling the layers
    assert paths(program) == [
        ("@main/w0", "MLP$1/Linear$1", f"torch_models.py:{line}"),
        ("@main/w1", "MLP$1/Linear$2", f"torch_models.py:{line}"),
        ("@main/w2", "MLP$1/Linear$3", f"torch_models.py:{line}"),
    ]


def test_cnn_and_transformer_paths() -> None:
    cnn = paths(convert(CNN().eval(), {"x": torch.randn(2, 3, 6, 6)}, debug=True))
    assert [p for _, p, _ in cnn] == ["CNN$1/Conv2d$1", "CNN$1/Conv2d$2", "CNN$1/Linear$1"]
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    transformer = paths(convert(TinyTransformer().eval(), {"ids": ids}, debug=True))
    names = [p for _, p, _ in transformer]
    assert names[0] == "TinyTransformer$1/Embedding$1"
    assert names[1:] == [f"TinyTransformer$1/Linear${k}" for k in range(1, 8)]
    assert all(source and source.startswith("torch_models.py:") for _, _, source in transformer)


def test_paths_are_unique_and_stable_across_conversions() -> None:
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    model = TinyTransformer().eval()
    first = paths(convert(model, {"ids": ids}, debug=True))
    second = paths(convert(model, {"ids": ids}, debug=True))
    assert first == second
    assert len({p for _, p, _ in first}) == len(first)


def test_release_and_authored_programs_fall_back_to_the_id() -> None:
    release = paths(convert(MLP().eval(), {"x": torch.randn(5, 24)}))
    assert [(i, p, s) for i, p, s in release] == [
        (f"@main/w{k}", f"@main/w{k}", None) for k in range(3)
    ]
    demo = paths(build_demo_program())
    assert [p for _, p, _ in demo] == [f"@main/w{k}" for k in range(8)]
    assert {s for _, _, s in demo} == {"demo_model.py:53"}
    nested = paths(nested_program(np.ones((4, 4), np.float32)))
    assert [p for _, p, _ in nested] == ["@inner/w0"]


class TwoWeights(torch.nn.Module):
    """Two weight parameters in one module: the same call stack."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(8, 8))
        self.b = torch.nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a) @ self.b


def test_shared_call_stacks_get_numbered() -> None:
    program = convert(TwoWeights().eval(), {"x": torch.randn(2, 8)}, debug=True)
    assert [p for _, p, _ in paths(program)] == ["TwoWeights$1", "TwoWeights$1#2"]


@given(st.lists(st.sampled_from(["a", "b", "a#2", "c"]), max_size=12))
def test_unique_paths(names: list[str]) -> None:
    unique = unique_paths(names)
    assert len(set(unique)) == len(unique) == len(names)
    assert all(u == n or u.startswith(f"{n}#") for u, n in zip(unique, names, strict=True))
    assert unique_paths(names) == unique
