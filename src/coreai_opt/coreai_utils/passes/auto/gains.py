"""The proxy calibrated across layers: a few runtime runs put every weight's errors on the
scale of the model's outputs.

The proxy (``sensitivity.py``) measures an option's error at the weight's own layer
output. Between the options of one weight that ranks well; between weights it does not:
an error in an early layer is carried (and amplified or damped) by everything after it,
a normalisation divides it away, a weight without statistics has a data-free scale. So
the weights that can be compressed (more than one option) are split into at most ``probes``
groups: each weight read by a lookup alone (its proxy is another formula), the others in
runs of consecutive weights of (nearly) equal count, in IR order (:func:`probe_groups`).
For each group the program is run on the Core AI runtime with every weight of the group
compressed at its *probe option* at once; the group's gain is the measured output error
(mean squared difference from the dense outputs, as ``sensitivity="measured"``) over the
group's summed proxy errors, and every option of those weights is multiplied by it. With
as many probes as weights, each weight gets a gain of its own (one run per weight, against
one per weight and candidate for ``measured``).

The probe of a weight is its compressed option of median proxy error (the lower one of the
two middle ones: strong enough to be measured, the regime tight budgets push weights into,
not so strong that one group's error saturates the outputs), made *data-free*: the same
candidate with its pass's data-free algorithm (magnitude, round-to-nearest, k-means). The
runs use calibration samples, and a change fitted to them (GPTQ, SparseGPT, OBS) would look
better on them than it is; a data-free change is as large on them as on any input, so the
gain is what the layer's error does to the outputs, not how well a fit hides it. (The proxy
of the fitted options is itself a held-out estimate, ``numerics/layer_error.py``.)

Assumptions, stated where they are made: errors of different weights add up at the
outputs (so a group's error is the sum of its weights'), and a weight's gain is the same
for all its options (the proxy's ranking of its own options is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.ir.weights import GATHERS, WeightSite
from coreai_opt.coreai_utils.passes.auto.sensitivity import (
    Option,
    WeightOptions,
    encoded_error,
    proxy_error,
)
from coreai_opt.coreai_utils.passes.outcomes import read_weight
from coreai_opt.coreai_utils.passes.runner import Encoded

__all__ = ["DEFAULT_PROBES", "apply_gains", "probe_groups", "probe_option"]

DEFAULT_PROBES = 16
"""How many runtime runs calibrate the proxy by default (when samples are given)."""

Together = Callable[[Sequence[tuple[WeightSite, Encoded]]], float]
"""The measured output error with several weights compressed at once."""


def probe_option(weight: WeightOptions) -> Option:
    """The compressed option of median proxy error (the lower middle one; ties by the
    candidates' order). ``ValueError`` when the weight has none."""
    compressed = [o for o in weight.options if o.resolved is not None]
    if not compressed:
        msg = f"{weight.site.id} has no compressed option to probe"
        raise ValueError(msg)
    ordered = sorted(range(len(compressed)), key=lambda k: (compressed[k].error, k))
    return compressed[ordered[(len(ordered) - 1) // 2]]


def probe_groups(weights: Sequence[WeightOptions], probes: int) -> list[list[int]]:
    """Indices of the weights with a compressed option, in at most ``probes`` groups.

    A weight read by a lookup (an embedding table, a tied embedding / LM head) is a group of
    its own while fewer lookups than ``probes`` remain: its proxy is another formula (the
    error of one looked-up row, every row equally likely, where real inputs use a few rows
    often), so its gain is its own. The others, in IR order, are split into the remaining
    groups, consecutive, of sizes differing by at most one (larger ones first). With as
    many lookups as probes or more, every weight is in the consecutive split."""
    movable = [i for i, w in enumerate(weights) if len(w.options) > 1]
    lookups = [i for i in movable if any(c in GATHERS for c in weights[i].site.consumers)]
    if len(lookups) >= probes:
        lookups = []
    alone = set(lookups)
    rest = [i for i in movable if i not in alone]
    groups = [[i] for i in lookups]
    count = min(probes - len(groups), len(rest))
    if count <= 0:
        return groups
    size, extra = divmod(len(rest), count)
    start = 0
    for g in range(count):
        end = start + size + (1 if g < extra else 0)
        groups.append(rest[start:end])
        start = end
    return sorted(groups, key=lambda group: group[0])


def apply_gains(
    weights: Sequence[WeightOptions],
    calibration: Calibration | None,
    probes: int,
    together: Together,
    on_probe: Callable[[int, int], None] | None = None,
) -> tuple[list[WeightOptions], int]:
    """Every weight's options with its group's gain applied (module doc; ``calibration`` is
    the weighing's; weights with only dense are unchanged), and the runtime runs made. A group
    whose probes' summed proxy error is 0 takes the median gain of the others (1.0 when
    there is none)."""
    groups = probe_groups(weights, probes)
    measured_gains: list[float | None] = []
    for done, group in enumerate(groups, start=1):
        replaced, proxy = [], 0.0
        for index in group:
            weight = weights[index]
            encoded, error = _probe(weight.site, probe_option(weight), calibration)
            replaced.append((weight.site, encoded))
            proxy += error
        measured = together(replaced)
        del replaced
        measured_gains.append(measured / proxy if proxy > 0 else None)
        if on_probe is not None:
            on_probe(done, len(groups))
    known = [g for g in measured_gains if g is not None]
    fallback = float(np.median(known)) if known else 1.0
    final = [1.0] * len(weights)
    for group, gain in zip(groups, measured_gains, strict=True):
        for index in group:
            final[index] = fallback if gain is None else gain
    scaled = [
        replace(w, options=tuple(replace(o, error=o.error * gain) for o in w.options))
        for w, gain in zip(weights, final, strict=True)
    ]
    return scaled, len(groups)


def _probe(
    site: WeightSite, option: Option, calibration: Calibration | None
) -> tuple[Encoded, float]:
    """The data-free twin of ``option`` for ``site`` (module doc): its encoding and proxy
    error; the option itself where the twin does not apply."""
    resolved, decision = option.resolved, option.decision
    if resolved is None or decision is None:  # probe_option never picks dense
        msg = "a dense option has nothing to encode"
        raise ValueError(msg)
    weight = read_weight(site)
    if isinstance(weight, str):
        raise ValueError(weight)
    plain = _data_free(resolved.options)
    twin = resolved.method.decide(site, plain, None)
    if twin.mode is not None:
        decision = replace(twin, options=plain)
    encoded = resolved.method.encode(weight, decision)
    return encoded, encoded_error(encoded, weight, proxy_error(site, calibration))


def _data_free(options: Any) -> Any:
    """``options`` with the pass's data-free algorithm (its options record's default)."""
    default = next(f.default for f in fields(options) if f.name == "algorithm")
    return replace(options, algorithm=default)
