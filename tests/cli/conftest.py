"""Fixtures for the command-line tests: a small real asset, and a runner."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
