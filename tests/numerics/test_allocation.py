"""The byte-budget allocation: within budget, optimal on small cases, never worse than a
reference that fits, deterministic; a configuration stepped down to fit a budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils.numerics.allocation import allocate, smallest_total, step_down


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


def _step(sizes: list[int], errors: list[float], here: int) -> tuple[float, int] | None:
    """The one step down step_down may take from option ``here``, found by brute force:
    (error added per byte saved, option) over the smaller options no smaller option is at
    least as accurate as."""
    smaller = [j for j in range(len(sizes)) if sizes[j] < sizes[here]]
    key = {j: (sizes[j], errors[j], j) for j in smaller}
    efficient = [
        j for j in smaller if not any(key[k] < key[j] and errors[k] <= errors[j] for k in smaller)
    ]
    moves = [((errors[j] - errors[here]) / (sizes[here] - sizes[j]), j) for j in efficient]
    return min(moves) if moves else None


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), start_at=st.integers(0, 2), fraction=st.floats(0.0, 1.0))
def test_step_down_takes_the_cheapest_single_steps_until_it_fits(
    seed: int, start_at: int, fraction: float
) -> None:
    sizes, errors = _instance(seed, items=7, options=5)
    start = [start_at] * len(sizes)
    steps = {i: _step(sizes[i], errors[i], start_at) for i in range(len(sizes))}
    full = sum(s[start_at] for s in sizes)
    lowest = sum(s[start_at] if steps[i] is None else s[steps[i][1]] for i, s in enumerate(sizes))
    budget = int(lowest - 5 + fraction * (full - lowest + 10))
    stepped = step_down(sizes, errors, start, budget)
    if full <= budget:
        assert stepped is not None and list(stepped.choice) == start
        return
    if lowest > budget:
        assert stepped is None
        return
    assert stepped is not None and stepped.total_bytes <= budget
    moved = [i for i in range(len(sizes)) if stepped.choice[i] != start_at]
    for i in moved:  # one step each, the brute-force one
        assert steps[i] is not None and stepped.choice[i] == steps[i][1]
    order = sorted((step[0], i) for i, step in steps.items() if step is not None)
    assert [i for _, i in order[: len(moved)]] == sorted(moved, key=lambda i: (steps[i], i))
    last = max(moved, key=lambda i: (steps[i], i))  # the step that made it fit was needed
    assert stepped.total_bytes + sizes[last][start_at] - sizes[last][steps[last][1]] > budget
    assert stepped.total_error == pytest.approx(
        sum(errors[i][j] for i, j in enumerate(stepped.choice))
    )


def test_step_down_skips_dominated_options_and_breaks_ties_by_index() -> None:
    # item 0: option 2 is smaller than option 1 and more accurate, so 1 is never a step
    sizes = [[100, 60, 50], [100, 50, 50], [100, 50, 50]]
    errors = [[0.0, 5.0, 1.0], [0.0, 1.0, 1.0], [0.0, 2.0, 2.0]]
    stepped = step_down(sizes, errors, [0, 0, 0], 250)
    assert stepped is not None and stepped.choice == (2, 0, 0)  # 0.02 a byte, item 0 first
    stepped = step_down(sizes, errors, [0, 0, 0], 200)  # item 1: two equal options, the first
    assert stepped is not None and stepped.choice == (2, 1, 0)
    assert step_down(sizes, errors, [0, 0, 0], 300) == allocate(sizes, errors, 300)
    assert step_down(sizes, errors, [0, 0, 0], 149) is None
