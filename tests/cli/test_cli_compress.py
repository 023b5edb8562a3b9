"""coreai-compress {sparsify,quantize,palettize}: one command for the three passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils import DType, palettize_weights, quantize_weights
from coreai_opt.coreai_utils.assets import load_program
from coreai_opt.coreai_utils.runtime import run_asset
from tests.cli.conftest import WEIGHT, Run, snapshot

COMPRESS = [sys.executable, "-m", "coreai_opt.cli.compress"]
IN = WEIGHT.shape[1]


def compress_cli(*args: str | Path) -> Run:
    done = subprocess.run(
        [*COMPRESS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return Run(done.returncode, done.stdout, done.stderr)


def read_back(asset: Path) -> np.ndarray:
    return run_asset(asset, {"x": np.eye(IN, dtype=np.float32)})["y"].T


def test_quantize(source_asset: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "q.aimodel", tmp_path / "q.json"
    before = snapshot(source_asset)
    run = compress_cli(
        "quantize",
        source_asset,
        "-o",
        out,
        "--dtype",
        "int4",
        "--granularity",
        "per_block",
        "--block-size",
        "16",
        "--weight-num-threshold",
        "0",
        "--validate",
        "--report",
        report,
    )
    assert run.code == 0, run.err
    assert snapshot(source_asset) == before
    data = json.loads(report.read_text())
    assert data["command"] == "quantize" and data["options"]["dtype"] == "int4"
    (row,) = data["weights"]
    assert row["mode"] == "per_block" and row["joint"] == "int4" and row["sparsity"] is None
    assert data["validation"]["functions"]["main"]["y"]["cosine"] > 0.95
    expected = quantize_weights(
        load_program(source_asset),
        DType.INT4,
        granularity="per_block",
        block_size=16,
        weight_num_threshold=0,
    )
    expected.save_asset(tmp_path / "e.aimodel")
    assert np.array_equal(read_back(out), read_back(tmp_path / "e.aimodel"))
    assert "coreai-compress quantize" in run.out and "per_block + int4" in run.out


def test_palettize(source_asset: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "p.aimodel", tmp_path / "p.json"
    run = compress_cli(
        "palettize",
        source_asset,
        "-o",
        out,
        "--n-bits",
        "6",
        "--granularity",
        "per_grouped_channel",
        "--group-size",
        "8",
        "--lut-dtype",
        "int8",
        "--weight-num-threshold",
        "0",
        "--report",
        report,
    )
    assert run.code == 0, run.err
    data = json.loads(report.read_text())
    assert data["command"] == "palettize" and data["options"]["n_bits"] == 6
    assert data["weights"][0]["joint"] == "palettize6 (int8 LUT)"
    expected = palettize_weights(
        load_program(source_asset),
        DType.INT8,
        n_bits=6,
        granularity="per_grouped_channel",
        group_size=8,
        weight_num_threshold=0,
    )
    expected.save_asset(tmp_path / "e.aimodel")
    assert np.array_equal(read_back(out), read_back(tmp_path / "e.aimodel"))


def test_sparsify_is_coreai_sparsify(source_asset: Path, tmp_path: Path) -> None:
    run = compress_cli(
        "sparsify",
        source_asset,
        "-o",
        tmp_path / "s.aimodel",
        "--n-m",
        "2:4",
        "--weight-num-threshold",
        "0",
        "--report",
        tmp_path / "s.json",
    )
    assert run.code == 0, run.err
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["command"] == "sparsify" and data["weights"][0]["mode"] == "n:m"


def test_quiet_prints_nothing(source_asset: Path, tmp_path: Path) -> None:
    run = compress_cli(
        "palettize", source_asset, "-o", tmp_path / "p.aimodel", "--validate", "--quiet"
    )
    assert run.code == 0 and run.out == "" and run.err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: command"),
        (["shrink"], "invalid choice: 'shrink'"),
        (["quantize", "{src}", "-o", "{out}"], "missing --dtype"),
        (["quantize", "{src}", "-o", "{out}", "--dtype", "int3"], "invalid choice: 'int3'"),
        (
            ["quantize", "{src}", "-o", "{out}", "--dtype", "fp4_e2m1fn"],
            "needs --granularity=per_block with --block-size=32",
        ),
        (
            [
                "quantize",
                "{src}",
                "-o",
                "{out}",
                "--dtype",
                "int8",
                "--qscheme",
                "asymmetric",
                "--scale-dtype",
                "fp8_e8m0fnu",
            ],
            "--scale-dtype is for floating-point dtypes",
        ),
        (
            ["palettize", "{src}", "-o", "{out}", "--cluster-dim", "2", "--per-channel-scale"],
            "scalar palettes only",
        ),
        (["palettize", "{src}", "-o", "{out}", "--group-size", "0"], "--group-size must be"),
        (["palettize", "{src}"], "missing -o OUTPUT.aimodel"),
    ],
)
def test_errors_are_one_line(
    args: list[str], message: str, source_asset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.aimodel"
    run = compress_cli(*(a.format(src=source_asset, out=out) for a in args))
    assert run.code == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coreai-compress: error: "), run.err
    assert message in lines[0]
    assert not out.exists()
