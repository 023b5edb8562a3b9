"""Validation of ``sparsify_weights`` arguments into one immutable options record."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from numbers import Real
from typing import TypeVar

from coreai_opt.coreai_utils.arguments import ArgumentTypeError, as_int, check_int
from coreai_opt.coreai_utils.dtypes import DType

__all__ = [
    "PALETTIZE_NBITS",
    "QUANTIZE_DTYPES",
    "Algorithm",
    "SparsifyOptions",
    "check_algorithm",
    "check_threshold",
    "choose_algorithm",
    "validate_options",
]

QUANTIZE_DTYPES = (DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2)
PALETTIZE_NBITS = (1, 2, 3, 4, 6, 8)


class Algorithm(StrEnum):
    """How the pruned elements are chosen (and, for SparseGPT, how the kept ones change)."""

    MAGNITUDE = "magnitude"
    WANDA = "wanda"
    SPARSEGPT = "sparsegpt"


@dataclass(frozen=True)
class SparsifyOptions:
    """Validated configuration. Exactly one of ``target_sparsity`` and ``n_m_ratio`` is set.

    ``algorithm`` is resolved: magnitude without calibration, wanda with it by default.
    """

    target_sparsity: float | None
    block_size: int | None
    n_m_ratio: tuple[int, int] | None
    quantize_dtype: DType | None
    palettize_nbits: int | None
    weight_num_threshold: int
    algorithm: Algorithm = Algorithm.MAGNITUDE


def _check_target_sparsity(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"target_sparsity must be a real number in [0, 1], got {value!r}"
        raise ArgumentTypeError(msg)
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        msg = f"target_sparsity must be in [0, 1], got {value!r}"
        raise ValueError(msg)
    return number


def _check_block_size(value: object) -> int | None:
    return None if value is None else check_int("block_size", value, 2, "greater than 1")


def _check_n_m_ratio(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, Iterable):
        msg = f"n_m_ratio must be a pair (n, m) of ints, got {value!r}"
        raise ValueError(msg)
    items = [as_int(item) for item in value]
    if len(items) != 2:
        msg = f"n_m_ratio must have length 2, got {value!r}"
        raise ValueError(msg)
    n, m = items
    if n is None or m is None:
        msg = f"n_m_ratio must contain integers only, got {value!r}"
        raise ValueError(msg)
    if m <= 0:
        msg = f"n_m_ratio needs m > 0, got {value!r}"
        raise ValueError(msg)
    if not 0 <= n <= m:
        msg = f"n_m_ratio needs n in [0, m], got {value!r}"
        raise ValueError(msg)
    return n, m


def _check_quantize_dtype(value: object) -> DType | None:
    if value is None:
        return None
    dtype: DType | None = None
    if isinstance(value, DType):
        dtype = value
    elif isinstance(value, str) and value in DType._value2member_map_:
        dtype = DType(value)
    if dtype not in QUANTIZE_DTYPES:
        allowed = ", ".join(f"DType.{d.name}" for d in QUANTIZE_DTYPES)
        msg = f"quantize_dtype must be None, {allowed}; got {value!r}"
        raise ValueError(msg)
    return dtype


def _check_palettize_nbits(value: object) -> int | None:
    if value is None:
        return None
    number = as_int(value)
    if number not in PALETTIZE_NBITS:
        msg = f"palettize_nbits must be one of {set(PALETTIZE_NBITS)}, got {value!r}"
        raise ValueError(msg)
    return number


def check_threshold(value: object) -> int:
    return check_int("weight_num_threshold", value, 0, "non-negative")


E = TypeVar("E", bound=StrEnum)


def choose_algorithm(
    enum: type[E], value: object, *, calibrated: bool, plain: E, calibrated_default: E
) -> E:
    """The algorithm to use among ``enum``: ``value`` checked, None resolved (``plain``
    without calibration, ``calibrated_default`` with it); only ``plain`` works without a
    calibration (``ValueError`` naming the algorithm otherwise)."""
    if value is None:
        return calibrated_default if calibrated else plain
    chosen = enum._value2member_map_.get(value) if isinstance(value, str) else None
    if not isinstance(chosen, enum):
        allowed = ", ".join(repr(a.value) for a in enum)
        msg = f"algorithm must be None or one of {allowed}; got {value!r}"
        raise ValueError(msg)
    if chosen is not plain and not calibrated:
        msg = f"algorithm={chosen.value!r} needs calibration (see collect_calibration)"
        raise ValueError(msg)
    return chosen


def check_algorithm(value: object, *, calibrated: bool) -> Algorithm:
    """The pruning algorithm: ``value`` checked, None resolved (wanda when ``calibrated``)."""
    return choose_algorithm(
        Algorithm,
        value,
        calibrated=calibrated,
        plain=Algorithm.MAGNITUDE,
        calibrated_default=Algorithm.WANDA,
    )


def validate_options(
    *,
    target_sparsity: object,
    block_size: object,
    n_m_ratio: object,
    quantize_dtype: object,
    palettize_nbits: object,
    weight_num_threshold: object,
    algorithm: object = None,
    calibrated: bool = False,
) -> SparsifyOptions:
    """Check every argument and return the options, or raise naming the bad argument."""
    target = _check_target_sparsity(target_sparsity)
    block = _check_block_size(block_size)
    n_m = _check_n_m_ratio(n_m_ratio)
    if target is not None and n_m is not None:
        msg = (
            f"target_sparsity ({target_sparsity!r}) and n_m_ratio ({n_m_ratio!r}) are mutually "
            "exclusive; pass target_sparsity=None to use n_m_ratio"
        )
        raise ValueError(msg)
    if target is None and n_m is None:
        msg = "one of target_sparsity and n_m_ratio must be set; both are None"
        raise ValueError(msg)
    if block is not None and n_m is not None:
        msg = (
            f"block_size ({block_size!r}) prunes to target_sparsity and cannot be combined "
            f"with n_m_ratio ({n_m_ratio!r})"
        )
        raise ValueError(msg)
    quantize = _check_quantize_dtype(quantize_dtype)
    nbits = _check_palettize_nbits(palettize_nbits)
    if quantize is not None and nbits is not None:
        msg = (
            f"quantize_dtype ({quantize_dtype!r}) and palettize_nbits ({palettize_nbits!r}) "
            "are mutually exclusive"
        )
        raise ValueError(msg)
    return SparsifyOptions(
        target_sparsity=target,
        block_size=block,
        n_m_ratio=n_m,
        quantize_dtype=quantize,
        palettize_nbits=nbits,
        weight_num_threshold=check_threshold(weight_num_threshold),
        algorithm=check_algorithm(algorithm, calibrated=calibrated),
    )
