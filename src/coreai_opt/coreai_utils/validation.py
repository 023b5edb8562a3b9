"""Check a compressed program against the original: seeded inputs, output SNR and cosine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.ir.signature import (
    InputSpec,
    graph_inputs,
    graph_names,
    runtime_function,
)
from coreai_opt.coreai_utils.numerics.metrics import cosine_similarity, snr_db

__all__ = [
    "OutputComparison",
    "compare_outputs",
    "entry_points",
    "example_inputs",
    "runtime_function",
]

_DEFAULT_INTEGER_HIGH = 8


@dataclass(frozen=True)
class OutputComparison:
    """How close one output of the compressed program is to the original's."""

    name: str
    snr_db: float
    cosine: float

    @property
    def identical(self) -> bool:
        return self.snr_db == float("inf")


def entry_points(program: AIProgram) -> list[str]:
    """The public graphs of ``program`` by dotted path (``main``, ``ns.inner``); run one with
    ``run_asset(..., runtime_function(path))``."""
    return graph_names(program._module._mlir_module)  # noqa: SLF001


def _example(spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.shape is None or spec.dtype is None:
        msg = f"input {spec.name!r} has no static tensor shape and dtype to build an example from"
        raise ValueError(msg)
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, spec.shape).astype(np.bool_)
    if spec.dtype.kind in "iu":
        high = spec.high if spec.high is not None else _DEFAULT_INTEGER_HIGH
        return rng.integers(0, max(high, 1), spec.shape).astype(spec.dtype)
    return rng.standard_normal(spec.shape).astype(np.float32).astype(spec.dtype)


def example_inputs(
    program: AIProgram, function: str = "main", seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random inputs for ``function``: exact dtypes and static shapes.

    Floats are standard normal; integers are uniform in ``[0, n)`` where ``n`` is the
    smallest extent of a table they index through ``gather_nd`` (following reshapes and
    other value-preserving ops), or 8 when they index none; booleans are fair coins.
    """
    rng = np.random.default_rng(seed)
    specs = graph_inputs(program._module._mlir_module, function)  # noqa: SLF001
    return {spec.name: _example(spec, rng) for spec in specs}


def compare_outputs(
    reference: dict[str, np.ndarray], test: dict[str, np.ndarray]
) -> list[OutputComparison]:
    """SNR (dB; inf when identical) and cosine similarity per output, by output name."""
    return [
        OutputComparison(
            name,
            snr_db(reference[name], test[name]),
            cosine_similarity(reference[name], test[name]),
        )
        for name in sorted(reference)
    ]
