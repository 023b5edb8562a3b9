"""``python -m bench.large``: the command line on fp16 stacks of 1, 2 and 3 B parameters.

For each stack (``bench.programs.transformer_stack(layers, 2560)``: q, k, v, o and a 4x MLP
per layer, built once and cached under ``bench/.cache/``) and each command, the wall time
and the peak RSS of the ``coreai-compress`` process, as a multiple of the weights' bytes,
then a straight-line fit over the three sizes extrapolated to 7 B. Goal (issue 21): peak RSS
at most 1.3x the weights, so that a 7 B fp16 model (14 GB) compresses within 24 GiB. Writes
``bench/LARGE.md``.

    python -m bench.large                  # builds what is missing (~6 min), then ~6 min
    python -m bench.large --sizes 1        # the 1 B stack only
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("LARGE.md")
CACHE = Path(__file__).with_name(".cache")
DIM = 2560
LAYERS = {1: 13, 2: 26, 3: 38}  # 12 * 2560^2 * layers parameters
COMMANDS = {
    "sparsify 50 %": ["sparsify"],
    "quantize int4 per block 32": [
        "quantize", "--dtype", "int4", "--granularity", "per_block", "--block-size", "32",
    ],
    "palettize 4 grouped 16": [
        "palettize", "--n-bits", "4", "--granularity", "per_grouped_channel", "--group-size", "16",
    ],
}  # fmt: skip


def _stack(billions: int) -> Path:
    """The cached asset of the stack (built in a process of its own when missing)."""
    path = CACHE / f"stack{LAYERS[billions]}x{DIM}.aimodel"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        start = time.perf_counter()
        _child(["--build", str(LAYERS[billions]), str(path)])
        print(f"built {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.large", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        msg = f"{args} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(lines[-1]) if lines else {}


def _build(layers: str, path: str) -> dict[str, Any]:
    from bench.programs import transformer_stack  # noqa: PLC0415

    case = transformer_stack(int(layers), DIM)
    case.program.save_asset(Path(path))
    return {"parameters": case.parameters, "bytes": case.weight_bytes}


def _measure(source: str, *command: str) -> dict[str, Any]:
    """One CLI run as this process's only child: its wall time and peak RSS."""
    output = CACHE / "out.aimodel"
    cli = Path(sys.executable).with_name("coreai-compress")
    start = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own command line
        [str(cli), *command, source, "-o", str(output), "--force", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(output, ignore_errors=True)
    if done.returncode != 0:
        msg = f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": seconds, "peak": peak}


def _fit(points: list[tuple[float, float]], at: float) -> float:
    """The least-squares line through ``points``, evaluated at ``at``."""
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y + slope * (at - mean_x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, choices=sorted(LAYERS), default=[1, 2, 3])
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # JSON: [source, *command]
    args = parser.parse_args()
    if args.build:
        print(json.dumps(_build(*args.build)), flush=True)
        return
    if args.measure:
        print(json.dumps(_measure(*json.loads(args.measure))), flush=True)
        return
    from bench.__main__ import machine  # noqa: PLC0415

    rows: list[str] = []
    series: dict[str, list[tuple[float, float, float]]] = {label: [] for label in COMMANDS}
    for billions in args.sizes:
        path = _stack(billions)
        weights = (path / "main.mlirb").stat().st_size
        parameters = 12 * DIM * DIM * LAYERS[billions]
        for label, command in COMMANDS.items():
            got = _child(["--measure", json.dumps([str(path), *command])])
            ratio = got["peak"] / weights
            series[label].append((parameters / 1e9, got["peak"] / 2**30, got["seconds"]))
            rows.append(
                f"| {parameters / 1e9:.2f} B ({weights / 2**30:.2f} GiB) | {label} | "
                f"{got['seconds']:.0f} | {got['seconds'] / (parameters / 1e9):.1f} | "
                f"{got['peak'] / 2**30:.2f} | {ratio:.2f}x | {'yes' if ratio <= 1.3 else 'NO'} |"
            )
            print(rows[-1], flush=True)
    extrapolated = []
    if len(args.sizes) > 1:
        for label, points in series.items():
            peak = _fit([(p, m) for p, m, _ in points], 7.0)
            seconds = _fit([(p, s) for p, _, s in points], 7.0)
            extrapolated.append(
                f"| {label} | {seconds:.0f} | {peak:.1f} | {peak * 2**30 / 14e9:.2f}x | "
                f"{'yes' if peak < 24 else 'NO'} |"
            )
    day = datetime.now(UTC).date().isoformat()
    parts = [
        "# Models bigger than half the machine",
        "",
        f"`python -m bench.large --sizes {' '.join(map(str, args.sizes))}`, {day}. "
        f"Machine: {machine()}. One run per row; the peak RSS is the `coreai-compress` "
        "process's own (`getrusage`), file-backed pages included.",
        "",
        "| stack | command | seconds | seconds per B | peak RSS (GiB) | peak / weights | <= 1.3x |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
    ]
    if extrapolated:
        parts += [
            "",
            "Extrapolated to 7 B parameters (14 GB of fp16 weights) by a least-squares line "
            "over the sizes above:",
            "",
            "| command | seconds | peak RSS (GiB) | peak / weights | within 24 GiB |",
            "|---|---:|---:|---:|---|",
            *extrapolated,
        ]
    RESULTS.write_text("\n".join(parts) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
