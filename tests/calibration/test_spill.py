"""collect_calibration with max_stats_bytes: statistics spilled to disk are bit-identical to
those held in memory, the passes give the same programs, and a short disk is an error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils import (
    Calibration,
    collect_calibration,
    quantize_weights,
    sparsify_weights,
)
from coreai_opt.coreai_utils.calibration import capture_run, spill
from coreai_opt.coreai_utils.calibration.spill import RowSpill, park
from coreai_opt.coreai_utils.memory import drop_array_pages
from coreai_opt.coreai_utils.numerics.activations import StatsLayout, empty_stats
from coreai_opt.coreai_utils.passes.calibrated import release
from tests.helpers import run_program, status_bytes
from tests.torch_models import MLP, TinyTransformer, convert

torch.manual_seed(0)


def _same(one: Calibration, other: Calibration) -> None:
    assert one.stats.keys() == other.stats.keys()
    for key, stats in one.stats.items():
        got = other.stats[key]
        assert (got.layout, got.count) == (stats.layout, stats.count)
        np.testing.assert_array_equal(got.sq_sum, stats.sq_sum)
        if stats.gram is None:
            assert got.gram is None
        else:
            assert got.gram is not None
            np.testing.assert_array_equal(got.gram, stats.gram)


def test_row_spill_replays_the_blocks_of_a_capture_in_memory() -> None:
    rng = np.random.default_rng(0)
    held = [empty_stats(StatsLayout.CONV, 2, 12, with_gram=True) for _ in range(2)]
    with tempfile.TemporaryFile() as file:  # two spills sharing one file, interleaved
        spilled = [RowSpill(StatsLayout.CONV, 2, 12, file) for _ in range(2)]
        for count in (3, 5, 1, 9, 2, 4, 11):  # blocks complete at irregular points
            for k in range(2):
                rows = rng.standard_normal((2, count, 12)).astype(np.float16)
                held[k].add(rows)
                spilled[k].add(rows)
                assert spilled[k].pending_bytes == held[k].pending_bytes
        for spill, stats in zip(spilled, held, strict=True):
            stats.flush()
            replayed = spill.replay()
            assert spill.written == 2 * 35 * 12 * 2  # the rows in their own type (fp16)
            assert replayed.count == stats.count == 35
            np.testing.assert_array_equal(replayed.sq_sum, stats.sq_sum)
            np.testing.assert_array_equal(replayed.gram, stats.gram)  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [0, 40_000])
def test_budgeted_capture_is_bit_identical(budget: int) -> None:
    # 0: every X^T X spills; 40 kB: the first activations fit (q/k/v's 32x32 Gram:
    # 8 kB), later ones spill. 24 rows a sample: blocks end inside samples.
    model = TinyTransformer().eval()
    samples = [{"ids": torch.randint(0, 64, (3, 8), dtype=torch.int32)} for _ in range(5)]
    program = convert(model, samples[0])
    inputs = [{"ids": s["ids"].numpy()} for s in samples]
    held = collect_calibration(program, inputs)
    bounded = collect_calibration(program, inputs, max_stats_bytes=budget)
    _same(held, bounded)
    grams = [s.gram for s in bounded.stats.values() if s.gram is not None]
    assert grams and all(isinstance(g, np.memmap) and not g.flags.writeable for g in grams)
    stats = [bounded.stats[f"@main/w{k}"] for k in range(1, 4)]
    assert stats[0] is stats[1] is stats[2]  # still shared by q, k and v
    # several capture runs, with a budget
    split = collect_calibration(program, inputs, max_stats_bytes=budget, max_capture_bytes=1)
    _same(held, split)


def test_passes_give_the_same_programs_with_parked_statistics(tmp_path: Path) -> None:
    model = MLP().eval()
    samples = [{"x": torch.randn(5, 24).numpy()} for _ in range(4)]
    program = convert(model, {"x": torch.from_numpy(samples[0]["x"])})
    held = collect_calibration(program, samples)
    bounded = collect_calibration(program, samples, max_stats_bytes=0)
    for name, run in (
        ("sparsegpt", lambda c: sparsify_weights(program, calibration=c, algorithm="sparsegpt")),
        ("gptq", lambda c: quantize_weights(program, calibration=c, dtype="int4")),
    ):
        one = run_program(run(held), samples[0], tmp_path / f"{name}-held.aimodel")
        other = run_program(run(bounded), samples[0], tmp_path / f"{name}-bounded.aimodel")
        for key, value in one.items():
            np.testing.assert_array_equal(other[key], value)


def test_saved_and_loaded_like_any_calibration(tmp_path: Path) -> None:
    model = MLP().eval()
    samples = [{"x": torch.randn(5, 24).numpy()} for _ in range(2)]
    program = convert(model, {"x": torch.from_numpy(samples[0]["x"])})
    bounded = collect_calibration(program, samples, max_stats_bytes=0)
    bounded.save(tmp_path / "c.npz")
    loaded = Calibration.load(tmp_path / "c.npz")
    _same(bounded, loaded)
    assert all(not isinstance(s.gram, np.memmap) for s in loaded.stats.values())
    # mapped from the file: same values, nothing read until used
    mapped = Calibration.load(tmp_path / "c.npz", mmap_mode="r")
    _same(bounded, mapped)
    grams = [s.gram for s in mapped.stats.values() if s.gram is not None]
    assert len(grams) == 3 and all(isinstance(g, np.memmap) for g in grams)
    one = sparsify_weights(program, calibration=loaded, algorithm="sparsegpt")
    other = sparsify_weights(program, calibration=mapped, algorithm="sparsegpt")
    x = {"x": samples[1]["x"]}
    got = run_program(other, x, tmp_path / "other.aimodel")
    for key, value in run_program(one, x, tmp_path / "one.aimodel").items():
        np.testing.assert_array_equal(got[key], value)
    with pytest.raises(ValueError, match="mmap_mode must be None or 'r'"):
        Calibration.load(tmp_path / "c.npz", mmap_mode="w+")


def test_too_little_disk_is_an_error_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    program = convert(MLP().eval(), {"x": torch.randn(5, 24)})
    samples = [{"x": np.ones((5, 24), np.float32)}]

    class Usage:
        free = 1000

    def no_run(*_: object) -> None:
        raise AssertionError("ran")

    monkeypatch.setattr(spill.shutil, "disk_usage", lambda _: Usage())
    monkeypatch.setattr(capture_run, "run_samples", no_run)
    with pytest.raises(ValueError, match=r"beyond max_stats_bytes \(0.0 MiB\).*TMPDIR"):
        collect_calibration(program, samples, max_stats_bytes=0)
    # without a budget: the program the runtime runs and its compiled form
    with pytest.raises(ValueError, match=r"two copies of the program's .* of weights\), which"):
        collect_calibration(program, samples)
    with pytest.raises(ValueError, match="max_stats_bytes must be a non-negative int"):
        collect_calibration(program, samples, max_stats_bytes=-1)


def test_parked_pages_are_given_back() -> None:
    stats = empty_stats(StatsLayout.LINEAR, 1, 4096, with_gram=True)  # 128 MiB
    assert stats.gram is not None
    stats.gram += 1.0
    parked = park(stats)
    del stats
    assert isinstance(parked.gram, np.memmap)
    before = status_bytes("RssFile")
    assert float(parked.gram.sum()) == 4096.0**2  # every page read
    read = status_bytes("RssFile")
    release(parked)
    after = status_bytes("RssFile")
    assert read - before > 100 << 20
    assert read - after > 100 << 20
    assert float(parked.gram[0, 4095, 4095]) == 1.0  # still there: read again from the file
    # arrays in memory are never touched
    plain = np.ones(1 << 20)
    assert drop_array_pages(plain, None) == 0
    assert plain.sum() == 1 << 20
