"""Try a decompression chain in place of a weight constant, then put the constant back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coreai._compiler.ir import Operation, Value

__all__ = ["trial_replacement"]


def _position(op: Operation) -> int:
    for index, other in enumerate(op.block.operations):
        if other.operation == op:
            return index
    msg = "the constant is not in its block"
    raise ValueError(msg)


@contextmanager
def trial_replacement(const_op: Operation, emit: Callable[[Operation], Value]) -> Iterator[None]:
    """While the ``with`` block runs, every use of ``const_op``'s result reads the chain that
    ``emit(const_op)`` builds (just before the constant, as the passes insert it); after it,
    the uses read the constant again and the chain is erased: the module is as before (the
    constant is never touched)."""
    block = const_op.block
    start = _position(const_op)
    replacement = emit(const_op)
    end = _position(const_op)
    chain = [op.operation for op in list(block.operations)[start:end]]
    original = const_op.results[0]
    original.replace_all_uses_with(replacement)
    try:
        yield
    finally:
        replacement.replace_all_uses_with(original)
        for op in reversed(chain):
            op.erase()
