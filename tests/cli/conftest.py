"""Fixtures for the command-line tests: a small real asset, and a runner."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import linear_program

CLI = [sys.executable, "-m", "coreai_opt.cli.main"]
WEIGHT = np.random.default_rng(7).standard_normal((48, 40)).astype(np.float32)


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(*args: str | Path, cwd: Path | None = None) -> Run:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=env,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def compress(source: Path, tmp_path: Path, *flags: str) -> tuple[Run, Path, dict[str, Any]]:
    """Run the CLI on ``source`` into ``tmp_path/out.aimodel`` with a JSON report; it must
    succeed. Returns the run, the output path and the parsed report."""
    out, report = tmp_path / "out.aimodel", tmp_path / "r.json"
    run = run_cli(source, "-o", out, "--report", report, *flags)
    assert run.code == 0, run.err
    return run, out, json.loads(report.read_text())


@pytest.fixture(scope="session")
def source_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved linear model ``y = x @ W.T`` (W: 48x40 fp32) to compress; never modified."""
    path = tmp_path_factory.mktemp("source") / "linear.aimodel"
    linear_program(WEIGHT).save_asset(path)
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (to prove nothing changed)."""
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }
