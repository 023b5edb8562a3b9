"""Run a saved Core AI asset on the Core AI runtime (public ``coreai`` API only)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import TypeVar

import numpy as np
from coreai.authoring import AIModelAsset
from coreai.runtime import NDArray

__all__ = ["run_asset", "run_samples"]

T = TypeVar("T")


class _SettlingLoop(asyncio.SelectorEventLoop):
    """An event loop that can wait until the runtime's threads have left Python.

    The runtime resolves each awaited call from one of its own (libdispatch) threads through
    ``call_soon_threadsafe``. The result can reach the caller while that thread is still
    inside the call (writing the loop's wake-up byte, then taking the GIL back to return). If
    the interpreter shuts down in that window, CPython 3.11 ends the thread with
    ``pthread_exit``, whose unwinding through the runtime's Swift frames aborts the process
    ("C++ exception handling detected but the Swift runtime was compiled with exceptions
    disabled"): seen in 6 of 40 CLI runs on a loaded machine, 0 of 80 with :meth:`settle`.
    :meth:`settle` waits those threads out, so a process may exit as soon as a run returns.

    The runtime also never releases the handle ``call_soon_threadsafe`` returns to it, and
    a handle holds its callback and arguments: the future and the result it is resolved
    with. Every call's outputs (and every load's compiled model) stayed alive for the life
    of the process: +64 MiB a call for a 4096x4096 fp32 output, +128 MiB a load of a
    64 MiB weight. The handle therefore gets a callback that lets go of both once it has
    run (what remains is a few hundred bytes a call).
    """

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: object, context: object = None
    ) -> asyncio.Handle:
        held: list[tuple[Callable[..., object], tuple[object, ...]]] = [(callback, args)]

        def run_once() -> None:
            function, arguments = held.pop()
            function(*arguments)

        return super().call_soon_threadsafe(run_once, context=context)  # type: ignore[arg-type]

    def settle(self) -> None:
        """Return once no other thread is inside this loop's ``call_soon_threadsafe``."""
        while self._callers():
            time.sleep(0.0005)

    def _callers(self) -> bool:
        code = _SettlingLoop.call_soon_threadsafe.__code__
        frames = sys._current_frames()  # noqa: SLF001 (the public way to list them)
        # Not this thread's own: a local holding this very frame is a reference cycle, which
        # kept the caller's frames, and the outputs in them, until the next garbage
        # collection (EfficientNet-Lite0's capture: up to 4 samples' outputs alive, anonymous
        # memory 156 -> 314 MiB over 8 samples with the reduction switched off).
        del frames[threading.get_ident()]
        for top in frames.values():
            frame: FrameType | None = top
            while frame is not None:
                if frame.f_code is code and frame.f_locals.get("self") is self:
                    return True
                frame = frame.f_back
        return False


def run_samples(
    asset: AIModelAsset | Path | str,
    samples: Iterable[dict[str, np.ndarray]],
    function: str = "main",
) -> Generator[dict[str, np.ndarray], None, None]:
    """Run ``function`` of an ``.aimodel`` asset on each sample in turn; outputs by name.

    The asset is compiled and loaded once. Inputs must have the exact dtypes and static
    shapes the function declares. Outputs are yielded one sample at a time, so a caller that
    reduces them holds one sample's outputs at once.
    """
    loaded = asset if isinstance(asset, AIModelAsset) else AIModelAsset.load(Path(asset))
    loop = _SettlingLoop()

    def wait(awaitable: Awaitable[T]) -> T:
        result = loop.run_until_complete(awaitable)
        loop.settle()
        return result

    try:
        executable = loaded.executable()
        model = wait(executable.__aenter__())
        try:
            fn = model.load_function(function)
            if fn is None:
                msg = f"the asset has no function {function!r}; it has {model.function_names}"
                raise ValueError(msg)
            for inputs in samples:
                arrays = {name: NDArray(np.ascontiguousarray(v)) for name, v in inputs.items()}
                outputs = wait(fn(arrays))
                yield {name: np.array(value.numpy()) for name, value in outputs.items()}
        finally:
            wait(executable.__aexit__(None, None, None))
    finally:
        loop.close()


def run_asset(
    asset: AIModelAsset | Path | str,
    inputs: dict[str, np.ndarray],
    function: str = "main",
) -> dict[str, np.ndarray]:
    """Run ``function`` of an ``.aimodel`` asset with ``inputs``; outputs by name.

    Inputs must have the exact dtypes and static shapes the function declares.
    """
    with closing(run_samples(asset, [inputs], function)) as outputs:
        return next(outputs)
