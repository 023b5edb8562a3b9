"""coreai-compress auto: a size or a ratio in, the best mix out; --plan, --candidates, the
report, and the errors (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coreai_opt.coreai_utils.runtime import run_asset
from tests.cli.conftest import Run, snapshot
from tests.cli.test_cli_compress import compress_cli
from tests.torch_models import TinyTransformer, convert

IDS = np.random.default_rng(3).integers(0, 64, (10, 1, 16)).astype(np.int32)


@pytest.fixture(scope="module")
def transformer_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    program = convert(TinyTransformer().eval(), {"ids": torch.from_numpy(IDS[0])}, debug=True)
    path = tmp_path_factory.mktemp("auto") / "tiny.aimodel"
    program.save_asset(path)
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("samples")
    np.savez(folder / "cal.npz", ids=IDS[:6])
    np.savez(folder / "val.npz", ids=IDS[6:])
    return folder / "cal.npz", folder / "val.npz"


def auto(*args: str | Path) -> Run:
    return compress_cli("auto", *args, "--weight-num-threshold", "0")


def test_compresses_within_the_size_and_reports_the_allocation(
    transformer_asset: Path, samples: tuple[Path, Path], tmp_path: Path
) -> None:
    calibration, held_out = samples
    before = snapshot(transformer_asset)
    out, report_path = tmp_path / "auto.aimodel", tmp_path / "auto.json"
    ladder = tmp_path / "ladder.toml"  # the defaults and 2:4, which the embedding cannot take
    ladder.write_text(
        'extend_default = true\n[[candidate]]\nname = "2:4+int8"\nmethod = "sparsify"\n'
        'n_m_ratio = [2, 4]\nquantize_dtype = "int8"\n'
    )
    run = auto(
        transformer_asset,
        "-o",
        out,
        "--size",
        "12KiB",
        "--candidates",
        ladder,
        "--calibration",
        calibration,
        "--validate-with",
        held_out,
        "--report",
        report_path,
    )
    assert run.code == 0, run.err
    assert snapshot(transformer_asset) == before
    report = json.loads(report_path.read_text())
    allocation = report["allocation"]
    assert allocation["budget"] == 12 * 1024 and allocation["total_bytes"] <= 12 * 1024
    assert report["totals"]["weight_bytes_after"] == allocation["total_bytes"]
    # the weights that can be compressed, each probed on the runtime (fewer than 16)
    assert allocation["sensitivity"] == "proxy, calibrated across layers by 8 runtime runs"
    assert report["command"] == "auto" and report["options"]["size"] == 12 * 1024
    assert report["options"]["probes"] == 16
    # the plan was run against the two best uniform configurations that fit, and one kept
    checked = allocation["checked"]
    assert checked[0]["name"] == "plan" and len(checked) == 3
    assert all(run["total_bytes"] <= 12 * 1024 for run in checked)
    kept = min(checked, key=lambda run: run["measured_error"])
    assert allocation["kept"] == kept["name"]
    assert allocation["total_bytes"] == kept["total_bytes"]
    assert report["options"]["check_uniform"] == 2
    assert "checked on the runtime (output error): plan" in run.out
    rows = {row["path"]: row for row in report["weights"]}
    embedding = rows["TinyTransformer$1/Embedding$1"]
    assert "2:4+int8" in embedding["skipped"] and embedding["choice"] in embedding["options"]
    assert report["validation"]["functions"]["main"]["y"]["cosine"] > 0.9
    got = run_asset(out, {"ids": IDS[7]})["y"]
    assert got.shape == run_asset(transformer_asset, {"ids": IDS[7]})["y"].shape
    assert "budget 12288 bytes" in run.out


def test_plan_prints_the_allocation_and_writes_nothing(
    transformer_asset: Path, samples: tuple[Path, Path], tmp_path: Path
) -> None:
    run = auto(
        transformer_asset, "--plan", "--ratio", "6", "--calibration", samples[0], "--probes", "0"
    )
    assert run.code == 0, run.err
    assert "coreai-compress auto --plan" in run.out and "smallest possible" in run.out
    assert "not calibrated across layers (probes=0)" in run.err
    assert "TinyTransformer$1/Linear$7" in run.out
    assert "checked on the runtime" in run.out  # the check runs without probes too
    assert list(tmp_path.iterdir()) == []
    run = auto(
        transformer_asset,
        "--plan",
        "--ratio",
        "6",
        "--calibration",
        samples[0],
        "--probes",
        "0",
        "--check-uniform",
        "0",
    )
    assert run.code == 0, run.err
    assert "checked on the runtime" not in run.out
    run = auto(transformer_asset, "--plan", "--ratio", "6", "--check-with", samples[1])
    assert run.code == 0, run.err
    assert "checked on the runtime (output error): plan" in run.out  # no calibration needed


def test_candidates_file_replaces_or_extends_the_ladder(
    transformer_asset: Path, tmp_path: Path
) -> None:
    only = tmp_path / "only.toml"
    only.write_text(
        '[[candidate]]\nname = "lut3"\nmethod = "palettize"\nn_bits = 3\n\n'
        '[[candidate]]\nname = "nm"\nmethod = "sparsify"\nn_m_ratio = "2:4"\n'
        'quantize_dtype = "int8"\nmatch = ["kind:linear"]\n'
    )
    out, report_path = tmp_path / "o.aimodel", tmp_path / "r.json"
    run = auto(
        transformer_asset, "-o", out, "--ratio", "4", "--candidates", only, "--report", report_path
    )
    assert run.code == 0, run.err
    report = json.loads(report_path.read_text())
    assert report["options"]["candidates"] == ["lut3", "nm"]
    assert {row["choice"] for row in report["weights"]} <= {"lut3", "nm", "dense"}
    embedding = next(r for r in report["weights"] if r["kind"] == "embedding")
    assert embedding["skipped"]["nm"] == "not offered to this weight (match)"
    extended = tmp_path / "more.toml"
    extended.write_text(
        'extend_default = true\n[[candidate]]\nname = "int4-b16"\nmethod = "quantize"\n'
        'dtype = "int4"\ngranularity = "per_block"\nblock_size = 16\n'
    )
    run = auto(transformer_asset, "--plan", "--ratio", "4", "--candidates", extended)
    assert run.code == 0, run.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--size", "12XB"), "takes a size like 40MB"),
        (("--size", "0"), "more than 0 bytes"),
        (("--ratio", "0.5"), "larger than the"),
        (("--ratio", "-2"), "positive finite"),
        (("--ratio", "5000"), "cannot be reached: the smallest size"),
        ((), "one of the arguments --size --ratio is required"),
        (("--size", "1MB", "--ratio", "2"), "not allowed with argument"),
        (("--ratio", "4", "--sensitivity", "magic"), "invalid choice: 'magic'"),
        (("--ratio", "4", "--padding-mask", "ids"), "--padding-mask needs --calibration"),
        (("--ratio", "4", "--probes", "-1"), "--probes must be 0"),
        (("--ratio", "4", "--probes", "two"), "invalid int value: 'two'"),
        (("--ratio", "4", "--check-uniform", "-1"), "--check-uniform must be 0"),
        (("--ratio", "4", "--check-with", "missing.npz"), "--check-with"),
    ],
)
def test_bad_budgets_are_one_line_errors_and_write_nothing(
    transformer_asset: Path, tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "o.aimodel"
    run = auto(transformer_asset, "-o", out, *flags)
    assert run.code == 2 and message in run.err, run.err
    assert not out.exists()
    assert "Traceback" not in run.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[candidate]]\nmethod = 'quantize'\ndtype = 'int4'\n", 'needs name = "NAME"'),
        ("[[candidate]]\nname = 'x'\nmethod = 'prune'\n", "method must be one of"),
        ("[[candidate]]\nname = 'x'\nmethod = 'quantize'\nbits = 4\n", "unknown key 'bits'"),
        (
            "[[candidate]]\nname = 'x'\nmethod = 'quantize'\ndtype = 'int4'\n"
            "weight_num_threshold = 0\n",
            "unknown key 'weight_num_threshold'",
        ),
        ("[[candidate]]\nname = 'x'\nmethod = 'palettize'\nn_bits = 5\n", "candidate 'x'"),
        ("[[candidate]]\nname = 'x'\nmethod = 'quantize'\n", "option 'dtype' must be set"),
        ("extend_default = 1\n[[candidate]]\nname='x'\nmethod='palettize'\n", "extend_default"),
        ("mystery = 1\n", "unknown key 'mystery'"),
        ("", "no [[candidate]] tables"),
        ("[[candidate]\n", "not valid TOML"),
    ],
)
def test_bad_candidate_files_are_one_line_errors(
    transformer_asset: Path, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = tmp_path / "o.aimodel"
    run = auto(transformer_asset, "-o", out, "--ratio", "4", "--candidates", path)
    assert run.code == 2 and message in run.err, run.err
    assert not out.exists()


def test_measured_sensitivity_runs_the_calibration_samples(
    transformer_asset: Path, samples: tuple[Path, Path], tmp_path: Path
) -> None:
    report_path = tmp_path / "m.json"
    run = auto(
        transformer_asset,
        "-o",
        tmp_path / "m.aimodel",
        "--ratio",
        "4",
        "--calibration",
        samples[0],
        "--sensitivity",
        "measured",
        "--candidates",
        _one_candidate(tmp_path),
        "--report",
        report_path,
    )
    assert run.code == 0, run.err
    report = json.loads(report_path.read_text())
    assert report["allocation"]["sensitivity"] == "measured"
    assert "samples" not in report["options"]
    run = auto(transformer_asset, "--plan", "--ratio", "4", "--sensitivity", "measured")
    assert run.code == 2 and "--sensitivity measured needs --calibration" in run.err


def _one_candidate(folder: Path) -> Path:
    path = folder / "one.toml"
    path.write_text('[[candidate]]\nname = "int4"\nmethod = "quantize"\ndtype = "int4"\n')
    return path


def test_too_little_disk_for_the_output_is_refused_first(
    transformer_asset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from coreai_opt.cli import main as cli_main

    class Usage:
        free = 1000

    monkeypatch.setattr("shutil.disk_usage", lambda _: Usage())
    out = tmp_path / "out.aimodel"
    argv = ["auto", str(transformer_asset), "-o", str(out), "--ratio", "4", "--quiet"]
    assert cli_main.main(argv, prog=cli_main.COMPRESS) == 2
    assert f"not enough disk for {out}" in capfd.readouterr().err
    assert not out.exists()
