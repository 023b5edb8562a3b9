"""The sibling passes: time of ``quantize_weights`` and ``palettize_weights`` and their error.

For a 4096x4096 fp32 linear and the 1 B-parameter fp16 stack (``--quick``: the linear only):
wall time (best of 3 below 100 M parameters), peak RSS growth and the ratio to an in-run
floor (read each weight once, one pass computing per-channel absmax, write 8-bit codes; the
best of its runs before and after the modes).
Then the relative weight error of every mode on the 256x192 test layer, read back from
the Core AI runtime. Writes ``bench/SIBLINGS.md``.

    python -m bench.siblings [--quick]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.__main__ import best_of, machine, repeats
from bench.programs import Case, linear, transformer_stack
from coreai_opt.coreai_utils import DType, palettize_weights, quantize_weights

RESULTS = Path(__file__).with_name("SIBLINGS.md")
_FAST = (0.3, 3.0)  # goals on the 4096x4096 layer: seconds, and multiple of the floor
MODES: dict[str, tuple[Callable[..., Any], dict[str, Any], tuple[float, float | None]]] = {
    # name: (pass, arguments, goals); vector palettization has its own goal in seconds only
    "int8 per_channel": (quantize_weights, {"dtype": DType.INT8}, _FAST),
    "int8 per_block 32": (
        quantize_weights,
        {"dtype": DType.INT8, "granularity": "per_block"},
        _FAST,
    ),
    "int4 per_channel": (quantize_weights, {"dtype": DType.INT4}, _FAST),
    "int4 per_block 32": (
        quantize_weights,
        {"dtype": DType.INT4, "granularity": "per_block"},
        _FAST,
    ),
    "fp8_e4m3fn per_channel": (quantize_weights, {"dtype": DType.FP8_E4M3FN}, _FAST),
    "palettize 4 per_tensor": (palettize_weights, {"n_bits": 4}, _FAST),
    "palettize 8 per_tensor": (palettize_weights, {"n_bits": 8}, _FAST),
    "palettize 4 grouped 32": (
        palettize_weights,
        {"n_bits": 4, "granularity": "per_grouped_channel"},
        _FAST,
    ),
    "palettize 8 grouped 32": (
        palettize_weights,
        {"n_bits": 8, "granularity": "per_grouped_channel"},
        _FAST,
    ),
    "vector palettize 4, cluster_dim 2": (
        palettize_weights,
        {"n_bits": 4, "cluster_dim": 2},
        (2.0, None),
    ),
}


def floor_seconds(case: Case) -> float:
    """Bare numpy: read each weight, per-channel absmax, write 8-bit codes."""
    start = time.perf_counter()
    for weight in case.weights:
        rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
        scale = np.abs(rows).max(axis=1, keepdims=True) / 127
        np.rint(rows / np.where(scale > 0, scale, 1)).astype(np.int8)
    return time.perf_counter() - start


def timing_rows(case: Case, *, goals: bool) -> list[str]:
    """One row per mode. The floor is the best of its runs before and after the modes: on
    this kind of shared machine a floor measured only once can land in a slow spell, which
    would flatter every ratio."""
    floors = [floor_seconds(case) for _ in range(repeats(case))]
    measured = {
        name: best_of(
            repeats(case),
            lambda compress=compress, kwargs=kwargs: compress(case.program, **kwargs),
        )
        for name, (compress, kwargs, _) in MODES.items()
    }
    floor = min(floors + [floor_seconds(case) for _ in range(repeats(case))])
    rows = []
    for name, (seconds, peak) in measured.items():
        goal, times_floor = MODES[name][2]
        ratio = f", <= {times_floor:g}x floor" if times_floor else ""
        target = f"<= {goal:g} s{ratio}" if goals else ""
        within = seconds <= goal and (times_floor is None or seconds <= times_floor * floor)
        met = ("yes" if within else "no") if goals else ""
        rows.append(
            f"| {case.name} | {name} | {seconds:.3f} | {peak / case.weight_bytes:.2f} | "
            f"{floor:.3f} | {seconds / floor:.1f} | {target} | {met} |"
        )
        print(rows[-1], flush=True)
    return rows


def error_rows() -> list[str]:
    """Relative error of every mode on the test layer, read back from the runtime."""
    from tests.helpers import linear_program, read_back_linear  # noqa: PLC0415
    from tests.reference import issue_layer  # noqa: PLC0415

    weight = issue_layer()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, (compress, kwargs, _)) in enumerate(MODES.items()):
            program = compress(linear_program(weight), weight_num_threshold=0, **kwargs)
            path = Path(scratch) / f"m{index}.aimodel"
            got = read_back_linear(program, weight.shape[1], np.float32, path)
            error = np.linalg.norm(got - weight) / np.linalg.norm(weight)
            rows.append(f"| {name} | {error:.2e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.siblings")
    parser.add_argument("--quick", action="store_true", help="the 4096x4096 linear only")
    args = parser.parse_args()
    rows: list[str] = []
    builders: list[tuple[Callable[[], Case], bool]] = [(linear, True)]
    if not args.quick:
        builders.append((lambda: transformer_stack(20), False))
    for build, goals in builders:
        case = build()
        rows += timing_rows(case, goals=goals)
        del case
        gc.collect()
    errors = error_rows()
    command = "python -m bench.siblings" + (" --quick" if args.quick else "")
    text = [
        "# Sibling passes: quantize_weights and palettize_weights",
        "",
        f"Machine: {machine()}.",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`.",
        "",
        "Time of one call (best of 3 below 100 M parameters, one run above); peak RSS growth",
        "as a multiple of the weights' bytes; floor: reading each weight, a per-channel",
        "absmax and writing 8-bit codes in bare numpy, in the same run (best of its runs",
        "before and after the modes).",
        "",
        "| case | mode | time (s) | peak RSS / weights | floor (s) | x floor | goal | met |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Relative weight error on the test layer (256x192 fp32, rows scaled 0.2-3x), as the",
        "Core AI runtime rebuilds it:",
        "",
        "| mode | relative error |",
        "|---|---|",
        *errors,
        "",
    ]
    RESULTS.write_text("\n".join(text))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
