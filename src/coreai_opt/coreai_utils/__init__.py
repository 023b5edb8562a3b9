"""Core AI program utilities: ``sparsify_weights`` and the storage ``DType``s.

``sparsify_weights`` is imported lazily so that ``coreai_opt.coreai_utils.numerics`` and
``DType`` can be used without loading the Core AI bindings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coreai_opt.coreai_utils.dtypes import DType

if TYPE_CHECKING:
    from coreai_opt.coreai_utils.passes.sparsify import sparsify_weights

__all__ = ["DType", "sparsify_weights"]


def __getattr__(name: str) -> Any:
    if name == "sparsify_weights":
        from coreai_opt.coreai_utils.passes.sparsify import sparsify_weights  # noqa: PLC0415

        return sparsify_weights
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
