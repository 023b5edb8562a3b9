"""Each weight's options for ``compress_to_size``: exact stored bytes and an estimated error.

For every weight and every candidate offered to it, the candidate's pass decides (its own
fallbacks included) and compresses the weight alone, exactly as it would in the program; the
stored bytes are those of that encoding, and the error is a *proxy*: the mean squared error
it adds to the weight's own layer output per input row, as expected on inputs beyond the
calibration rows (:func:`~coreai_opt.coreai_utils.numerics.layer_error.held_out_error`,
``trace(dW X^T X dW^T) / rows`` with ``X^T X`` shrunk towards its diagonal by ``d / (d +
rows)``: a fitted option must not look better than it is because it hid its error where
few rows do not look). A table read by ``gather_nd`` adds the error of one looked-up row
(every row equally likely); a tied embedding / LM head gets both. Without calibration, or
for a weight the calibration has no statistics for, the inputs are taken as uncorrelated
with unit variance (``||dW||^2``): what the weight's inputs look like is then lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import GATHERS, WeightSite
from coreai_opt.coreai_utils.numerics.layer_error import (
    held_out_error,
    lookup_error,
    unit_input_error,
)
from coreai_opt.coreai_utils.numerics.masks import NonFiniteError
from coreai_opt.coreai_utils.numerics.parallel import parallel_map
from coreai_opt.coreai_utils.passes.auto.candidates import Resolved
from coreai_opt.coreai_utils.passes.calibrated import offered, release
from coreai_opt.coreai_utils.passes.outcomes import COMPRESS_ERRORS, below_threshold, read_weight
from coreai_opt.coreai_utils.passes.runner import Decision, Encoded

__all__ = ["DENSE", "Measure", "Option", "WeightOptions", "encoded_error", "proxy_error", "weigh"]

DENSE = "dense"

Measure = Callable[[WeightSite, Encoded], float]
"""A measured error: the weight's site and one candidate's encoding -> the error."""


@dataclass(frozen=True)
class Option:
    """One way to store a weight: the candidate's ``name`` (``dense`` for none), its exact
    stored ``bytes``, its estimated ``error``, and the pass's ``decision`` (None: dense)."""

    name: str
    bytes: int
    error: float
    resolved: Resolved | None = None
    decision: Decision | None = None


@dataclass(frozen=True)
class WeightOptions:
    """A weight's options (dense first) and why the other candidates are not among them
    (``skipped``: candidate name -> reason); ``fixed`` says why only dense is offered
    (excluded, below ``weight_num_threshold``, unreadable)."""

    site: WeightSite
    options: tuple[Option, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    fixed: str | None = None


def _dense(site: WeightSite) -> Option:
    return Option(DENSE, site.size * site.dtype.itemsize, 0.0)


def weigh(
    sites: Sequence[WeightSite],
    candidates: Sequence[Resolved],
    calibration: Calibration | None,
    *,
    threshold: int,
    excluded: Callable[[WeightSite], str | None],
    on_weight: Callable[[int, int], None] | None = None,
    measure: Measure | None = None,
) -> list[WeightOptions]:
    """The options of every weight in ``sites`` (module doc); reads each weight once, changes
    nothing. ``excluded(site)`` gives the reason a weight stays dense, or None;
    ``measure(site, encoded)``, when given, is the error instead of the proxy.

    With the proxy, weights are weighed on the shared thread pool, several at once, each on
    one BLAS thread: pool threads that each ask BLAS for every core oversubscribe the
    machine (MiniLM, int8 candidate, next to two busy processes on 2 cores: 12.7-15.3 s
    with BLAS's default threads, 3.2-3.3 s with one). The result is the same in any order.
    Measured runs go one at a time (each changes the program it runs). ``on_weight(done,
    total)`` is called as weights finish."""
    lock = threading.Lock()
    finished = [0]

    def one(site: WeightSite) -> WeightOptions:
        result = _weigh_one(site, candidates, calibration, threshold, excluded(site), measure)
        if calibration is not None:  # statistics parked on disk: give their pages back
            release(calibration.stats.get(site.id))
        if on_weight is not None:
            with lock:
                finished[0] += 1
                on_weight(finished[0], len(sites))
        return result

    if measure is not None:
        return [one(site) for site in sites]
    return parallel_map(one, sites)  # with one BLAS thread per pool thread


def _weigh_one(
    site: WeightSite,
    candidates: Sequence[Resolved],
    calibration: Calibration | None,
    threshold: int,
    excluded: str | None,
    measure: Measure | None,
) -> WeightOptions:
    fixed = excluded or below_threshold(site, threshold)
    if fixed is not None:
        return WeightOptions(site, (_dense(site),), fixed=fixed)
    decisions: list[tuple[Resolved, Decision]] = []
    skipped: list[tuple[str, str]] = []
    for resolved in candidates:
        name = resolved.candidate.name
        if not resolved.offered_to(site):
            skipped.append((name, "not offered to this weight (match)"))
            continue
        decision = resolved.method.decide(site, resolved.options, calibration)
        if decision.mode is None:
            skipped.append((name, decision.reason or "does not apply to this weight"))
            continue
        decisions.append((resolved, replace(decision, options=resolved.options)))
    if not decisions:
        return WeightOptions(site, (_dense(site),), tuple(skipped))
    weight = read_weight(site)
    if isinstance(weight, str):
        return WeightOptions(site, (_dense(site),), fixed=weight)
    error_of = proxy_error(site, calibration)
    options = [_dense(site)]
    for resolved, decision in decisions:
        try:
            encoded = resolved.method.encode(weight, decision)
            if measure is None:
                error_value = encoded_error(encoded, weight, error_of)
            else:
                error_value = measure(site, encoded)
        except NonFiniteError as error:
            skipped.append((resolved.candidate.name, str(error)))
            continue
        except COMPRESS_ERRORS as error:
            why = f"could not compress: {type(error).__name__}: {error}"
            skipped.append((resolved.candidate.name, why))
            continue
        options.append(
            Option(resolved.candidate.name, encoded.bytes_after, error_value, resolved, decision)
        )
    return WeightOptions(site, tuple(options), tuple(skipped))


def encoded_error(
    encoded: Encoded, weight: np.ndarray, error_of: Callable[[np.ndarray], float]
) -> float:
    """``error_of`` the change ``encoded`` makes to ``weight`` (as the runtime decodes it)."""
    return error_of(encoded.decoded().astype(np.float32) - weight.astype(np.float32))


def proxy_error(site: WeightSite, calibration: Calibration | None) -> Callable[[np.ndarray], float]:
    """``delta -> error``: the proxy error of a change to ``site``'s weight (module doc)."""
    looked_up = any(name in GATHERS for name in site.consumers)
    stats = None
    if calibration is not None:
        stats = offered(site, calibration).stats
    out_axis, in_axis = site.out_axis, site.in_axis

    def error(delta: np.ndarray) -> float:
        total = 0.0
        if stats is not None and out_axis is not None and in_axis is not None:
            total += held_out_error(delta, stats, out_axis, in_axis)
        elif site.structured or not looked_up:  # a matmul or convolution reads it
            total += unit_input_error(delta)
        if looked_up:
            total += lookup_error(delta, out_axis or 0)
        return total

    return error
