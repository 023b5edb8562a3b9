"""The installed package: public imports, no torch at run time, typed."""

import subprocess
import sys
from pathlib import Path

import coreai_opt


def run_python(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_public_api_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "from coreai_opt.coreai_utils import DType, sparsify_weights, sparsify_with_report\n"
        "import coreai_opt.cli.main\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert DType.INT8 == 'int8'\n"
    )
    run_python(code)


def test_numerics_import_without_coreai() -> None:
    code = (
        "import sys\n"
        "import coreai_opt.coreai_utils.numerics\n"
        "loaded = [m for m in sys.modules if m == 'coreai' or m.startswith('coreai.')]\n"
        "assert not loaded, loaded\n"
    )
    run_python(code)


def test_typed_marker_present() -> None:
    assert (Path(coreai_opt.__file__).parent / "py.typed").is_file()
