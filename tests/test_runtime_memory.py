"""The runtime wrapper keeps nothing alive after a run: neither outputs nor loaded models."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import numpy as np

from coreai_opt.coreai_utils.runtime import _SettlingLoop, run_asset
from tests.helpers import linear_program


class _Marker:
    """Something a weak reference can watch."""


def test_a_handle_lets_go_of_its_callback_and_arguments_once_run() -> None:
    # The runtime never releases the handle call_soon_threadsafe gives it: the handle must
    # not keep the future and the result alive after it has run.
    loop = _SettlingLoop()
    marker = _Marker()
    seen: list[object] = []
    handle = loop.call_soon_threadsafe(seen.append, marker)
    loop.run_until_complete(asyncio.sleep(0))
    watch = weakref.ref(marker)
    del marker
    seen.clear()
    gc.collect()
    loop.close()
    assert watch() is None and handle is not None


def _runtime_arrays() -> int:
    return sum(type(o).__name__ == "_NDArray" for o in gc.get_objects())


def test_runs_leave_no_runtime_arrays_behind(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    path = tmp_path / "linear.aimodel"
    linear_program(weight).save_asset(path)
    x = {"x": np.eye(32, dtype=np.float32)}
    run_asset(path, x)
    gc.collect()
    before = _runtime_arrays()
    for _ in range(5):
        got = run_asset(path, x)
    gc.collect()
    assert _runtime_arrays() == before
    assert np.array_equal(got["y"].T, weight)
