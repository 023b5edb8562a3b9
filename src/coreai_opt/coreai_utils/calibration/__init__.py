"""Activation statistics from the Core AI runtime, for calibration-aware pruning.

:func:`collect_calibration` runs a scratch copy of a program, in which every candidate
weight's activation operand is also an output, on each sample and reduces the activations
as they arrive. The result, a :class:`Calibration`, is plain data keyed by weight id
(``@graph/wK``, as in the report) and can be saved to and loaded from ``.npz``.

Modules: ``record`` (the :class:`Calibration` record and its file), ``samples`` (checks of
the samples and of the padding mask before anything runs), ``padding`` (which activation
rows map onto the mask), ``collect`` (the capture, split into runs) and ``capture_run``
(one run on the runtime).
"""

from coreai_opt.coreai_utils.calibration.collect import (
    DEFAULT_MAX_CAPTURE_BYTES,
    DEFAULT_MAX_GRAM_CHANNELS,
    calibration_outline,
    collect_calibration,
)
from coreai_opt.coreai_utils.calibration.record import Calibration, CalibrationFileError
from coreai_opt.coreai_utils.calibration.samples import check_padding_mask, check_samples

__all__ = [
    "DEFAULT_MAX_CAPTURE_BYTES",
    "DEFAULT_MAX_GRAM_CHANNELS",
    "Calibration",
    "CalibrationFileError",
    "calibration_outline",
    "check_padding_mask",
    "check_samples",
    "collect_calibration",
]
