"""What each command runs: its pass, its dry-run plan, its option checks and its algorithm
resolution (the one table the CLI looks commands up in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coreai_opt.coreai_utils.passes.options import check_algorithm, validate_options
from coreai_opt.coreai_utils.passes.palettize import (
    expected_palettize_bytes,
    palettize_with_report,
    plan_palettize,
)
from coreai_opt.coreai_utils.passes.palettize_options import (
    check_palettize_algorithm,
    validate_palettize_options,
)
from coreai_opt.coreai_utils.passes.plan import expected_bytes
from coreai_opt.coreai_utils.passes.quantize import (
    expected_quantize_bytes,
    plan_quantize,
    quantize_with_report,
)
from coreai_opt.coreai_utils.passes.quantize_options import (
    check_quantize_algorithm,
    validate_quantize_options,
)
from coreai_opt.coreai_utils.passes.sparsify import plan_sparsify, sparsify_with_report

__all__ = ["COMMAND", "Command"]


@dataclass(frozen=True)
class Command:
    """One command: ``run`` (the ``*_with_report`` pass), ``plan`` (its dry run),
    ``validate(calibrated=..., **options)`` (the options' checks), ``algorithm(value,
    calibrated=...)`` (the algorithm it resolves to), ``expected`` (a planned weight's
    stored bytes, from its plan or decision) and ``label`` for the progress bar."""

    run: Callable[..., Any]
    plan: Callable[..., Any]
    validate: Callable[..., Any]
    algorithm: Callable[..., Any]
    label: str
    expected: Callable[[Any], int]


COMMAND = {
    "sparsify": Command(
        sparsify_with_report,
        plan_sparsify,
        validate_options,
        check_algorithm,
        "sparsifying",
        expected_bytes,
    ),
    "quantize": Command(
        quantize_with_report,
        plan_quantize,
        validate_quantize_options,
        check_quantize_algorithm,
        "quantizing",
        expected_quantize_bytes,
    ),
    "palettize": Command(
        palettize_with_report,
        plan_palettize,
        validate_palettize_options,
        check_palettize_algorithm,
        "palettizing",
        expected_palettize_bytes,
    ),
}
