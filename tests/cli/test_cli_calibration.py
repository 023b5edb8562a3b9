"""coreai-sparsify with --calibration, --algorithm and --validate-with."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import collect_calibration
from coreai_opt.coreai_utils.assets import load_program
from coreai_opt.coreai_utils.numerics.activations import input_norms
from coreai_opt.coreai_utils.runtime import run_asset
from tests.cli.conftest import WEIGHT, compress, run_cli, snapshot
from tests.reference import ref_wanda

IN = WEIGHT.shape[1]


def samples_file(
    path: Path, count: int = 3, dtype: type = np.float32, shape: tuple[int, ...] = (IN, IN)
) -> Path:
    rng = np.random.default_rng(0)
    scales = np.geomspace(0.05, 5.0, shape[-1]) if shape else 1.0
    np.savez(path, x=(rng.standard_normal((count, *shape)) * scales).astype(dtype))
    return path


def test_calibrated_wanda_with_report(source_asset: Path, tmp_path: Path) -> None:
    data_path = samples_file(tmp_path / "cal.npz")
    before = snapshot(source_asset)
    run, out, report = compress(
        source_asset, tmp_path, "--calibration", data_path, "--weight-num-threshold", "0"
    )
    assert snapshot(source_asset) == before
    assert report["options"]["algorithm"] == "wanda"
    assert report["calibration"] == {
        "file": str(data_path),
        "function": "main",
        "samples": 3,
        "padding_mask": None,
    }
    (row,) = report["weights"]
    assert row["algorithm"] == "wanda" and row["reason"] is None
    # the library's own statistics give the same result
    with np.load(data_path) as data:
        samples = [{"x": x} for x in data["x"]]
    stats = collect_calibration(load_program(source_asset), samples).stats["@main/w0"]
    expected = ref_wanda(WEIGHT, input_norms(stats, WEIGHT.shape, 0, 1), 0.5, 0)
    got = run_asset(out, {"x": np.eye(IN, dtype=np.float32)})["y"].T
    assert np.array_equal(got, expected)
    assert "wanda unstructured" in run.out


def test_sparsegpt_and_validate_with(source_asset: Path, tmp_path: Path) -> None:
    calibration = samples_file(tmp_path / "cal.npz", count=4)
    held_out = samples_file(tmp_path / "val.npz", count=2)
    run, _, report = compress(
        source_asset,
        tmp_path,
        "--calibration",
        calibration,
        "--algorithm",
        "sparsegpt",
        "--n-m",
        "2:4",
        "--weight-num-threshold",
        "0",
        "--validate-with",
        held_out,
    )
    (row,) = report["weights"]
    assert row["algorithm"] == "sparsegpt" and row["mode"] == "n:m"
    validation = report["validation"]
    assert validation["inputs"] == str(held_out) and validation["seed"] is None
    result = validation["functions"]["main"]["y"]
    assert 0.5 < result["cosine"] < 1.0
    assert "inputs from" in run.out and "val.npz" in run.out


def test_magnitude_algorithm_does_not_calibrate(source_asset: Path, tmp_path: Path) -> None:
    data_path = samples_file(tmp_path / "cal.npz")
    _, _, report = compress(
        source_asset,
        tmp_path,
        "--calibration",
        data_path,
        "--algorithm",
        "magnitude",
        "--weight-num-threshold",
        "0",
    )
    assert report["calibration"] is None and report["weights"][0]["algorithm"] == "magnitude"


def test_quiet_prints_nothing_from_the_runtime(source_asset: Path, tmp_path: Path) -> None:
    data_path = samples_file(tmp_path / "cal.npz")
    run = run_cli(
        source_asset,
        "-o",
        tmp_path / "o.aimodel",
        "--calibration",
        data_path,
        "--validate",
        "--quiet",
    )
    assert run.code == 0
    assert run.err == "" and run.out == ""


def test_loud_run_hides_the_runtime_loading_notices(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(source_asset, "-o", tmp_path / "o.aimodel", "--validate")
    assert run.code == 0
    assert "ODIE" not in run.err and "Loading function" not in run.err


def _bad(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.npz", "no such file"),
        (
            lambda d: (d / "text.npz").write_text("not a zip") and d / "text.npz",
            "not a readable .npz",
        ),
        (lambda d: (np.save(d / "arr.npy", np.zeros(3)), d / "arr.npy")[1], "not an .npz archive"),
        (lambda d: _bad(d / "k.npz", y=np.zeros((2, IN, IN), np.float32)), "missing array 'x'"),
        (
            lambda d: _bad(d / "e.npz", x=np.zeros((2, IN, IN), np.float32), z=np.zeros(1)),
            "unknown array 'z'",
        ),
        (
            lambda d: _bad(d / "t.npz", x=np.zeros((2, IN, IN))),
            "must have dtype float32, got float64",
        ),
        (
            lambda d: _bad(d / "s.npz", x=np.zeros((2, IN, 3), np.float32)),
            rf"must have shape \[samples, {IN}, {IN}\]",
        ),
        (lambda d: _bad(d / "z.npz", x=np.zeros((0, IN, IN), np.float32)), "no samples"),
    ],
)
@pytest.mark.parametrize("flag", ["--calibration", "--validate-with"])
def test_bad_sample_files_are_one_line_errors(
    make: object, message: str, flag: str, source_asset: Path, tmp_path: Path
) -> None:
    bad = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "o.aimodel"
    run = run_cli(source_asset, "-o", out, flag, bad)
    assert run.code == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"coreai-sparsify: error: {flag} ")
    assert message in lines[0] or __import__("re").search(message, lines[0])
    assert not out.exists()


def test_algorithm_needs_calibration(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(source_asset, "-o", tmp_path / "o.aimodel", "--algorithm", "sparsegpt")
    assert run.code == 2
    assert (
        run.err.strip()
        == "coreai-sparsify: error: --algorithm sparsegpt needs --calibration FILE.npz"
    )


def test_long_errors_stay_on_one_line(source_asset: Path, tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "missing-calibration-samples.npz"
    run = run_cli(source_asset, "-o", tmp_path / "o.aimodel", "--calibration", deep)
    assert run.code == 2
    assert len(run.err.strip().splitlines()) == 1 and str(deep) in run.err


def test_stats_memory_spills_and_changes_nothing(source_asset: Path, tmp_path: Path) -> None:
    calibration = samples_file(tmp_path / "cal.npz", count=3)
    flags = (
        "--calibration",
        calibration,
        "--algorithm",
        "sparsegpt",
        "--weight-num-threshold",
        "0",
    )
    (tmp_path / "held").mkdir()
    (tmp_path / "spilled").mkdir()
    _, held, _ = compress(source_asset, tmp_path / "held", *flags)
    _, spilled, _ = compress(source_asset, tmp_path / "spilled", *flags, "--stats-memory", "1")
    identity = {"x": np.eye(IN, dtype=np.float32)}
    assert np.array_equal(run_asset(spilled, identity)["y"], run_asset(held, identity)["y"])
    run = run_cli(source_asset, "-o", tmp_path / "o.aimodel", "--stats-memory", "1GB")
    assert (run.code, run.err.strip()) == (
        2,
        "coreai-sparsify: error: --stats-memory needs --calibration FILE.npz",
    )
    run = run_cli(source_asset, "-o", tmp_path / "o.aimodel", "--stats-memory", "lots")
    assert run.code == 2 and "--stats-memory" in run.err


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_too_little_disk_is_refused_before_any_work(
    source_asset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from coreai_opt.cli import main as cli_main
    from coreai_opt.coreai_utils.calibration import capture_run

    def no_run(*_: object) -> None:
        raise AssertionError("ran")

    monkeypatch.setattr(capture_run, "run_samples", no_run)
    out = tmp_path / "out.aimodel"
    # the output's disk: the asset is ~8 kB, 50 % sparsity saves under half of the weights
    monkeypatch.setattr("shutil.disk_usage", lambda _: _Usage(1000))
    assert cli_main.main([str(source_asset), "-o", str(out), "--quiet"]) == 2
    err = capfd.readouterr().err
    assert f"not enough disk for {out}: it needs about" in err and "has 0.0 MiB free" in err
    assert not out.exists() and not list(tmp_path.iterdir())
    # the temporary directory, for statistics beyond --stats-memory
    temporary = tempfile.gettempdir()
    monkeypatch.setattr(
        "shutil.disk_usage", lambda path: _Usage(1000 if str(path) == temporary else 1 << 40)
    )
    calibration = samples_file(tmp_path / "cal.npz")
    code = cli_main.main(
        [str(source_asset), "-o", str(out), "--quiet", "--calibration", str(calibration),
         "--algorithm", "sparsegpt", "--weight-num-threshold", "0", "--stats-memory", "1"]
    )  # fmt: skip
    assert code == 2
    err = capfd.readouterr().err
    assert "beyond --stats-memory" in err and "TMPDIR" in err and not out.exists()
