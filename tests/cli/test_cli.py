"""coreai-sparsify as users run it: flags, report, validation, errors, and no damage."""

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils.numerics.metrics import cosine_similarity, snr_db
from coreai_opt.coreai_utils.runtime import run_asset
from tests.cli.conftest import CLI, WEIGHT, compress, run_cli, snapshot
from tests.reference import ref_magnitude, ref_nm

REPORT_KEYS = {
    "version",
    "command",
    "input",
    "output",
    "options",
    "calibration",
    "weights",
    "totals",
    "validation",
}
ROW_KEYS = {
    "name",
    "id",
    "path",
    "source",
    "algorithm",
    "shape",
    "dtype",
    "consumers",
    "kind",
    "mode",
    "joint",
    "reason",
    "sparsity",
    "bytes_before",
    "bytes_after",
}
TOTAL_KEYS = {
    "weights_considered",
    "weights_compressed",
    "weight_bytes_before",
    "weight_bytes_after",
    "asset_bytes_before",
    "asset_bytes_after",
    "ratio",
}


def read_back(asset: Path) -> np.ndarray:
    """The weight of the linear test model as the runtime rebuilds it."""
    return run_asset(asset, {"x": np.eye(40, dtype=np.float32)})["y"].T


def test_compress_writes_asset_and_leaves_input_untouched(
    source_asset: Path, tmp_path: Path
) -> None:
    before = snapshot(source_asset)
    out = tmp_path / "out.aimodel"
    run = run_cli(source_asset, "-o", out, "--weight-num-threshold", "0")
    assert run.code == 0, run.err
    assert "Traceback" not in run.err
    assert snapshot(source_asset) == before
    assert np.array_equal(read_back(out), ref_magnitude(WEIGHT, 0.5))
    assert "@main/w0" in run.out and "magnitude" in run.out
    assert "asset:" in run.out and "smaller" in run.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aimodel"], "no temporary leftovers"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--target-sparsity", "0.75"], lambda w: ref_magnitude(w, 0.75)),
        (["--n-m", "2:4"], lambda w: ref_nm(w, 2, 4, 1)),
        (["--n-m", "1:8"], lambda w: ref_nm(w, 1, 8, 1)),
    ],
    ids=["target", "2:4", "1:8"],
)
def test_sparsity_flags(
    source_asset: Path, tmp_path: Path, flags: list[str], expected: object
) -> None:
    out = tmp_path / "out.aimodel"
    run = run_cli(source_asset, "-o", out, "--weight-num-threshold", "0", *flags)
    assert run.code == 0, run.err
    assert np.array_equal(read_back(out), expected(WEIGHT))  # type: ignore[operator]


def test_block_size_flag(source_asset: Path, tmp_path: Path) -> None:
    _, out, report = compress(
        source_asset, tmp_path, "--weight-num-threshold", "0", "--block-size", "4"
    )
    assert report["weights"][0]["mode"] == "block"
    rebuilt = read_back(out)
    blocks = (rebuilt == 0).reshape(12, 4, 40)  # 48 output channels in blocks of 4
    assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1)), "blocks are pruned whole"


@pytest.mark.parametrize(
    "flag",
    [["--quantize-dtype", "int8"], ["--quantize-dtype", "fp8_e4m3fn"], ["--palettize-nbits", "4"]],
)
def test_joint_flags(source_asset: Path, tmp_path: Path, flag: list[str]) -> None:
    _, out, report = compress(source_asset, tmp_path, "--weight-num-threshold", "0", *flag)
    row = report["weights"][0]
    assert row["joint"] == (flag[1] if flag[0] == "--quantize-dtype" else "palettize4")
    rebuilt = read_back(out)
    assert np.all(rebuilt[ref_magnitude(WEIGHT, 0.5) == 0] == 0)


def test_threshold_flag_leaves_small_weights_dense(source_asset: Path, tmp_path: Path) -> None:
    _, out, report = compress(source_asset, tmp_path, "--weight-num-threshold", "5000")
    row = report["weights"][0]
    assert row["mode"] is None and "below weight_num_threshold=5000" in row["reason"]
    assert np.array_equal(read_back(out), WEIGHT)


def test_report_schema(source_asset: Path, tmp_path: Path) -> None:
    _, out, data = compress(
        source_asset, tmp_path, "--weight-num-threshold", "0", "--quantize-dtype", "uint8"
    )
    assert set(data) == REPORT_KEYS
    assert data["version"] == 3
    assert data["input"] == str(source_asset) and data["output"] == str(out)
    assert data["options"] == {
        "target_sparsity": 0.5,
        "n_m_ratio": None,
        "block_size": None,
        "quantize_dtype": "uint8",
        "palettize_nbits": None,
        "weight_num_threshold": 0,
        "algorithm": "magnitude",
        "exclude": [],
        "overrides": None,
    }
    assert data["calibration"] is None
    (row,) = data["weights"]
    assert set(row) == ROW_KEYS
    assert row["shape"] == [48, 40] and row["dtype"] == "float32" and row["kind"] == "linear"
    assert row["sparsity"] == 0.5 and row["bytes_before"] == 48 * 40 * 4
    assert row["id"] == "@main/w0" and row["algorithm"] == "magnitude"
    assert set(data["totals"]) == TOTAL_KEYS
    totals = data["totals"]
    assert totals["asset_bytes_after"] < totals["asset_bytes_before"]
    assert totals["ratio"] == pytest.approx(
        totals["asset_bytes_before"] / totals["asset_bytes_after"]
    )
    assert data["validation"] is None


def test_validate_numbers_match_a_known_case(source_asset: Path, tmp_path: Path) -> None:
    run, _, report = compress(source_asset, tmp_path, "--weight-num-threshold", "0", "--validate")
    result = report["validation"]
    assert result["seed"] == 0 and result["skipped"] == {} and result["inputs"] is None
    got = result["functions"]["main"]["y"]
    # the same seeded input, computed by hand with numpy
    x = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    reference, compressed = x @ WEIGHT.T, x @ ref_magnitude(WEIGHT, 0.5).T
    assert got["snr_db"] == pytest.approx(snr_db(reference, compressed), abs=1e-3)
    assert got["cosine"] == pytest.approx(cosine_similarity(reference, compressed), abs=1e-6)
    assert got["identical"] is False
    assert "SNR (dB)" in run.out and "main" in run.out


def test_validate_identical_outputs(source_asset: Path, tmp_path: Path) -> None:
    flags = ("--target-sparsity", "0", "--validate", "--weight-num-threshold", "0")
    _, _, report = compress(source_asset, tmp_path, *flags)
    got = report["validation"]["functions"]["main"]["y"]
    assert got == {"snr_db": None, "cosine": pytest.approx(1.0), "identical": True}


def test_quiet_prints_nothing(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(
        source_asset,
        "-o",
        tmp_path / "out.aimodel",
        "--quiet",
        "--block-size",
        "64",
        "--weight-num-threshold",
        "0",
    )
    assert run.code == 0
    assert run.out == ""
    assert "warning" not in run.err and "sparsifying" not in run.err


def test_warnings_shown_without_progress_bar_when_not_a_tty(
    source_asset: Path, tmp_path: Path
) -> None:
    run = run_cli(
        source_asset,
        "-o",
        tmp_path / "out.aimodel",
        "--block-size",
        "64",
        "--weight-num-threshold",
        "0",
    )
    assert run.code == 0
    assert (
        "warning: weight @main/w0" in run.err
        and "block_size=64 exceeds the 48 output channels" in run.err
    )
    assert "sparsifying" not in run.err, "no progress bar when stderr is not a terminal"


def test_force_replaces_existing_output(source_asset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.aimodel"
    assert run_cli(source_asset, "-o", out, "--weight-num-threshold", "0").code == 0
    run = run_cli(
        source_asset,
        "-o",
        out,
        "--weight-num-threshold",
        "0",
        "--target-sparsity",
        "0.9",
        "--force",
    )
    assert run.code == 0, run.err
    assert np.array_equal(read_back(out), ref_magnitude(WEIGHT, 0.9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aimodel"]


def test_demo(tmp_path: Path) -> None:
    out, report = tmp_path / "demo.aimodel", tmp_path / "r.json"
    run = run_cli("--demo", "-o", out, "--quantize-dtype", "int8", "--validate", "--report", report)
    assert run.code == 0, run.err
    data = json.loads(report.read_text())
    assert data["input"] == "<demo>"
    assert data["totals"]["weights_compressed"] == 8
    kinds = {row["kind"] for row in data["weights"]}
    # the tied embedding also feeds the lm head: reported as the embedding it is
    assert kinds == {"linear", "conv", "embedding"}
    outputs = data["validation"]["functions"]["main"]
    assert set(outputs) == {"logits", "features"}
    assert all(0.5 < v["cosine"] < 1.0 for v in outputs.values())
    assert data["totals"]["ratio"] > 4


@pytest.mark.skipif(
    shutil.which("script") is None, reason="needs util-linux script for a pseudo-terminal"
)
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal(tmp_path: Path, quiet: bool) -> None:
    command = [*CLI, "--demo", "-o", str(tmp_path / "d.aimodel"), *(["--quiet"] if quiet else [])]
    done = subprocess.run(
        ["script", "-qec", shlex.join(command), "/dev/null"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert ("sparsifying" in done.stdout) is not quiet


def test_validation_failure_is_reported_not_fatal(
    source_asset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """If the runtime cannot run a function, --validate says so; the output is still written."""
    from coreai_opt.cli import checks
    from coreai_opt.cli import main as cli_main

    def broken_runtime(*_: object) -> dict[str, np.ndarray]:
        raise RuntimeError("device lost")

    monkeypatch.setattr(checks, "run_asset", broken_runtime)
    out, report = tmp_path / "out.aimodel", tmp_path / "r.json"
    code = cli_main.main([str(source_asset), "-o", str(out), "--validate", "--report", str(report)])
    assert code == 0
    assert out.is_dir()
    validation = json.loads(report.read_text())["validation"]
    assert validation["skipped"] == {"main": "RuntimeError: device lost"}
    assert validation["functions"] == {}
    captured = capfd.readouterr()
    assert "not validated: main: RuntimeError: device lost" in captured.err, captured
