"""``python -m bench.large``: the command line on fp16 stacks of 1, 2 and 3 B parameters.

For each stack (``bench.programs.transformer_stack(layers, 2560)``: q, k, v, o and a 4x MLP
per layer, built once and cached under ``bench/.cache/``) and each command, the wall time
and the peak RSS of the ``coreai-compress`` process, as a multiple of the weights' bytes,
then a straight-line fit over the three sizes extrapolated to 7 B. Goal (issue 21): peak RSS
at most 1.3x the weights, so that a 7 B fp16 model (14 GB) compresses within 24 GiB.

Calibration at scale, on stacks whose activations stay finite (weights ~ N(0, 0.005);
``cal*.aimodel``), with ``CAL_SAMPLES`` samples of one row: the runtime alone
(``run_samples``), ``collect_calibration`` holding every statistic in memory and within
``--stats-memory`` (the rest spilled to disk), and the command line's calibrated SparseGPT
within it; wall time and peak RSS of each, in a process of its own. Writes
``bench/LARGE.md``.

    python -m bench.large                  # builds what is missing (~8 min), then ~40 min
    python -m bench.large --sizes 1 --calibrated 1   # the 1 B stacks only
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
CAL_SAMPLES = 2  # the runtime takes ~34 s a sample per billion parameters in fp16 here
STATS_MEMORY = 256 << 20
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


def _calibration_stack(billions: int) -> tuple[Path, Path]:
    """The cached asset of the finite stack and its samples (built when missing)."""
    path = CACHE / f"cal{LAYERS[billions]}x{DIM}.aimodel"
    samples = CACHE / "cal-samples.npz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        _child(["--build", str(LAYERS[billions]), str(path), "0.005"])
    if not samples.exists():
        import numpy as np  # noqa: PLC0415

        rng = np.random.default_rng(0)
        x = rng.standard_normal((CAL_SAMPLES, 1, DIM)).astype(np.float16)
        np.savez(samples, x=x)
    return path, samples


def _inputs(samples: str) -> list[dict[str, Any]]:
    """The samples of ``samples`` (an ``.npz`` with ``x``), one dict each."""
    import numpy as np  # noqa: PLC0415

    with np.load(samples) as data:
        return [{"x": x} for x in data["x"]]


def _runtime(source: str, samples: str) -> dict[str, Any]:
    """The runtime alone on the samples: what any capture must wait for."""

    from coreai_opt.coreai_utils.runtime import run_samples  # noqa: PLC0415

    inputs = _inputs(samples)
    start = time.perf_counter()
    for _ in run_samples(Path(source), inputs):
        pass
    return {"seconds": time.perf_counter() - start, "peak": _own_peak()}


def _collect(source: str, samples: str, budget: str) -> dict[str, Any]:
    """``collect_calibration`` on the samples (``budget``: max_stats_bytes, or "none")."""

    from coreai_opt.coreai_utils import collect_calibration  # noqa: PLC0415
    from coreai_opt.coreai_utils.assets import load_program  # noqa: PLC0415

    inputs = _inputs(samples)
    program = load_program(Path(source))
    start = time.perf_counter()
    bound = None if budget == "none" else int(budget)
    calibration = collect_calibration(program, inputs, max_stats_bytes=bound)
    seconds = time.perf_counter() - start
    unique = {id(s): s for s in calibration.stats.values()}.values()
    stats = sum(s.sq_sum.nbytes + (0 if s.gram is None else s.gram.nbytes) for s in unique)
    return {"seconds": seconds, "peak": _own_peak(), "stats": stats}


def _own_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


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


def _build(layers: str, path: str, std: str = "0.02") -> dict[str, Any]:
    from bench.programs import transformer_stack  # noqa: PLC0415

    case = transformer_stack(int(layers), DIM, std=float(std))
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


def _calibrated_rows(sizes: list[int]) -> list[str]:
    """The calibration rows for the stacks of ``sizes`` billion parameters."""
    rows = []
    for billions in sizes:
        path, samples = _calibration_stack(billions)
        weights = (path / "main.mlirb").stat().st_size
        label = f"{12 * DIM * DIM * LAYERS[billions] / 1e9:.2f} B ({weights / 2**30:.2f} GiB)"
        cli = [
            "sparsify", "--algorithm", "sparsegpt", "--calibration", str(samples),
            "--stats-memory", str(STATS_MEMORY),
        ]  # fmt: skip
        runs = {
            "runtime alone": ["--runtime", str(path), str(samples)],
            "collect, statistics in memory": ["--collect", str(path), str(samples), "none"],
            f"collect, --stats-memory {STATS_MEMORY >> 20} MiB": [
                "--collect", str(path), str(samples), str(STATS_MEMORY),
            ],
            "CLI sparsify sparsegpt, same budget": [
                "--measure", json.dumps([str(path), *cli]),
            ],
        }  # fmt: skip
        for name, child in runs.items():
            got = _child(child)
            extra = f" ({got['stats'] / 2**30:.2f} GiB of statistics)" if "stats" in got else ""
            rows.append(
                f"| {label} | {name}{extra} | {got['seconds']:.0f} | "
                f"{got['peak'] / 2**30:.2f} | {got['peak'] / weights:.2f}x |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, choices=sorted(LAYERS), default=[1, 2, 3])
    parser.add_argument("--calibrated", nargs="*", type=int, choices=sorted(LAYERS), default=[1, 2])
    parser.add_argument("--build", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # JSON: [source, *command]
    parser.add_argument("--runtime", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--collect", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(_build(*args.build)), flush=True)
        return
    if args.measure:
        print(json.dumps(_measure(*json.loads(args.measure))), flush=True)
        return
    if args.runtime:
        print(json.dumps(_runtime(*args.runtime)), flush=True)
        return
    if args.collect:
        print(json.dumps(_collect(*args.collect)), flush=True)
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
    calibrated = _calibrated_rows(args.calibrated)
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
    if calibrated:
        parts += [
            "",
            f"Calibration at scale (`--calibrated {' '.join(map(str, args.calibrated))}`): "
            f"stacks with weights ~ N(0, 0.005), {CAL_SAMPLES} samples of one row; the "
            f"statistics bounded to {STATS_MEMORY >> 20} MiB spill to disk (same sums, bit "
            "for bit). One run per row, each in a process of its own.",
            "",
            "| stack | run | seconds | peak RSS (GiB) | peak / weights |",
            "|---|---|---:|---:|---:|",
            *calibrated,
        ]
    RESULTS.write_text("\n".join(parts) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
