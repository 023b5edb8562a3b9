"""coreai-sparsify --exclude, --config and --plan on a converted transformer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.conftest import compress, run_cli, snapshot
from tests.torch_models import TinyTransformer, convert

ATTENTION = "TinyTransformer$1/Linear$1"


@pytest.fixture(scope="module")
def transformer_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    path = tmp_path_factory.mktemp("transformer") / "tiny.aimodel"
    convert(TinyTransformer().eval(), {"ids": ids}, debug=True).save_asset(path)
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CONFIG = """
target_sparsity = 0.5
weight_num_threshold = 512
exclude = ["kind:embedding"]

[[override]]
match = "*/Linear$[1234]"
target_sparsity = 0.3

[[override]]
match = "*/Linear$[56]"
target_sparsity = 0.6
quantize_dtype = "int8"

[[override]]
match = "*/Linear$7"
dense = true
"""


def test_config_file(transformer_asset: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", CONFIG)
    run, _, report = compress(transformer_asset, tmp_path, "--config", config)
    rows = {r["path"]: r for r in report["weights"]}
    assert rows["TinyTransformer$1/Embedding$1"]["reason"] == "excluded by kind:embedding"
    assert rows[ATTENTION]["sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert rows["TinyTransformer$1/Linear$5"]["joint"] == "int8"
    assert rows["TinyTransformer$1/Linear$6"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert rows["TinyTransformer$1/Linear$7"]["reason"] == "left dense by override */Linear$7"
    options = report["options"]
    assert options["exclude"] == ["kind:embedding"] and options["weight_num_threshold"] == 512
    assert options["overrides"]["*/Linear$7"] is None
    assert options["overrides"]["*/Linear$[56]"]["quantize_dtype"] == "int8"
    assert "TinyTransformer$1/Linear$1" in run.out and "torch_models.py" in run.out


def test_flags_win_over_the_config_and_exclude_adds(
    transformer_asset: Path, tmp_path: Path
) -> None:
    config = write(tmp_path / "c.toml", "target_sparsity = 0.7\nweight_num_threshold = 512\n")
    _, _, report = compress(
        transformer_asset,
        tmp_path,
        "--config",
        config,
        "--target-sparsity",
        "0.4",
        "--exclude",
        "*/Linear$7",
        "--exclude",
        "@main/w0",
    )
    rows = {r["path"]: r for r in report["weights"]}
    assert rows[ATTENTION]["sparsity"] == pytest.approx(0.4, abs=1e-3)
    assert rows["TinyTransformer$1/Linear$7"]["reason"] == "excluded by */Linear$7"
    assert rows["TinyTransformer$1/Embedding$1"]["reason"] == "excluded by @main/w0"


def test_n_m_flag_replaces_the_config_target(transformer_asset: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "target_sparsity = 0.7\nweight_num_threshold = 512\n")
    _, _, report = compress(transformer_asset, tmp_path, "--config", config, "--n-m", "2:4")
    assert report["options"]["n_m_ratio"] == [2, 4] and report["options"]["target_sparsity"] is None


def test_plan_writes_nothing(transformer_asset: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", CONFIG)
    np.savez(tmp_path / "cal.npz", ids=np.zeros((2, 2, 8), np.int32))
    before_input, before_dir = snapshot(transformer_asset), sorted(tmp_path.iterdir())
    run = run_cli(
        transformer_asset,
        "--plan",
        "--config",
        config,
        "-o",
        tmp_path / "never.aimodel",
        "--report",
        tmp_path / "never.json",
        "--calibration",
        tmp_path / "cal.npz",
        "--algorithm",
        "sparsegpt",
    )
    assert run.code == 0, run.err
    assert sorted(tmp_path.iterdir()) == before_dir and snapshot(transformer_asset) == before_input
    assert "dry run" in run.out and "TinyTransformer$1/Linear$5" in run.out
    assert "sparsegpt unstructured 0.3" in run.out
    assert "excluded by kind:embedding" in run.out and "int8" in run.out
    assert "calibration is not run by --plan" in run.out


def test_plan_without_output(transformer_asset: Path) -> None:
    run = run_cli(transformer_asset, "--plan", "--n-m", "2:4")
    assert run.code == 0, run.err
    assert "2:4" in run.out and "weights: 8 considered" in run.out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target_sparsity = ", "not valid TOML"),
        ("sparsity = 0.5", "top level: unknown key 'sparsity'"),
        ("target_sparsity = 2.0", "target_sparsity must be in [0, 1], got 2.0"),
        ("n_m_ratio = '2/4'", "n_m_ratio takes N:M"),
        ("[[override]]\ntarget_sparsity = 0.3", 'override 1 needs match = "PATTERN"'),
        ("[[override]]\nmatch = '*'\nblock = 4", "override 1 (*): unknown key 'block'"),
        (
            "[[override]]\nmatch = '*'\ndense = true\ntarget_sparsity = 0.3",
            "dense = true takes no other options",
        ),
        (
            "[[override]]\nmatch = '*'\ntarget_sparsity = 1.5",
            "overrides['*']: target_sparsity must be in [0, 1]",
        ),
        ("[[override]]\nmatch = 'kind:mlp'\ndense = true", "unknown selector 'kind:mlp'"),
        ("exclude = 3", "exclude must be a list of pattern strings"),
        ("algorithm = 'wanda'", "wanda needs --calibration FILE.npz"),
    ],
)
def test_bad_config_is_a_one_line_error(
    text: str, message: str, transformer_asset: Path, tmp_path: Path
) -> None:
    config = write(tmp_path / "bad.toml", text)
    out = tmp_path / "o.aimodel"
    run = run_cli(transformer_asset, "-o", out, "--config", config)
    assert run.code == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"coreai-sparsify: error: --config {config}")
    assert message in lines[0]
    assert not out.exists()


def test_missing_config(transformer_asset: Path, tmp_path: Path) -> None:
    run = run_cli(transformer_asset, "-o", tmp_path / "o.aimodel", "--config", tmp_path / "no.toml")
    assert run.code == 2 and "no such file" in run.err


def test_brackets_in_patterns_survive_the_console(transformer_asset: Path, tmp_path: Path) -> None:
    run = run_cli(
        transformer_asset,
        "-o",
        tmp_path / "o.aimodel",
        "--exclude",
        "*/Linear$[89]",
        "--exclude",
        "*/Linear$[12]",
        "--weight-num-threshold",
        "512",
    )
    assert run.code == 0, run.err
    assert "pattern '*/Linear$[89]' (exclude/overrides) matches no weight" in run.err
    assert "excluded by */Linear$[12]" in run.out
