"""One BLAS thread during the sweep: the count is lowered inside and restored after, also
when sweeps overlap in several threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coreai_opt.coreai_utils.numerics.blas import _set_local, one_blas_thread


def count() -> int:
    set_local = _set_local()
    assert set_local is not None
    current = set_local(1)
    set_local(current)
    return current


@pytest.mark.skipif(_set_local() is None, reason="numpy's BLAS is not OpenBLAS")
def test_one_thread_inside_and_the_count_restored_after_overlapping_bodies() -> None:
    before = count()
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with one_blas_thread():
            first_in.set()
            second_out.wait(10)
            seen.append(count())  # the other body ended: still one thread here

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with one_blas_thread():
        seen.append(count())
    second_out.set()
    thread.join()
    assert seen == [1, 1]
    assert count() == before


def test_results_do_not_depend_on_it() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 400))
    with one_blas_thread():
        inside = a @ b
    np.testing.assert_allclose(inside, a @ b, rtol=1e-12, atol=1e-12)
