"""The demo runs end to end in a fresh process."""

import subprocess
import sys


def test_demo_runs_and_reports() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "coreai_opt.cli.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "@main/w7" in run.stdout
    assert "sparse asset:" in run.stdout
    assert "output logits: SNR" in run.stdout
