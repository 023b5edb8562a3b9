"""Small torch modules converted to Core AI with coreai-torch (test-only dependency)."""

import copy
from collections.abc import Callable

import coreai_torch
import numpy as np
import torch
from coreai.authoring import AIProgram
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(24, 48)
        self.fc2 = nn.Linear(48, 40)
        self.fc3 = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, groups=2)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.reshape(h.shape[0], -1))


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        b, t, d = h.shape
        x = self.norm1(h)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        h = h + self.o((attn @ v).transpose(1, 2).reshape(b, t, d))
        h = h + self.down(torch.relu(self.up(self.norm2(h))))
        return self.lm_head(h)


def convert(
    model: nn.Module, inputs: dict[str, torch.Tensor], output: str = "y", *, debug: bool = False
) -> AIProgram:
    """Convert ``model`` (eval mode) to an AIProgram with the given named inputs.

    ``debug`` keeps coreai-torch's debug metadata (module call stacks, source locations), as
    its default mode does; the tests otherwise convert in release mode.
    """
    args = tuple(inputs.values())
    mode = (
        coreai_torch.TorchConverter.Mode.DEBUG
        if debug
        else coreai_torch.TorchConverter.Mode.RELEASE
    )
    converter = coreai_torch.TorchConverter(mode=mode)
    converter.add_pytorch_module(
        model,
        export_fn=lambda m: torch.export.export(m, args=args).run_decompositions(
            coreai_torch.get_decomp_table()
        ),
        input_names=list(inputs),
        output_names=[output],
    )
    return converter.to_coreai()


def with_weights(
    model: nn.Module, transform: Callable[[str, nn.Module, np.ndarray], np.ndarray]
) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv/Embedding weights are ``transform(name, layer, w)``."""
    pruned = copy.deepcopy(model)
    for name, layer in pruned.named_modules():
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.Embedding):
            new = transform(name, layer, layer.weight.detach().numpy())
            layer.weight.data = torch.from_numpy(np.ascontiguousarray(new))
    return pruned
