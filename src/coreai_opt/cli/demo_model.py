"""The built-in demo network, authored with ``coreai.authoring``.

A small but real model with deterministic weights: token embedding (``gather_nd``),
single-head self-attention (q/k/v/o linears, ``batch_matmul`` + softmax), an MLP, and a
3x3 convolution over the features; fp32, inputs ``ids`` (int32 ``[16]``), outputs ``logits``
(``[16, 256]``, tied to the embedding) and ``features`` (``[1, 32, 2, 2]``).
"""

from typing import Annotated

import coreai.authoring as ca
import numpy as np
from coreai.authoring import AIProgram, Module, TensorType, Value, graph
from coreai.authoring.constant import constant

__all__ = ["SEQUENCE", "VOCAB", "build_demo_program"]

VOCAB, DIM, HIDDEN, SEQUENCE, CONV_OUT = 256, 64, 256, 16, 32
_T = np.array([1, 0], dtype=np.uint32)


def _linear(x: Value, weight: np.ndarray) -> Value:
    """``x @ W.T`` for a torch-layout weight ``[out, in]``."""
    return ca.batch_matmul(x, ca.transpose(weight, _T))


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def init(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        values: np.ndarray = rng.standard_normal(shape) / np.sqrt(fan_in)
        return values.astype(np.float32)

    return {
        "embedding": init(VOCAB, DIM),
        "q": init(DIM, DIM),
        "k": init(DIM, DIM),
        "v": init(DIM, DIM),
        "o": init(DIM, DIM),
        "up": init(HIDDEN, DIM),
        "down": init(DIM, HIDDEN),
        "conv": init(CONV_OUT, DIM, 3, 3),
    }


def build_demo_program(seed: int = 0) -> AIProgram:
    """Build the demo program; the same ``seed`` always gives the same weights."""
    w = _weights(seed)
    module = Module.create()
    with module:

        @graph  # type: ignore[untyped-decorator]
        def main(
            ids: Annotated[Value, TensorType((SEQUENCE,), np.int32, name="ids")],
        ) -> tuple[
            Annotated[Value, TensorType((SEQUENCE, VOCAB), np.float32, name="logits")],
            Annotated[Value, TensorType((1, CONV_OUT, 2, 2), np.float32, name="features")],
        ]:
            embedding = constant(w["embedding"])  # one constant, read by gather and lm head
            rows = ca.reshape(ids, np.array([SEQUENCE, 1], dtype=np.uint32))
            h = ca.gather_nd(embedding, rows)
            q, k, v = (_linear(h, w[name]) for name in ("q", "k", "v"))
            scores = ca.broadcasting_mul(
                ca.batch_matmul(q, ca.transpose(k, _T)),
                np.array(1 / np.sqrt(DIM), dtype=np.float32),
            )
            attended = ca.batch_matmul(ca.softmax(scores, np.array(1, dtype=np.int32)), v)
            h = ca.add(h, _linear(attended, w["o"]))
            h = ca.add(h, _linear(ca.relu(_linear(h, w["up"])), w["down"]))
            logits = ca.batch_matmul(h, ca.transpose(embedding, _T))
            image = ca.reshape(ca.transpose(h, _T), np.array([1, DIM, 4, 4], dtype=np.uint32))
            one = np.array([1, 1], dtype=np.uint32)
            features = ca.conv2d(image, w["conv"], one, one, np.array(1, dtype=np.uint32))
            return logits, features

    return AIProgram(module)
