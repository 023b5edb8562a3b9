"""The calibration record: activation statistics per weight id, and its ``.npz`` file.

Plain data (numpy and JSON), below the passes that read it and the capture that fills it.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout

__all__ = ["Calibration", "CalibrationFileError"]

_FORMAT = "coreai-opt-calibration/1"
_LOCAL_HEADER = 30  # bytes of a zip member's local header before its name and extra field


class CalibrationFileError(ValueError):
    """A file is not a calibration saved by :meth:`Calibration.save`."""


@dataclass(frozen=True)
class Calibration:
    """Activation statistics per weight id, from ``samples`` runs of ``function``.

    ``stats`` maps a weight id to its :class:`ActivationStats` (weights sharing an input,
    like q/k/v projections, share one object); ``missing`` maps the ids of candidate
    weights without statistics to the reason (an embedding read only by ``gather_nd``, a
    consumer the capture cannot see, a graph ``function`` does not reach). ``notes`` maps
    the ids of weights calibrated through some of their consumers only to what was left
    out (a tied embedding / head: its ``gather_nd`` lookup). ``padding_mask`` names the
    input whose zero entries marked padded positions (None: every row counted);
    ``unmasked`` maps the ids of weights whose activations could not be mapped onto it
    (they keep every row) to the reason. ``shapes`` holds the shape of every candidate
    weight of the program it was collected on, so that a pass can tell a calibration of
    another program (empty in files of earlier versions).
    """

    function: str
    samples: int
    stats: Mapping[str, ActivationStats]
    missing: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    padding_mask: str | None = None
    unmasked: Mapping[str, str] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def save(self, path: Path | str) -> None:
        """Write to ``path`` (``.npz``); shared statistics are stored once."""
        arrays: dict[str, np.ndarray] = {}
        index_of: dict[int, int] = {}
        entries: dict[str, dict[str, object]] = {}
        for weight_id, stats in self.stats.items():
            if id(stats) not in index_of:
                k = index_of[id(stats)] = len(index_of)
                arrays[f"sq_sum_{k}"] = stats.sq_sum
                if stats.gram is not None:
                    arrays[f"gram_{k}"] = stats.gram
            k = index_of[id(stats)]
            entries[weight_id] = {"stats": k, "layout": stats.layout.value, "count": stats.count}
        meta = {
            "format": _FORMAT,
            "function": self.function,
            "samples": self.samples,
            "weights": entries,
            "missing": dict(self.missing),
            "notes": dict(self.notes),
            "padding_mask": self.padding_mask,
            "unmasked": dict(self.unmasked),
            "shapes": {key: list(shape) for key, shape in self.shapes.items()},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        with Path(path).open("wb") as stream:
            np.savez(stream, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path | str, *, mmap_mode: str | None = None) -> Calibration:
        """Read a file written by :meth:`save`; ``CalibrationFileError`` if it is not one.

        ``mmap_mode="r"`` (as ``np.load``'s) maps every ``X^T X`` read-only from the file
        instead of reading it: a calibration larger than memory loads in no time, and the
        passes read one weight's statistics at a time and give their pages back. The file
        must then stay as it is while the calibration is in use (truncating it makes a
        later read fail). Values are the same either way."""
        if mmap_mode not in (None, "r"):
            msg = f"mmap_mode must be None or 'r', got {mmap_mode!r}"
            raise ValueError(msg)
        source = Path(path)
        try:
            mapped = _stored_arrays(source) if mmap_mode else {}
            with np.load(source, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != _FORMAT:
                    raise CalibrationFileError(f"{source}: not a calibration file")
                shared: dict[int, ActivationStats] = {}
                stats: dict[str, ActivationStats] = {}
                for weight_id, entry in meta["weights"].items():
                    k = int(entry["stats"])
                    if k not in shared:
                        gram = mapped.get(f"gram_{k}")
                        if gram is None:
                            gram = data.get(f"gram_{k}")
                        shared[k] = ActivationStats(
                            StatsLayout(entry["layout"]),
                            np.array(data[f"sq_sum_{k}"], dtype=np.float64),
                            int(entry["count"]),
                            _float64(gram),
                        )
                    stats[weight_id] = shared[k]
        except CalibrationFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            msg = f"{source}: not a calibration file ({type(error).__name__}: {error})"
            raise CalibrationFileError(msg) from None
        return cls(
            meta["function"],
            int(meta["samples"]),
            stats,
            dict(meta["missing"]),
            dict(meta.get("notes", {})),
            meta.get("padding_mask"),
            dict(meta.get("unmasked", {})),
            {key: tuple(shape) for key, shape in meta.get("shapes", {}).items()},
        )


def _float64(gram: np.ndarray | None) -> np.ndarray | None:
    """A Gram as float64: a mapped one as it is (saved float64), others copied."""
    if gram is None or (isinstance(gram, np.memmap) and gram.dtype == np.float64):
        return gram
    return np.array(gram, dtype=np.float64)


def _stored_arrays(path: Path) -> dict[str, np.memmap]:
    """The uncompressed ``.npy`` members of the ``.npz`` at ``path``, mapped read-only
    (``np.savez`` stores them so); compressed ones are left out."""
    arrays: dict[str, np.memmap] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as stream:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                continue
            stream.seek(info.header_offset)
            local = stream.read(_LOCAL_HEADER)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            stream.seek(info.header_offset + _LOCAL_HEADER + name_length + extra_length)
            version = np.lib.format.read_magic(stream)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(stream)
            if dtype.hasobject or not all(shape):  # nothing to map
                continue
            arrays[info.filename.removesuffix(".npy")] = np.memmap(
                path,
                dtype=dtype,
                mode="r",
                offset=stream.tell(),
                shape=shape,
                order="F" if fortran else "C",
            )
    return arrays
