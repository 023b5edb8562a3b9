"""Input samples from ``.npz`` files (``--calibration``, ``--validate-with``).

The file holds one array per input name of the function, with a leading sample axis:
``x`` of shape ``[samples, *input_shape]`` and the input's exact dtype.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from coreai_opt.cli.errors import CliError
from coreai_opt.coreai_utils.ir.signature import InputSpec

__all__ = ["load_samples"]


def _read(path: Path, flag: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        msg = f"{flag} {path}: no such file"
        raise CliError(msg)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        msg = f"{flag} {path}: not a readable .npz archive ({error})"
        raise CliError(msg) from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy file: one plain array
        msg = f"{flag} {path}: not an .npz archive (one array per input name)"
        raise CliError(msg)
    try:
        with data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        msg = f"{flag} {path}: not a readable .npz archive ({error})"
        raise CliError(msg) from None


def load_samples(path: Path, flag: str, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """One dict per sample, checked against the function's inputs ``specs``.

    Raises ``CliError`` (one line naming the file and the array) for a missing file, a file
    that is not an ``.npz``, missing or unknown arrays, a wrong dtype or shape, unequal
    sample counts, or no samples.
    """
    arrays = _read(path, flag)
    expected = {spec.name: spec for spec in specs}
    missing = sorted(set(expected) - set(arrays))
    unknown = sorted(set(arrays) - set(expected))
    if missing or unknown:
        parts = [f"missing array {n!r}" for n in missing] + [
            f"unknown array {n!r}" for n in unknown
        ]
        msg = f"{flag} {path}: {', '.join(parts)} (inputs: {', '.join(sorted(expected))})"
        raise CliError(msg)
    counts = set()
    for name, spec in expected.items():
        array = arrays[name]
        want = ("samples", *(spec.shape or ()))
        if (spec.shape is not None and tuple(array.shape[1:]) != spec.shape) or array.ndim == 0:
            msg = (
                f"{flag} {path}: array {name!r} must have shape [{', '.join(map(str, want))}], "
                f"got {list(array.shape)}"
            )
            raise CliError(msg)
        if spec.dtype is not None and array.dtype != spec.dtype:
            msg = f"{flag} {path}: array {name!r} must have dtype {spec.dtype}, got {array.dtype}"
            raise CliError(msg)
        counts.add(array.shape[0])
    if len(counts) != 1:
        msg = f"{flag} {path}: arrays have different sample counts {sorted(counts)}"
        raise CliError(msg)
    count = counts.pop()
    if count == 0:
        msg = f"{flag} {path}: no samples (leading axis is 0)"
        raise CliError(msg)
    return [{name: arrays[name][i] for name in expected} for i in range(count)]
