"""``python -m bench.memory``: does memory stay flat? Writes ``bench/MEMORY.md``.

Three questions, on the bench models (a 4096x4096 fp32 linear, all-MiniLM-L6-v2,
EfficientNet-Lite0, SmolLM2-135M):

* **Repeated calls**: RSS after each of 10 calls of a pass on one program in one process
  (``out = pass(program); del out; gc.collect()``). Goal: after call 10 within 5 % of after
  call 1.
* **Calibration samples**: peak RSS above the loaded program while ``collect_calibration``
  runs, for 8 and for 32 samples, next to the size of one sample's captured activations (the
  most bytes one runtime call returned) and of the statistics. Goal: the two peaks differ by
  less than two samples' activations.
* **A busy neighbour**: SparseGPT (50 %) on SmolLM2 with its 8-sample calibration, alone and
  next to one CPU-bound process. Goal: at most 2.5x the idle time.

Every measurement runs in a process of its own (``python -m bench.memory --worker ...``), so
each peak is its own; the parent converts each model once into a scratch asset.

    python -m bench.memory                       # everything (about 15 minutes)
    python -m bench.memory --models linear minilm
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).with_name("MEMORY.md")
CALLS = 10
SAMPLES = (8, 32)
MODELS = ("linear", "minilm", "cnn", "lm")
LABELS = {
    "linear": "linear 4096x4096 fp32",
    "minilm": "all-MiniLM-L6-v2",
    "cnn": "EfficientNet-Lite0",
    "lm": "SmolLM2-135M",
}
PASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "sparsify 50 %": ("sparsify_weights", {"target_sparsity": 0.5}),
    "quantize int4 b32": (
        "quantize_weights",
        {"dtype": "int4", "granularity": "per_block", "block_size": 32},
    ),
    "palettize 4 per tensor": ("palettize_weights", {"n_bits": 4}),
}


def _status(field: str) -> int:
    """A ``VmXXX`` field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _mib(count: float) -> str:
    return f"{count / 2**20:.0f}"


# ---- the parent: models to scratch assets, workers, the table ----------------------------


def _prepare(model: str, folder: Path) -> None:
    """Save ``model``'s program as ``<model>.aimodel`` and its 32 calibration samples as
    ``<model>.npz`` (none for the linear)."""
    samples: list[dict[str, np.ndarray]] = []
    if model == "linear":
        from bench.programs import linear  # noqa: PLC0415

        program = linear(4096).program
    elif model == "minilm":
        from bench.calibration import minilm  # noqa: PLC0415

        program, samples, _ = minilm()
    elif model == "cnn":
        from bench.vision import CALIBRATION_IMAGES, crops, efficientnet_lite0  # noqa: PLC0415

        program, samples = efficientnet_lite0(), crops(CALIBRATION_IMAGES, max(SAMPLES), 7)
    else:
        from bench.language_model import language_model  # noqa: PLC0415

        program, samples, _ = language_model(max(SAMPLES), 1)
    program.save_asset(folder / f"{model}.aimodel")
    if samples:
        arrays = {f"{i}/{k}": v for i, one in enumerate(samples) for k, v in one.items()}
        np.savez(folder / f"{model}.npz", **arrays)


def _worker(*args: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.memory", "--worker", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        msg = f"worker {args} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _busy() -> subprocess.Popen[bytes]:
    """One CPU-bound process (a pure-Python loop) until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](*args.worker[1:])), flush=True)
        return
    from bench.__main__ import machine  # noqa: PLC0415

    calls_rows: list[str] = []
    samples_rows: list[str] = []
    busy_rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        folder = Path(scratch)
        for model in args.models:
            start = time.perf_counter()
            _prepare(model, folder)
            print(f"{model}: converted in {time.perf_counter() - start:.0f} s", flush=True)
            for label in PASSES:
                got = _worker("calls", str(folder), model, label)
                sizes = got["rss"]
                growth = sizes[-1] / sizes[0] - 1
                calls_rows.append(
                    f"| {LABELS[model]} | {label} | {_mib(sizes[0])} | {_mib(sizes[-1])} | "
                    f"{growth:+.1%} | {'yes' if abs(growth) <= 0.05 else 'NO'} | "
                    f"{got['seconds']:.1f} |"
                )
                print(calls_rows[-1], flush=True)
            if model == "linear":
                continue
            peaks = {}
            for count in SAMPLES:
                got = _worker("calibrate", str(folder), model, str(count))
                peaks[count] = got
                samples_rows.append(
                    f"| {LABELS[model]} | {count} | {_mib(got['peak'])} | "
                    f"{_mib(got['anonymous'])} | {_mib(got['activations'])} | "
                    f"{_mib(got['stats'])} | {got['seconds']:.0f} |"
                )
                print(samples_rows[-1], flush=True)
            low, high = peaks[SAMPLES[0]], peaks[SAMPLES[-1]]
            difference = high["peak"] - low["peak"]
            anonymous = high["anonymous"] - low["anonymous"]
            allowed = 2 * max(low["activations"], high["activations"])
            samples_rows.append(
                f"| {LABELS[model]} | difference | {_mib(difference)} | {_mib(anonymous)} | "
                f"2 samples: {_mib(allowed)} | | "
                f"{'met' if difference < allowed else 'NOT met'} |"
            )
            if model == "lm":
                idle = _worker("sparsegpt", str(folder), model)
                neighbour = _busy()
                try:
                    busy = _worker("sparsegpt", str(folder), model)
                finally:
                    neighbour.kill()
                    neighbour.wait()
                ratio = busy["seconds"] / idle["seconds"]
                busy_rows.append(
                    f"| {LABELS[model]} | SparseGPT 50 % | {idle['seconds']:.1f} | "
                    f"{busy['seconds']:.1f} | {ratio:.2f}x | {'yes' if ratio <= 2.5 else 'NO'} |"
                )
                print(busy_rows[-1], flush=True)
    _write(machine(), args.models, calls_rows, samples_rows, busy_rows)


def _write(
    machine: str,
    models: list[str],
    calls_rows: list[str],
    samples_rows: list[str],
    busy_rows: list[str],
) -> None:
    day = datetime.now(UTC).date().isoformat()
    parts = [
        "# Memory that stays flat",
        "",
        f"`python -m bench.memory --models {' '.join(models)}`, {day}. Machine: {machine}. "
        "One run per row, each in a process of its own.",
        "",
        f"## {CALLS} calls of a pass in one process",
        "",
        "RSS (MiB) after call 1 and after call 10 of `out = pass(program); del out; "
        "gc.collect()` on a program loaded from its asset. Goal: within 5 %.",
        "",
        "| model | pass | after call 1 | after call 10 | growth | goal met | seconds, 10 calls |",
        "|---|---|---:|---:|---:|---|---:|",
        *calls_rows,
    ]
    if samples_rows:
        parts += [
            "",
            "## Calibration: 8 against 32 samples",
            "",
            "Peak RSS (MiB) above the loaded program and its samples while "
            "`collect_calibration` runs (VmHWM), and its anonymous part alone (RssAnon, sampled "
            "every 5 ms: without the pages of mapped files, such as the embedding rows the "
            "runtime reads from the compiled asset); one sample's activations: the most bytes "
            "one runtime call returned; statistics: the bytes of the result. Goal: the peaks "
            "differ by less than two samples' activations (the last column of the difference "
            "row).",
            "",
            "| model | samples | peak extra | anonymous | one sample's activations | statistics "
            "| seconds |",
            "|---|---|---:|---:|---:|---:|---:|",
            *samples_rows,
        ]
    if busy_rows:
        parts += [
            "",
            "## Next to a busy process",
            "",
            "Seconds of `sparsify_weights(..., algorithm='sparsegpt')` alone and next to one "
            "CPU-bound process (a Python loop) on the 2 cores. Goal: at most 2.5x.",
            "",
            "| model | pass | idle (s) | next to one busy process (s) | ratio | goal met |",
            "|---|---|---:|---:|---:|---|",
            *busy_rows,
        ]
    RESULTS.write_text("\n".join(parts) + "\n")
    print(f"wrote {RESULTS}")


# ---- the workers: one measurement each, a JSON line on stdout ----------------------------


def _load(folder: str, model: str) -> tuple[Any, list[dict[str, np.ndarray]]]:
    from coreai_opt.coreai_utils.assets import load_program  # noqa: PLC0415

    program = load_program(Path(folder) / f"{model}.aimodel")
    npz = Path(folder) / f"{model}.npz"
    samples: dict[int, dict[str, np.ndarray]] = {}
    if npz.exists():
        with np.load(npz) as data:
            for key in data.files:
                index, name = key.split("/", 1)
                samples.setdefault(int(index), {})[name] = data[key]
    return program, [samples[i] for i in sorted(samples)]


def _calls(folder: str, model: str, label: str) -> dict[str, Any]:
    import coreai_opt.coreai_utils as api  # noqa: PLC0415

    program, _ = _load(folder, model)
    name, options = PASSES[label]
    function: Callable[..., Any] = getattr(api, name)
    sizes = []
    start = time.perf_counter()
    for _ in range(CALLS):
        out = function(program, **options)
        del out
        gc.collect()
        sizes.append(_status("VmRSS"))
    return {"rss": sizes, "seconds": time.perf_counter() - start}


def _calibrate(folder: str, model: str, count: str) -> dict[str, Any]:
    from coreai_opt.coreai_utils.calibration import collect  # noqa: PLC0415

    program, samples = _load(folder, model)
    samples = samples[: int(count)]
    run_samples = collect.run_samples
    largest = 0

    def counting(*args: Any, **kwargs: Any) -> Iterator[dict[str, np.ndarray]]:
        nonlocal largest
        with closing(run_samples(*args, **kwargs)) as outputs:
            for result in outputs:
                largest = max(largest, sum(v.nbytes for v in result.values()))
                yield result

    collect.run_samples = counting  # type: ignore[assignment]
    mask = "mask" if "mask" in samples[0] else None
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts here (Linux >= 4.0)
    before, anonymous = _status("VmRSS"), _status("RssAnon")
    highest = anonymous
    running = threading.Event()
    running.set()

    def watch() -> None:  # the anonymous part's peak, sampled every 5 ms
        nonlocal highest
        while running.is_set():
            highest = max(highest, _status("RssAnon"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    calibration = collect.collect_calibration(program, samples, padding_mask=mask)
    seconds = time.perf_counter() - start
    running.clear()
    watcher.join()
    peak = _status("VmHWM") - before
    stats = sum(
        value.nbytes
        for s in calibration.stats.values()
        for value in vars(s).values()
        if isinstance(value, np.ndarray)
    )
    if int(count) == SAMPLES[0]:
        calibration.save(Path(folder) / f"{model}.calibration.npz")
    return {
        "peak": peak,
        "anonymous": highest - anonymous,
        "activations": largest,
        "stats": stats,
        "seconds": seconds,
    }


def _sparsegpt(folder: str, model: str) -> dict[str, Any]:
    from coreai_opt.coreai_utils import Calibration, sparsify_weights  # noqa: PLC0415

    program, _ = _load(folder, model)
    calibration = Calibration.load(Path(folder) / f"{model}.calibration.npz")
    start = time.perf_counter()
    sparsify_weights(program, target_sparsity=0.5, calibration=calibration, algorithm="sparsegpt")
    return {"seconds": time.perf_counter() - start}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "calls": _calls,
    "calibrate": _calibrate,
    "sparsegpt": _sparsegpt,
}

if __name__ == "__main__":
    main()
