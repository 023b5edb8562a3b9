import logging
from pathlib import Path

import pytest


@pytest.fixture
def asset_path(tmp_path: Path) -> Path:
    """A fresh .aimodel path inside the test's temporary directory."""
    return tmp_path / "model.aimodel"


@pytest.fixture
def sparsify_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures the pass's warnings."""
    caplog.set_level(logging.WARNING, logger="coreai_opt")
    return caplog
