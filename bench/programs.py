"""Synthetic benchmark programs built with ``coreai.authoring`` (deterministic weights)."""

from dataclasses import dataclass
from typing import Annotated

import coreai.authoring as ca
import numpy as np
from coreai.authoring import AIProgram, Module, TensorType, Value, graph

_T = np.array([1, 0], dtype=np.uint32)
_ONE = np.array([1, 1], dtype=np.uint32)


@dataclass(frozen=True)
class Case:
    """A benchmark program and its weights (numpy copies for the floor measurement)."""

    name: str
    weights: list[np.ndarray]
    program: AIProgram

    @property
    def parameters(self) -> int:
        return sum(w.size for w in self.weights)

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


def _random(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: type, std: float = 0.02
) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(dtype)


def linear(size: int = 4096) -> Case:
    """One ``size x size`` fp32 linear layer."""
    weight = _random(np.random.default_rng(0), (size, size), np.float32)
    module = Module.create()
    with module:

        @graph  # type: ignore[untyped-decorator]
        def main(
            x: Annotated[Value, TensorType((1, size), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((1, size), np.float32, name="y")]:
            return ca.batch_matmul(x, ca.transpose(weight, _T))

    return Case(f"linear {size}x{size} fp32", [weight], AIProgram(module))


def transformer_stack(layers: int, dim: int = 2048, tokens: int = 1, std: float = 0.02) -> Case:
    """``layers`` fp16 blocks of q, k, v, o (dim x dim) and an MLP (4*dim), 12*dim^2 each,
    on ``tokens`` rows. Weights ~ N(0, ``std``): the default 0.02 overflows fp16 after a few
    blocks (fine for the passes, which never run it); 0.005 keeps the activations finite
    (for calibration)."""
    rng = np.random.default_rng(1)
    shapes = [(dim, dim)] * 4 + [(4 * dim, dim), (dim, 4 * dim)]
    weights = [_random(rng, shape, np.float16, std) for _ in range(layers) for shape in shapes]
    module = Module.create()
    with module:

        @graph  # type: ignore[untyped-decorator]
        def main(
            x: Annotated[Value, TensorType((tokens, dim), np.float16, name="x")],
        ) -> Annotated[Value, TensorType((tokens, dim), np.float16, name="y")]:
            h = x
            for layer in range(layers):
                q, k, v, o, up, down = weights[6 * layer : 6 * layer + 6]
                mixed = ca.add(
                    ca.add(
                        ca.batch_matmul(h, ca.transpose(q, _T)),
                        ca.batch_matmul(h, ca.transpose(k, _T)),
                    ),
                    ca.batch_matmul(h, ca.transpose(v, _T)),
                )
                h = ca.add(h, ca.batch_matmul(mixed, ca.transpose(o, _T)))
                h = ca.add(
                    h,
                    ca.batch_matmul(
                        ca.relu(ca.batch_matmul(h, ca.transpose(up, _T))), ca.transpose(down, _T)
                    ),
                )
            return h

    billions = 12 * dim * dim * layers / 1e9
    return Case(f"fp16 stack {layers}x{dim} ({billions:.2f}B)", weights, AIProgram(module))


_CONV_CHANNELS = [(64, 3, 7), (64, 64, 3), (64, 64, 3), (128, 64, 3), (128, 128, 3), (256, 128, 3),
                  (256, 256, 3), (512, 256, 3), (512, 512, 3), (512, 512, 3)]  # fmt: skip


def conv_net() -> Case:
    """A ResNet-shaped stack of fp32 3x3 (and one 7x7) convolutions, 1x1 spatial."""
    rng = np.random.default_rng(2)
    weights = [_random(rng, (out, inp, k, k), np.float32) for out, inp, k in _CONV_CHANNELS]
    module = Module.create()
    with module:

        @graph  # type: ignore[untyped-decorator]
        def main(
            x: Annotated[Value, TensorType((1, 3, 7, 7), np.float32, name="x")],
        ) -> Annotated[Value, TensorType((1, 512, 1, 1), np.float32, name="y")]:
            h = ca.conv2d(x, weights[0], _ONE, _ONE, np.array(1, dtype=np.uint32))
            for weight in weights[1:]:
                pad = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.uint32)
                padded = ca.pad(h, pad, np.array(0, dtype=np.float32))
                h = ca.relu(ca.conv2d(padded, weight, _ONE, _ONE, np.array(1, dtype=np.uint32)))
            return h

    return Case("conv net fp32", weights, AIProgram(module))
