"""``make bench``: time and memory of ``sparsify_weights`` on synthetic programs.

For every case and mode: wall time of the call, parameters per second, peak RSS above the
input program (as a multiple of the weights' bytes), and the ratio to a floor measured in
the same run: the numpy work no implementation can avoid (read each weight once, one
selection, write the values and the mask). Writes ``bench/RESULTS.md``.

    python -m bench            # everything (needs ~8 GB of memory and a few minutes)
    python -m bench --quick    # the 4096x4096 linear and the conv net only
"""

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.programs import Case, conv_net, linear, transformer_stack
from coreai_opt.coreai_utils import DType, sparsify_weights

MODES: dict[str, dict[str, Any]] = {
    "magnitude 0.5": {"target_sparsity": 0.5},
    "block 4": {"target_sparsity": 0.5, "block_size": 4},
    "2:4": {"target_sparsity": None, "n_m_ratio": (2, 4)},
    "magnitude + int8": {"target_sparsity": 0.5, "quantize_dtype": DType.INT8},
    "magnitude + fp8": {"target_sparsity": 0.5, "quantize_dtype": DType.FP8_E4M3FN},
    "magnitude + palettize 4": {"target_sparsity": 0.5, "palettize_nbits": 4},
    "magnitude + palettize 8": {"target_sparsity": 0.5, "palettize_nbits": 8},
}
RESULTS = Path(__file__).with_name("RESULTS.md")


def _status(field: str) -> int:
    """A ``VmXXX`` field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    # writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")


def measure(call: Callable[[], Any]) -> tuple[float, int]:
    """``(seconds, peak RSS growth in bytes)`` of ``call()``; its result is dropped after."""
    gc.collect()
    _reset_peak()
    before = _status("VmRSS")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") - before
    del result
    gc.collect()
    return seconds, peak


def floor_seconds(case: Case) -> float:
    """Bare numpy: read each weight once, one selection, write values and packed mask."""
    start = time.perf_counter()
    for weight in case.weights:
        flat = weight.reshape(-1)
        magnitude = np.abs(flat)
        k = flat.size // 2
        threshold = np.partition(magnitude, k)[k]
        keep = magnitude > threshold
        np.extract(keep, flat)
        np.packbits(keep, bitorder="little")
    return time.perf_counter() - start


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; Python {platform.python_version()}, "
        f"numpy {np.__version__}; {platform.system()} {platform.release()}"
    )


def repeats(case: Case) -> int:
    """Runs per measurement (best time, largest peak kept): 3 for small cases, 1 for big."""
    return 3 if case.parameters < 100_000_000 else 1


def best_of(count: int, call: Callable[[], Any]) -> tuple[float, int]:
    runs = [measure(call) for _ in range(count)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def run_case(case: Case, rows: list[str], *, in_place_too: bool) -> None:
    floor = min(floor_seconds(case) for _ in range(repeats(case)))
    for mode, kwargs in MODES.items():
        seconds, peak = best_of(
            repeats(case), lambda kwargs=kwargs: sparsify_weights(case.program, **kwargs)
        )
        rows.append(_row(case, mode, seconds, peak, floor if "+" not in mode else None))
        print(rows[-1], flush=True)
    if in_place_too:
        seconds, peak = measure(
            lambda: sparsify_weights(case.program, target_sparsity=0.5, in_place=True)
        )
        rows.append(_row(case, "magnitude 0.5, in_place", seconds, peak, floor))
        print(rows[-1], flush=True)


def _row(case: Case, mode: str, seconds: float, peak: int, floor: float | None) -> str:
    rate = case.parameters / seconds / 1e6
    ratio = f"{seconds / floor:.2f}" if floor else "-"
    return (
        f"| {case.name} | {mode} | {seconds:.3f} | {rate:.0f} | {peak / case.weight_bytes:.2f} "
        f"| {floor or 0:.3f} | {ratio} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small cases only")
    args = parser.parse_args()
    rows: list[str] = []
    builders: list[tuple[Callable[[], Case], bool]] = [(linear, True), (conv_net, True)]
    if not args.quick:
        builders += [(lambda n=n: transformer_stack(n), False) for n in (5, 10, 20)]
    for build, in_place_too in builders:
        case = build()
        run_case(case, rows, in_place_too=in_place_too)
        del case
        gc.collect()
    command = "python -m bench" + (" --quick" if args.quick else "")
    header = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`.",
        "",
        "Time is the wall time of one `sparsify_weights` call (`in_place=False` unless noted;",
        "best of 3 runs for cases under 100 M parameters, one run above);",
        "Mparams/s is parameters per second; peak RSS is the growth of resident memory during",
        "the call as a multiple of the weights' bytes; floor is the bare numpy work no",
        "implementation avoids (read each weight once, one selection, write values and mask),",
        "measured in the same run; ratio is time / floor for the sparsity-only modes.",
        "",
        "| case | mode | time (s) | Mparams/s | peak RSS / weights | floor (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    RESULTS.write_text("\n".join(header + rows) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
