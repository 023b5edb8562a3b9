"""``sensitivity="measured"``: each option's error from the model's own outputs on the runtime.

The definition of the official documentation's mixed-precision recipe: the program is run
with only that one weight compressed, and the error is the mean squared difference from the
dense program's outputs on a few samples (summed over the outputs). One runtime run per
weight and candidate: every run saves the whole program and compiles it, so this costs
minutes on a small model and hours on a language model (the proxy is the default).

The runs use a private copy of the program in which the weight's decompression chain is
swapped in for the run and out after it (:func:`~coreai_opt.coreai_utils.ir.trial.
trial_replacement`); the caller's program is never touched. The copy lives in a context of
its own (:func:`~coreai_opt.coreai_utils.ir.detach.detached_copy`), which keeps every
trial's compressed data until the copy goes: once the trials have added as many bytes as
the program's weights hold, the copy is made afresh, so they never hold more than that.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.calibration.samples import check_samples
from coreai_opt.coreai_utils.ir.detach import detached_copy
from coreai_opt.coreai_utils.ir.signature import graph_inputs, runtime_function
from coreai_opt.coreai_utils.ir.trial import trial_replacement
from coreai_opt.coreai_utils.ir.weights import WeightSite, find_weights
from coreai_opt.coreai_utils.passes.runner import Encoded
from coreai_opt.coreai_utils.runtime import run_samples

__all__ = ["MEASURED_SAMPLES", "MeasuredError"]

MEASURED_SAMPLES = 4
"""How many of the given samples each measured run uses by default."""


class MeasuredError:
    """Callable ``(site, encoded) -> error``: run the program with ``encoded`` in place of
    ``site``'s constant (:meth:`together`: several weights at once); ``close()`` removes
    the scratch files and frees the private copy."""

    def __init__(
        self,
        program: AIProgram,
        samples: Sequence[Mapping[str, object]],
        function: str = "main",
        count: int = MEASURED_SAMPLES,
    ) -> None:
        module = program._module._mlir_module  # noqa: SLF001
        try:
            specs = graph_inputs(module, function)
        except KeyError:
            msg = f"the program has no function {function!r} to measure on"
            raise ValueError(msg) from None
        checked = check_samples(specs, list(samples)[:count], function)
        self._samples = checked
        self._function = runtime_function(function)
        self._source = program
        self._fresh_copy()
        self._limit = sum(site.size * site.dtype.itemsize for site in self._sites.values())
        self._scratch = Path(tempfile.mkdtemp(prefix="coreai-measured-"))
        self._runs = 0
        self._dense = self._outputs()

    def _fresh_copy(self) -> None:
        self._program = detached_copy(self._source)
        self._module = self._program._module._mlir_module  # noqa: SLF001
        self._sites = {site.id: site for site in find_weights(self._module)}
        self._added = 0  # bytes of trial data the copy's context holds

    def _outputs(self) -> list[dict[str, np.ndarray]]:
        self._runs += 1
        path = self._scratch / f"run{self._runs}.aimodel"
        self._program.save_asset(path)
        try:
            with closing(run_samples(path, self._samples, self._function)) as results:
                return [{k: v.astype(np.float64) for k, v in r.items()} for r in results]
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def __call__(self, site: WeightSite, encoded: Encoded) -> float:
        return self.together([(site, encoded)])

    def together(self, replaced: Sequence[tuple[WeightSite, Encoded]]) -> float:
        """The error with every weight of ``replaced`` compressed as given, at once."""
        if self._added > self._limit:
            self._fresh_copy()
        self._added += sum(encoded.bytes_after for _, encoded in replaced)
        with self._module.context, ExitStack() as stack:
            for site, encoded in replaced:
                stack.enter_context(trial_replacement(self._sites[site.id].op, encoded.emit))
            got = self._outputs()
        total = 0.0
        for sample, reference in zip(got, self._dense, strict=True):
            for name, value in reference.items():
                total += float(np.mean((sample[name] - value) ** 2))
        return total / len(self._dense)

    def close(self) -> None:
        """Remove the scratch files and let the private copy (and its context) go."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        self._sites = {}
        for name in ("_program", "_module"):  # closing twice is allowed
            self.__dict__.pop(name, None)
