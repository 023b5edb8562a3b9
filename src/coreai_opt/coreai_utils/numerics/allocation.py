"""Choose one option per item to minimise the summed error under a byte budget (pure numpy).

A multiple-choice knapsack: item ``i`` offers options ``(bytes_ij, error_ij)``; exactly one
is taken per item and the bytes taken must not exceed the budget. Solved the Lagrangian way:

1. each item keeps its efficient options (no other option is both smaller and at least as
   accurate) and, among them, its lower convex hull in (bytes, error);
2. every item starts at its most accurate option; the hull step with the least error added
   per byte saved, over all items, is taken until the total fits (these are the optima of
   ``error + lambda * bytes`` for a growing ``lambda``, so each point on the way is optimal
   for its own total);
3. the bytes left under the budget are spent again, greedily: the move (to any efficient
   option of any item) with the most error removed per byte added that still fits, until
   none fits;
4. any ``references`` (whole choices, such as every item at the same configuration) that
   fit are filled the same way, and the most accurate of all is returned: the Lagrangian
   point is optimal among choices no larger than itself, not among all that fit, so this
   keeps the result at least as good as each reference.

When the exact answer is cheap it is used instead: the Pareto front of (bytes, error) over
the items taken so far, built item by item, as long as it stays under ``exact_limit``
(:data:`EXACT_FRONT`) points and the points built stay under :data:`EXACT_WORK` (small
models; a large one soon exceeds them and takes the steps above).

Deterministic: ties go to the lower item index, then the lower option index.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EXACT_FRONT", "Allocation", "allocate", "smallest_total", "step_down"]

EXACT_FRONT = 20_000
"""The most (bytes, error) points the exact search keeps before giving up on exactness."""

EXACT_WORK = 400_000
"""The most candidate points (front points times options, summed over the items) the exact
search builds before giving up: a front just under :data:`EXACT_FRONT` over 211 weights of
10 options made the search take 15-30 s (SmolLM2-135M, 29.4 s in the benchmark)."""


@dataclass(frozen=True)
class Allocation:
    """``choice[i]``: the option taken for item ``i``; ``total_bytes`` and ``total_error``."""

    choice: tuple[int, ...]
    total_bytes: int
    total_error: float


def smallest_total(sizes: Sequence[Sequence[int]]) -> int:
    """The fewest bytes any choice reaches: every item at its smallest option."""
    return sum(min(options) for options in sizes)


def _efficient(sizes: Sequence[int], errors: Sequence[float]) -> list[int]:
    """Option indices by decreasing bytes, each strictly more accurate than every smaller one
    (ties: the lower index)."""
    order = sorted(range(len(sizes)), key=lambda j: (sizes[j], errors[j], j))
    kept: list[int] = []
    best = np.inf
    for j in order:  # by increasing bytes: keep an option only if it beats all smaller ones
        if errors[j] < best:
            kept.append(j)
            best = errors[j]
    return kept[::-1]


def _hull(sizes: Sequence[int], errors: Sequence[float], efficient: list[int]) -> list[int]:
    """The lower convex hull of the efficient options, by decreasing bytes."""
    hull: list[int] = []
    for j in efficient:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # slopes (error added per byte saved) must not decrease along the hull
            first = (errors[b] - errors[a]) * (sizes[a] - sizes[j])
            second = (errors[j] - errors[a]) * (sizes[a] - sizes[b])
            if first >= second:
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def allocate(
    sizes: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    budget: int,
    references: Sequence[Sequence[int]] = (),
    exact_limit: int = EXACT_FRONT,
) -> Allocation:
    """The choice minimising the summed error with total bytes ``<= budget`` (module doc).

    ``ValueError`` when even the smallest choice exceeds ``budget``.
    """
    smallest = smallest_total(sizes)
    if smallest > budget:
        msg = f"the smallest reachable size is {smallest} bytes, above the budget of {budget}"
        raise ValueError(msg)
    exact = _exact(sizes, errors, budget, exact_limit)
    if exact is not None:
        return _scored(sizes, errors, exact)
    efficient = [_efficient(s, e) for s, e in zip(sizes, errors, strict=True)]
    hulls = [_hull(s, e, eff) for s, e, eff in zip(sizes, errors, efficient, strict=True)]
    position = [0] * len(sizes)
    choice = [hull[0] for hull in hulls]
    total = sum(sizes[i][j] for i, j in enumerate(choice))

    def step(item: int) -> tuple[float, int, int] | None:
        hull, at = hulls[item], position[item]
        if at + 1 >= len(hull):
            return None
        here, there = hull[at], hull[at + 1]
        saved = sizes[item][here] - sizes[item][there]
        return (errors[item][there] - errors[item][here]) / saved, item, there

    heap = [s for s in (step(i) for i in range(len(sizes))) if s is not None]
    heapq.heapify(heap)
    while total > budget and heap:
        _, item, there = heapq.heappop(heap)
        total += sizes[item][there] - sizes[item][choice[item]]
        choice[item] = there
        position[item] += 1
        following = step(item)
        if following is not None:
            heapq.heappush(heap, following)
    _fill(sizes, errors, efficient, choice, budget - total)
    best = _scored(sizes, errors, choice)
    for reference in references:
        other = list(reference)
        spare = budget - sum(sizes[i][j] for i, j in enumerate(other))
        if spare < 0:
            continue
        _fill(sizes, errors, efficient, other, spare)
        scored = _scored(sizes, errors, other)
        if scored.total_error < best.total_error:
            best = scored
    return best


def step_down(
    sizes: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    start: Sequence[int],
    budget: int,
) -> Allocation | None:
    """``start`` made to fit ``budget`` with at most one step down per item: ``start`` when it
    fits; else each item's step is the move to a smaller efficient option (no smaller one at
    least as accurate) adding the least error per byte saved, and the steps are taken from
    the cheapest (ties: the lower item index) until the total fits. None when it does not
    fit with every step taken.

    What it is for: a configuration next to a given one (every weight at one candidate),
    for budgets between the sizes of such configurations, with far less freedom for the
    errors of the estimates to steer than :func:`allocate` has.
    """
    choice = list(start)
    total = sum(sizes[i][j] for i, j in enumerate(choice))
    if total <= budget:
        return _scored(sizes, errors, choice)
    steps = []
    for item, here in enumerate(choice):
        smaller = [j for j in range(len(sizes[item])) if sizes[item][j] < sizes[item][here]]
        kept = _efficient([sizes[item][j] for j in smaller], [errors[item][j] for j in smaller])
        moves = [
            (
                (errors[item][j] - errors[item][here]) / (sizes[item][here] - sizes[item][j]),
                item,
                j,
            )
            for j in (smaller[k] for k in kept)
        ]
        if moves:
            steps.append(min(moves))
    for _, item, there in sorted(steps):
        total += sizes[item][there] - sizes[item][choice[item]]
        choice[item] = there
        if total <= budget:
            return _scored(sizes, errors, choice)
    return None


def _exact(
    sizes: Sequence[Sequence[int]], errors: Sequence[Sequence[float]], budget: int, limit: int
) -> list[int] | None:
    """The optimal choice from the Pareto front, or None when the front grows too large."""
    # each point: (bytes, error, option, parent index in the previous front)
    fronts: list[list[tuple[int, float, int, int]]] = []
    front: list[tuple[int, float, int, int]] = [(0, 0.0, -1, -1)]
    work = 0
    for item_sizes, item_errors in zip(sizes, errors, strict=True):
        work += len(front) * len(item_sizes)
        if work > EXACT_WORK:
            return None
        points = sorted(
            (b + item_sizes[j], e + item_errors[j], j, parent)
            for parent, (b, e, _, _) in enumerate(front)
            for j in range(len(item_sizes))
            if b + item_sizes[j] <= budget
        )
        front = []
        best = np.inf
        for point in points:  # by bytes, then error, option, parent: keep strict improvements
            if point[1] < best:
                front.append(point)
                best = point[1]
        if len(front) > limit:
            return None
        fronts.append(front)
    index = int(np.argmin([e for _, e, _, _ in front]))
    choice = []
    for level in reversed(fronts):
        _, _, option, parent = level[index]
        choice.append(option)
        index = parent
    return choice[::-1]


def _scored(
    sizes: Sequence[Sequence[int]], errors: Sequence[Sequence[float]], choice: list[int]
) -> Allocation:
    total = sum(sizes[i][j] for i, j in enumerate(choice))
    error = float(sum(errors[i][j] for i, j in enumerate(choice)))
    return Allocation(tuple(choice), total, error)


def _fill(
    sizes: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    efficient: list[list[int]],
    choice: list[int],
    spare: int,
) -> None:
    """Spend ``spare`` bytes on the upgrades removing the most error per byte (in place)."""
    while True:
        best: tuple[float, int, int] | None = None
        for item, options in enumerate(efficient):
            here = choice[item]
            for j in options:
                extra = sizes[item][j] - sizes[item][here]
                gain = errors[item][here] - errors[item][j]
                if gain <= 0 or extra > spare:
                    continue
                rate = gain / max(extra, 1)
                if best is None or rate > best[0]:
                    best = (rate, item, j)
        if best is None:
            return
        _, item, j = best
        spare -= sizes[item][j] - sizes[item][choice[item]]
        choice[item] = j
