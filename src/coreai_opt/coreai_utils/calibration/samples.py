"""Checks of calibration inputs before anything runs: the samples and the padding mask."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from coreai_opt.coreai_utils.ir.signature import InputSpec

__all__ = ["check_padding_mask", "check_samples"]


def check_samples(
    specs: list[InputSpec], samples: Iterable[Mapping[str, object]], function: str
) -> list[dict[str, np.ndarray]]:
    """The samples as dicts of arrays, after checking every name, dtype and static shape
    against ``specs``; ``ValueError`` naming the first problem (nothing has run yet)."""
    expected = {spec.name: spec for spec in specs}
    checked: list[dict[str, np.ndarray]] = []
    for number, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            kind = type(sample).__name__
            msg = f"sample {number} must be a dict of input name -> array, got {kind}"
            raise TypeError(msg)
        missing = sorted(set(expected) - set(sample))
        extra = sorted(set(sample) - set(expected))
        if missing or extra:
            parts = [f"missing input {n!r}" for n in missing] + [
                f"unknown input {n!r}" for n in extra
            ]
            msg = (
                f"sample {number} for {function!r}: {', '.join(parts)}; expected {sorted(expected)}"
            )
            raise ValueError(msg)
        arrays = {}
        for name, spec in expected.items():
            value = np.asarray(sample[name])
            if spec.dtype is not None and value.dtype != spec.dtype:
                msg = (
                    f"sample {number}: input {name!r} must have dtype {spec.dtype}, "
                    f"got {value.dtype}"
                )
                raise ValueError(msg)
            if spec.shape is not None and tuple(value.shape) != spec.shape:
                msg = (
                    f"sample {number}: input {name!r} must have shape {spec.shape}, "
                    f"got {tuple(value.shape)}"
                )
                raise ValueError(msg)
            arrays[name] = value
        checked.append(arrays)
    if not checked:
        msg = "samples is empty: calibration needs at least one sample"
        raise ValueError(msg)
    return checked


def check_padding_mask(specs: list[InputSpec], name: object, function: str) -> InputSpec | None:
    """The input ``name`` of ``function`` whose zero entries mark padded positions, checked:
    it exists, has an integer or bool dtype and a static shape of rank 1 or more. None when
    ``name`` is None. ``TypeError`` for a non-string, ``ValueError`` naming the problem."""
    if name is None:
        return None
    if not isinstance(name, str):
        msg = f"padding_mask must be the name of an input (a str) or None, got {name!r}"
        raise TypeError(msg)
    by_name = {spec.name: spec for spec in specs}
    spec = by_name.get(name)
    if spec is None:
        msg = (
            f"padding_mask {name!r} is not an input of {function!r}; its inputs are "
            f"{sorted(by_name)}"
        )
        raise ValueError(msg)
    if spec.dtype is None or spec.dtype.kind not in "iub":
        msg = f"padding_mask {name!r} must be an integer or bool input, not {spec.dtype}"
        raise ValueError(msg)
    if spec.shape is None or len(spec.shape) == 0:
        msg = f"padding_mask {name!r} must have a static shape of rank 1 or more, got {spec.shape}"
        raise ValueError(msg)
    return spec
