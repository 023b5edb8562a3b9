"""The runtime wrapper: results by name, and a process may exit as soon as a run returns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from coreai_opt.coreai_utils.runtime import _SettlingLoop, run_asset
from tests.helpers import linear_program


def test_run_asset_returns_the_outputs_by_name(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    path = tmp_path / "linear.aimodel"
    linear_program(weight).save_asset(path)
    got = run_asset(path, {"x": np.eye(4, dtype=np.float32)})
    assert set(got) == {"y"} and np.array_equal(got["y"].T, weight)


def test_settle_waits_for_a_thread_still_inside_call_soon_threadsafe() -> None:
    # The runtime's thread delivers a result, then is still writing the wake-up byte: the
    # caller must not go on (and maybe exit the interpreter) until that thread is out.
    loop = _SettlingLoop()
    entered, release = threading.Event(), threading.Event()
    write = loop._write_to_self

    def slow_write() -> None:
        entered.set()
        release.wait()
        write()

    loop._write_to_self = slow_write  # type: ignore[method-assign]
    caller = threading.Thread(target=loop.call_soon_threadsafe, args=(lambda: None,))
    caller.start()
    assert entered.wait(10)
    released_at: list[float] = []

    def let_go() -> None:
        time.sleep(0.2)
        released_at.append(time.monotonic())
        release.set()

    threading.Thread(target=let_go).start()
    loop.settle()
    assert released_at and time.monotonic() >= released_at[0]
    caller.join()
    loop.settle()  # nothing inside: returns at once
    loop.close()
