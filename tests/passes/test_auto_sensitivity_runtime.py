"""compress_to_size's sensitivities on the Core AI runtime: ``measured`` is the output error
of one weight compressed alone; the proxy's probes put every weight on that scale."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import Candidate, apply_choices, plan_to_size, weigh_candidates
from coreai_opt.coreai_utils.passes.auto.gains import probe_groups, probe_option
from coreai_opt.coreai_utils.runtime import run_asset
from tests.passes.auto_model import IDS, module_of, tiny_calibration, tiny_transformer

SAMPLES = [{"ids": ids} for ids in IDS[:2]]
LADDER = [
    Candidate("int4", "quantize", {"dtype": "int4"}),
    Candidate("pal3", "palettize", {"n_bits": 3}),
    Candidate("int8", "quantize", {"dtype": "int8"}),
]
PLAIN = [  # the ladder's data-free twins
    Candidate("int4", "quantize", {"dtype": "int4", "algorithm": "rtn"}),
    Candidate("pal3", "palettize", {"n_bits": 3, "algorithm": "kmeans"}),
    Candidate("int8", "quantize", {"dtype": "int8", "algorithm": "rtn"}),
]


def _errors(weighing: object) -> list[dict[str, float]]:
    return [{o.name: o.error for o in w.options} for w in weighing.weights]  # type: ignore[attr-defined]


def test_measured_sensitivity_is_the_output_error_of_that_weight_alone(tmp_path: Path) -> None:
    transformer, calibration = tiny_transformer(), tiny_calibration()
    before = str(module_of(transformer))
    candidates = [Candidate("int4", "quantize", {"dtype": "int4"})]
    weighing = weigh_candidates(
        transformer,
        calibration=calibration,
        candidates=candidates,
        sensitivity="measured",
        samples=SAMPLES,
        weight_num_threshold=0,
    )
    assert str(module_of(transformer)) == before  # the runs use a private copy
    assert weighing.sensitivity == "measured"
    head = weighing.weights[-1]
    measured = dict((o.name, o.error) for o in head.options)["int4"]
    alone = apply_choices(
        transformer,
        {head.site.id: "int4"},
        calibration=calibration,
        candidates=candidates,
        weight_num_threshold=0,
    )
    dense_asset, small_asset = tmp_path / "dense.aimodel", tmp_path / "small.aimodel"
    transformer.save_asset(dense_asset)  # type: ignore[attr-defined]
    alone.program.save_asset(small_asset)
    errors = [
        np.mean(
            (run_asset(small_asset, s)["y"].astype(np.float64) - run_asset(dense_asset, s)["y"])
            ** 2
        )
        for s in SAMPLES
    ]
    assert measured > 0 and np.isclose(measured, np.mean(errors), rtol=1e-9)


def test_measured_needs_samples() -> None:
    transformer = tiny_transformer()
    with pytest.raises(ValueError, match="needs samples"):
        plan_to_size(transformer, target_ratio=2.0, sensitivity="measured")
    with pytest.raises(ValueError, match="missing input 'ids'"):
        plan_to_size(transformer, target_ratio=2.0, sensitivity="measured", samples=[{"x": 1}])


def test_one_probe_per_weight_scales_its_options_to_the_measured_error() -> None:
    # each weight's gain: the measured output error of its probe candidate made data-free
    # (rtn, kmeans) over that change's proxy error; every option of the weight times it
    transformer, calibration = tiny_transformer(), tiny_calibration()
    common = {"calibration": calibration, "weight_num_threshold": 0, "samples": SAMPLES}
    proxy = weigh_candidates(transformer, candidates=LADDER, probes=0, **common)
    probed = weigh_candidates(transformer, candidates=LADDER, probes=1000, **common)
    plain = weigh_candidates(transformer, candidates=PLAIN, probes=0, **common)
    measured = weigh_candidates(transformer, candidates=PLAIN, sensitivity="measured", **common)
    count = sum(len(w.options) > 1 for w in proxy.weights)
    assert probed.sensitivity == f"proxy, calibrated across layers by {count} runtime runs"
    rows = zip(
        _errors(proxy),
        _errors(probed),
        _errors(plain),
        _errors(measured),
        proxy.weights,
        strict=True,
    )
    for before, after, plain_proxy, plain_measured, weight in rows:
        if len(before) == 1:
            continue
        probe = probe_option(weight).name
        gain = plain_measured[probe] / plain_proxy[probe]
        assert gain > 0
        assert all(np.isclose(after[k], before[k] * gain, rtol=1e-6) for k in before)


def test_one_probe_gives_every_weight_the_same_gain() -> None:
    transformer, calibration = tiny_transformer(), tiny_calibration()
    common = {"calibration": calibration, "candidates": LADDER, "weight_num_threshold": 0}
    proxy = weigh_candidates(transformer, probes=0, samples=SAMPLES, **common)
    probed = weigh_candidates(transformer, probes=1, samples=SAMPLES, **common)
    ratios = [
        after[name] / before[name]
        for before, after in zip(_errors(proxy), _errors(probed), strict=True)
        for name in before
        if before[name] > 0
    ]
    assert np.allclose(ratios, ratios[0], rtol=1e-9) and ratios[0] > 0
    assert probed.sensitivity.endswith("by 1 runtime runs")


def test_probe_groups_put_each_lookup_alone_and_split_the_rest_in_order() -> None:
    weighing = weigh_candidates(
        tiny_transformer(), calibration=tiny_calibration(), candidates=LADDER
    )  # the default threshold leaves some weights dense-only
    weights = weighing.weights
    movable = [i for i, w in enumerate(weights) if len(w.options) > 1]
    lookups = [i for i in movable if "coreai.gather_nd" in weights[i].site.consumers]
    assert lookups  # the embedding table
    rest = [i for i in movable if i not in lookups]
    for probes in (len(lookups) + 1, len(lookups) + 2, len(movable), len(movable) + 5):
        groups = probe_groups(weights, probes)
        assert sorted(i for g in groups for i in g) == movable
        assert all([i] in groups for i in lookups)
        shared = [g for g in groups if g[0] not in lookups]
        assert [i for g in shared for i in g] == rest  # consecutive, in IR order
        sizes = [len(g) for g in shared]
        assert len(groups) == min(probes, len(movable))
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    # fewer probes than lookups + 1: one consecutive split of every weight
    groups = probe_groups(weights, len(lookups))
    assert [i for g in groups for i in g] == movable and len(groups) == len(lookups)
    assert probe_groups(weights, 0) == []


def test_without_samples_the_proxy_is_layer_local_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="coreai_opt"):
        plan = plan_to_size(tiny_transformer(), target_ratio=3.0, calibration=tiny_calibration())
    assert plan.sensitivity == "proxy"
    assert "not calibrated across layers (no samples)" in caplog.text


@pytest.mark.parametrize(
    ("probes", "error", "message"),
    [(-1, ValueError, "probes must be 0"), ("4", TypeError, "probes must be an int")],
)
def test_bad_probes_are_refused(probes: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        plan_to_size(tiny_transformer(), target_ratio=2.0, samples=SAMPLES, probes=probes)  # type: ignore[arg-type]
