import logging
from pathlib import Path

import pytest
from hypothesis import settings

# Deterministic property tests (fixed examples, same every run) and no per-example deadline:
# speed is measured by the benchmark, never by a test.
settings.register_profile("project", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("project")


@pytest.fixture
def asset_path(tmp_path: Path) -> Path:
    """A fresh .aimodel path inside the test's temporary directory."""
    return tmp_path / "model.aimodel"


@pytest.fixture
def sparsify_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures the pass's warnings."""
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    return caplog
