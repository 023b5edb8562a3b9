"""Argument checks shared by every layer that takes user input (calibration, the passes).

A leaf module: it imports nothing of the package, so the calibration capture and the passes
both use it without an import running back up the layers.
"""

from __future__ import annotations

from enum import StrEnum
from numbers import Integral
from typing import TypeVar

__all__ = ["ArgumentTypeError", "as_int", "check_int", "member"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    A ``TypeError`` by nature, and also a ``ValueError`` so that callers catching the
    documented ``ValueError`` for bad configuration catch this too.
    """


def as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (numpy integers included, bool excluded)."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    return None


def check_int(name: str, value: object, minimum: int, requirement: str) -> int:
    """``value`` as an int of at least ``minimum``; wrong type or range names ``name``."""
    number = as_int(value)
    if number is None:
        msg = f"{name} must be an int ({requirement}), got {value!r}"
        raise ArgumentTypeError(msg)
    if number < minimum:
        msg = f"{name} must be {requirement}, got {value!r}"
        raise ValueError(msg)
    return number


E = TypeVar("E", bound=StrEnum)


def member(enum: type[E], name: str, value: object) -> E:
    """``value`` as a member of ``enum`` (a member or its string value); ``ValueError``
    naming ``name`` otherwise."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum._value2member_map_:
        return enum(value)
    allowed = ", ".join(f"{enum.__name__}.{m.name}" for m in enum)
    msg = f"{name} must be one of {allowed}; got {value!r}"
    raise ValueError(msg)
