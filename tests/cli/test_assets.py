"""Atomic output: a failed save leaves nothing behind and keeps an existing output."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coreai_opt.cli.assets import write_atomically
from coreai_opt.cli.errors import CliError
from coreai_opt.coreai_utils.assets import AssetError, load_program
from tests.helpers import linear_program


class FailingProgram:
    """Writes part of an asset, then fails, like a save interrupted by a full disk."""

    def save_asset(self, path: Path) -> Any:
        path.mkdir()
        (path / "main.mlirb").write_bytes(b"partial")
        raise OSError(28, "No space left on device")


def test_failed_save_leaves_no_partial_output(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="No space left on device"):
        write_atomically(FailingProgram(), tmp_path / "out.aimodel")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out.aimodel"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with pytest.raises(CliError):
        write_atomically(FailingProgram(), out)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["out.aimodel"]
    assert (out / "old.txt").read_text() == "previous"


def test_successful_save_replaces_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out.aimodel"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    write_atomically(linear_program(np.ones((4, 4), np.float32)), out)
    assert not (out / "old.txt").exists()
    assert load_program(out) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["out.aimodel"]


@pytest.mark.parametrize("name", ["missing.aimodel"])
def test_load_program_names_the_problem(tmp_path: Path, name: str) -> None:
    with pytest.raises(AssetError, match="does not exist") as caught:
        load_program(tmp_path / name)
    assert caught.value.path == tmp_path / name
