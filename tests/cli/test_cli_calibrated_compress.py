"""coreai-compress quantize|palettize with --calibration, --algorithm, --config, --exclude,
--plan and --padding-mask: the library's results, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import (
    DType,
    collect_calibration,
    palettize_weights,
    quantize_weights,
)
from coreai_opt.coreai_utils.assets import load_program
from tests.cli.conftest import snapshot
from tests.cli.test_cli_calibration import samples_file
from tests.cli.test_cli_compress import compress_cli, read_back


def library_calibration(source: Path, data: Path) -> object:
    with np.load(data) as arrays:
        samples = [{"x": x} for x in arrays["x"]]
    return collect_calibration(load_program(source), samples)


def test_quantize_with_calibration_is_gptq_by_default(source_asset: Path, tmp_path: Path) -> None:
    data = samples_file(tmp_path / "cal.npz", count=4)
    out, report = tmp_path / "q.aimodel", tmp_path / "q.json"
    before = snapshot(source_asset)
    run = compress_cli(
        "quantize", source_asset, "-o", out, "--dtype", "int4", "--granularity", "per_block",
        "--block-size", "8", "--weight-num-threshold", "0", "--calibration", data,
        "--report", report,
    )  # fmt: skip
    assert run.code == 0, run.err
    assert snapshot(source_asset) == before
    written = json.loads(report.read_text())
    assert written["options"]["algorithm"] == "gptq"
    assert written["calibration"]["samples"] == 4
    (row,) = written["weights"]
    assert row["algorithm"] == "gptq" and row["joint"] == "int4"
    expected = quantize_weights(
        load_program(source_asset),
        DType.INT4,
        granularity="per_block",
        block_size=8,
        weight_num_threshold=0,
        calibration=library_calibration(source_asset, data),  # type: ignore[arg-type]
    )
    expected.save_asset(tmp_path / "e.aimodel")
    assert np.array_equal(read_back(out), read_back(tmp_path / "e.aimodel"))
    assert "gptq per_block + int4" in run.out


def test_palettize_algorithm_config_and_exclude(source_asset: Path, tmp_path: Path) -> None:
    data = samples_file(tmp_path / "cal.npz")
    config = tmp_path / "c.toml"
    config.write_text('n_bits = 3\nalgorithm = "weighted_kmeans"\nweight_num_threshold = 0\n')
    out, report = tmp_path / "p.aimodel", tmp_path / "p.json"
    run = compress_cli(
        "palettize", source_asset, "-o", out, "--config", config, "--calibration", data,
        "--report", report,
    )  # fmt: skip
    assert run.code == 0, run.err
    (row,) = json.loads(report.read_text())["weights"]
    assert row["algorithm"] == "weighted_kmeans" and row["joint"] == "palettize3"
    expected = palettize_weights(
        load_program(source_asset),
        n_bits=3,
        weight_num_threshold=0,
        algorithm="weighted_kmeans",
        calibration=library_calibration(source_asset, data),  # type: ignore[arg-type]
    )
    expected.save_asset(tmp_path / "e.aimodel")
    assert np.array_equal(read_back(out), read_back(tmp_path / "e.aimodel"))
    excluded = compress_cli(
        "palettize", source_asset, "-o", tmp_path / "x.aimodel", "--config", config,
        "--calibration", data, "--exclude", "@main/*", "--report", report,
    )  # fmt: skip
    assert excluded.code == 0, excluded.err
    (row,) = json.loads(report.read_text())["weights"]
    assert row["mode"] is None and row["reason"] == "excluded by @main/*"


def test_plan_names_the_algorithm_and_writes_nothing(source_asset: Path, tmp_path: Path) -> None:
    data = samples_file(tmp_path / "cal.npz")
    run = compress_cli(
        "quantize", source_asset, "--plan", "--dtype", "int8", "--weight-num-threshold", "0",
        "--calibration", data,
    )  # fmt: skip
    assert run.code == 0, run.err
    assert "dry run" in run.out and "gptq per_channel" in run.out and "int8" in run.out
    assert "calibration is not run by --plan" in run.out
    assert not list(tmp_path.glob("*.aimodel"))
    planned = compress_cli(
        "palettize", source_asset, "--plan", "--n-bits", "2", "--weight-num-threshold", "0",
    )  # fmt: skip
    assert planned.code == 0, planned.err
    assert "kmeans per_tensor" in planned.out and "palettize2" in planned.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["quantize", "{src}", "-o", "{out}", "--dtype", "int8", "--algorithm", "gptq"],
            "--algorithm gptq needs --calibration FILE.npz",
        ),
        (
            ["palettize", "{src}", "-o", "{out}", "--algorithm", "obs"],
            "--algorithm obs needs --calibration FILE.npz",
        ),
        (
            ["quantize", "{src}", "-o", "{out}", "--dtype", "int8", "--algorithm", "obs"],
            "invalid choice: 'obs'",
        ),
        (
            ["palettize", "{src}", "-o", "{out}", "--padding-mask", "x"],
            "--padding-mask needs --calibration FILE.npz",
        ),
        (
            ["palettize", "{src}", "-o", "{out}", "--calibration", "{cal}", "--padding-mask", "m"],
            "--padding-mask 'm' is not an input of 'main'",
        ),
        (
            [
                "quantize",
                "{src}",
                "-o",
                "{out}",
                "--dtype",
                "int8",
                "--calibration",
                "{cal}",
                "--padding-mask",
                "x",
            ],
            "--padding-mask 'x' must be an integer or bool input",
        ),
        (
            ["quantize", "{src}", "-o", "{out}", "--dtype", "int8", "--config", "{toml}"],
            "unknown key 'n_bits'",
        ),
    ],
)
def test_errors_are_one_line_and_write_nothing(
    args: list[str], message: str, source_asset: Path, tmp_path: Path
) -> None:
    cal = samples_file(tmp_path / "cal.npz")
    toml = tmp_path / "c.toml"
    toml.write_text("n_bits = 4\n")
    out = tmp_path / "o.aimodel"
    run = compress_cli(*(a.format(src=source_asset, out=out, cal=cal, toml=toml) for a in args))
    assert run.code == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coreai-compress: error: "), run.err
    assert message in lines[0]
    assert not out.exists()
