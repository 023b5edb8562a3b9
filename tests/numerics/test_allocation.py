"""The byte-budget allocation: within budget, optimal on small cases, never worse than a
reference that fits, deterministic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils.numerics.allocation import allocate, smallest_total


def _instance(seed: int, items: int, options: int) -> tuple[list[list[int]], list[list[float]]]:
    rng = np.random.default_rng(seed)
    sizes, errors = [], []
    for _ in range(items):
        dense = int(rng.integers(100, 1000))
        size = [dense, *sorted(rng.integers(10, dense, options - 1).tolist(), reverse=True)]
        error = [0.0, *np.sort(rng.exponential(1.0, options - 1)).tolist()]
        sizes.append(size)
        errors.append(error)
    return sizes, errors


def _brute(sizes: list[list[int]], errors: list[list[float]], budget: int) -> float:
    best = np.inf
    for choice in itertools.product(*(range(len(s)) for s in sizes)):
        if sum(s[j] for s, j in zip(sizes, choice, strict=True)) <= budget:
            best = min(best, sum(e[j] for e, j in zip(errors, choice, strict=True)))
    return float(best)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), fraction=st.floats(0.0, 1.0))
def test_fits_the_budget_and_is_close_to_the_optimum(seed: int, fraction: float) -> None:
    sizes, errors = _instance(seed, items=5, options=4)
    low, high = smallest_total(sizes), sum(s[0] for s in sizes)
    budget = int(low + fraction * (high - low))
    result = allocate(sizes, errors, budget)
    assert result.total_bytes <= budget
    assert result.total_bytes == sum(s[j] for s, j in zip(sizes, result.choice, strict=True))
    assert np.isclose(result.total_error, _brute(sizes, errors, budget))  # small: exact


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), fraction=st.floats(0.0, 1.0))
def test_the_lagrangian_steps_fit_and_come_close(seed: int, fraction: float) -> None:
    sizes, errors = _instance(seed, items=5, options=4)
    low, high = smallest_total(sizes), sum(s[0] for s in sizes)
    budget = int(low + fraction * (high - low))
    result = allocate(sizes, errors, budget, exact_limit=0)  # as for a large model
    assert result.total_bytes <= budget
    optimum = _brute(sizes, errors, budget)
    assert result.total_error <= 2.0 * optimum + 1e-9


def test_the_whole_budget_keeps_everything_at_its_most_accurate_option() -> None:
    sizes, errors = _instance(1, items=6, options=5)
    result = allocate(sizes, errors, sum(s[0] for s in sizes))
    assert result.choice == (0,) * 6 and result.total_error == 0.0


def test_the_smallest_budget_takes_every_smallest_option() -> None:
    sizes, errors = _instance(2, items=6, options=5)
    result = allocate(sizes, errors, smallest_total(sizes))
    assert result.total_bytes == smallest_total(sizes)


def test_below_the_smallest_total_is_an_error_giving_it() -> None:
    sizes, errors = _instance(3, items=3, options=3)
    with pytest.raises(ValueError, match=f"smallest reachable size is {smallest_total(sizes)}"):
        allocate(sizes, errors, smallest_total(sizes) - 1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), option=st.integers(0, 3))
def test_never_worse_than_a_reference_that_fits(seed: int, option: int) -> None:
    sizes, errors = _instance(seed, items=8, options=4)
    uniform = [option] * len(sizes)
    budget = sum(s[option] for s in sizes)
    result = allocate(sizes, errors, budget, [uniform], exact_limit=0)
    assert result.total_bytes <= budget
    assert result.total_error <= sum(e[option] for e in errors) + 1e-12


def test_dominated_options_are_never_taken_and_ties_go_to_the_lower_index() -> None:
    # option 1 is larger and worse than option 2: never useful
    sizes = [[100, 80, 50], [100, 60, 60]]
    errors = [[0.0, 5.0, 1.0], [0.0, 2.0, 2.0]]
    result = allocate(sizes, errors, 110)
    assert 1 not in result.choice[:1]
    assert result.choice == allocate(sizes, errors, 110).choice  # deterministic
    assert result.choice[1] in (0, 1)
