"""A program copied into a context of its own: the same program, and nothing shared."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils.ir.detach import detached_copy
from tests.helpers import linear_program, read_back_linear


def test_the_copy_is_the_same_program_in_a_new_context(tmp_path: Path) -> None:
    weight = np.random.default_rng(1).standard_normal((24, 16)).astype(np.float32)
    program = linear_program(weight)
    copy = detached_copy(program)
    source, copied = program._module._mlir_module, copy._module._mlir_module
    assert copied.context is not source.context
    assert str(copied.operation) == str(source.operation)  # resource names and data too
    assert str(copied.body.operations[0].location) == str(source.body.operations[0].location)
    got = read_back_linear(copy, 16, np.float32, tmp_path / "copy.aimodel")
    assert np.array_equal(got, weight)


def test_no_scratch_file_is_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    detached_copy(linear_program(np.ones((4, 4), dtype=np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_without_a_writable_scratch_directory_the_copy_shares_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    program = linear_program(np.ones((4, 4), dtype=np.float32))
    copy = detached_copy(program)
    assert copy._module._mlir_module.context is program._module._mlir_module.context
    assert str(copy._module._mlir_module.operation) == str(program._module._mlir_module.operation)
    assert "could not write a scratch copy" in caplog.text
