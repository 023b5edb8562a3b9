"""A copy of a program in an MLIR context of its own, so that its new data can be freed.

Every resource blob a pass creates (``DenseResourceElementsAttr.get_from_buffer``: the
compressed values, masks, scales, lookup tables) is registered in the context of the module
it is created in, and the context keeps it, with the numpy buffer behind it, until the
context itself is destroyed. The bindings offer no way to drop one blob. ``copy.deepcopy``
of a program clones its operations into the *same* context, so before this module every
``sparsify_weights(program)`` call left its output's data in the input's context: the
process grew by the compressed bytes on every call (+34 MiB a call for one 4096x4096 fp32
linear at 50 %) until the input program itself went away.

A context per copy is the bindings' own way to scope that memory: the copy is written as
bytecode to a temporary file and parsed back into a new context. The parser maps the file
rather than reading it (the weights stay file-backed, not copied: on a 64 MiB weight the
copy adds under 1 MiB of RSS), and the file is unlinked at once (the mapping lives on until
the context goes). When the copy is dropped, its context, its blobs and the mapping go
with it.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile

from coreai._compiler.ir import Context, Module
from coreai.authoring import AIProgram
from coreai.authoring.context import Context as AuthoringContext

__all__ = ["detached_copy"]

_log = logging.getLogger(__name__)


def detached_copy(program: AIProgram) -> AIProgram:
    """A copy of ``program`` in a new MLIR context (module docstring), identical op for op
    (locations and resource names included).

    Costs one write of the program's bytecode to the temporary directory (``TMPDIR``).
    Where that write fails (no space), the copy is a plain ``copy.deepcopy`` in the
    program's own context, with a logged warning: correct, but the data later added to the
    copy then lives as long as ``program``.
    """
    source = program._module._mlir_module  # noqa: SLF001
    try:
        descriptor, path = tempfile.mkstemp(prefix="coreai-opt-", suffix=".mlirbc")
    except OSError as error:
        return _shared_copy(program, error)
    try:
        try:
            with os.fdopen(descriptor, "wb") as file:
                source.operation.write_bytecode(file)
        except OSError as error:
            return _shared_copy(program, error)
        context = _new_context(source.context)
        module = Module.parseFile(path, context=context)
    finally:
        os.unlink(path)
    return AIProgram._from_mlir_module(module)  # noqa: SLF001


def _new_context(like: Context) -> Context:
    """A context with the Core AI dialects registered, as ``AIProgram`` loading makes one."""
    context: Context = AuthoringContext()._mlir_context  # noqa: SLF001
    context.allow_unregistered_dialects = like.allow_unregistered_dialects
    return context


def _shared_copy(program: AIProgram, error: OSError) -> AIProgram:
    _log.warning(
        "could not write a scratch copy of the program (%s): the copy shares the program's "
        "context, and its new data is kept until the program is freed",
        error,
    )
    return copy.deepcopy(program)
