"""The tiny transformer the compress_to_size tests share (converted and calibrated once per
session)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from coreai_opt.coreai_utils import Calibration, collect_calibration
from tests.torch_models import TinyTransformer, convert

IDS = np.random.default_rng(0).integers(0, 64, (12, 1, 16)).astype(np.int32)
"""Token ids: 0-7 calibrate, 9-11 check."""


@cache
def tiny_transformer() -> object:
    """The converted program (do not change it: tests share it)."""
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    return convert(model, {"ids": torch.from_numpy(IDS[0])}, debug=True)


@cache
def tiny_calibration() -> Calibration:
    return collect_calibration(tiny_transformer(), [{"ids": ids} for ids in IDS[:8]])


def module_of(program: object) -> object:
    return program._module._mlir_module  # type: ignore[attr-defined]
