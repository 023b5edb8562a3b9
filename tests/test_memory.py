"""Process memory handed back: the C heap's free pages, a mapped file's pages once read."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from coreai_opt.coreai_utils.memory import drop_mapped_pages, return_free_memory
from tests.helpers import status_bytes

linux = pytest.mark.skipif(sys.platform != "linux", reason="Linux mappings")


@linux
def test_a_read_mapping_loses_its_pages_and_keeps_its_data(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, 32 << 20, dtype=np.uint8)
    path = tmp_path / "weights.bin"
    data.tofile(path)
    with path.open("rb") as file:
        # what the Core AI loader makes: a private read-only map (r--p)
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    view = np.frombuffer(mapped, dtype=np.uint8)
    assert int(view.sum()) == int(data.sum())  # every page read
    before = status_bytes("RssFile")
    assert drop_mapped_pages([path]) >= data.nbytes
    assert before - status_bytes("RssFile") > data.nbytes // 2
    assert np.array_equal(view, data)  # faulted in again from the file
    del view
    mapped.close()


def test_unmapped_files_and_no_files_are_nothing_to_drop(tmp_path: Path) -> None:
    assert drop_mapped_pages([]) == 0
    assert drop_mapped_pages([tmp_path / "missing.bin"]) == 0
    return_free_memory()  # a no-op where there is no glibc


@linux
def test_a_pass_on_a_loaded_asset_keeps_little_of_it_resident(tmp_path: Path) -> None:
    # the copy is written with the mapped bytecode pages given back, and a pass gives them
    # back once it has read DROP_EVERY bytes of weights (64 MiB: this one weight)
    from coreai_opt.coreai_utils import sparsify_weights
    from coreai_opt.coreai_utils.assets import load_program
    from coreai_opt.coreai_utils.memory import DROP_EVERY
    from tests.helpers import linear_program, read_back_linear
    from tests.reference import ref_magnitude

    weight = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    assert weight.nbytes >= DROP_EVERY
    path = tmp_path / "big.aimodel"
    linear_program(weight).save_asset(path)
    program = load_program(path)
    before = status_bytes("RssFile")
    sparse = sparsify_weights(program)
    assert status_bytes("RssFile") - before < 4 << 20
    got = read_back_linear(sparse, 4096, np.float32, tmp_path / "out.aimodel")
    assert np.array_equal(got, ref_magnitude(weight, 0.5))  # ties by index, as the spec
