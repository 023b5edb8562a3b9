"""``compress_to_size`` against every uniform configuration, on three pretrained models.

For each model: calibrate, weigh the default candidates once (timed), then measure on
held-out inputs (a) each default candidate applied to every weight (the uniform
configurations, as the passes make them) and (b) ``auto`` at the size of each uniform
configuration, at 80 % of uniform int4 per block of 32, and at the model's own goal sizes,
each plan checked (``check_plan``) on 8 more inputs that neither the calibration nor the
evaluation uses (and the plan alone measured too where the check kept another).
Every compressed program runs on the Core AI runtime, in a spawned process of its own (an
MLIR context keeps every compressed copy's data, so one process per row keeps memory flat).

Models and metrics (higher is better except perplexity):

* ``minilm``: all-MiniLM-L6-v2 (``bench.calibration``), mean and min cosine between the
  compressed and the dense sentence embeddings, padding masked out of the statistics;
* ``cnn``: EfficientNet-Lite0, ImageNet weights (``bench.vision``), top-1 agreement with
  the dense model on held-out crops of other photographs;
* ``lm``: SmolLM2-135M-Instruct (``bench.language_model``), perplexity on held-out text.

Writes ``bench/auto-<model>.json`` (the rows) for the models run, then ``bench/AUTO.md`` and
``bench/auto.png`` (metric against size, one panel per model) from every model's rows.

    python -m bench.auto [--models minilm cnn lm] [--lm-eval-windows N] [--only int4 ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.__main__ import machine
from coreai_opt.coreai_utils import (
    DEFAULT_CANDIDATES,
    Calibration,
    Weighing,
    apply_choices,
    check_plan,
    collect_calibration,
    weigh_candidates,
)
from coreai_opt.coreai_utils.passes.auto.gains import DEFAULT_PROBES
from coreai_opt.coreai_utils.runtime import run_samples

RESULTS = Path(__file__).with_name("AUTO.md")
PICTURE = Path(__file__).with_name("auto.png")
Samples = list[dict[str, np.ndarray]]


@dataclass
class Model:
    """A bench model: how to load it (program, calibration and evaluation samples), its
    padding mask, its metric (name, higher is better), the extra auto sizes it has goals
    at (fractions of the dense bytes) and its probes."""

    name: str
    title: str
    load: Callable[[argparse.Namespace], Loaded]
    metric: str
    higher: bool
    padding_mask: str | None = None
    goals: tuple[float, ...] = ()
    probes: int = DEFAULT_PROBES  # the manual's advice: 32 for hundreds of weights
    rows: list[dict[str, Any]] = field(default_factory=list)


CHECK_SAMPLES = 8
"""Held-out inputs for ``compress_to_size``'s check: neither calibration nor evaluation."""

Loaded = tuple[Any, Samples, Samples, Samples]
"""The program, calibration, evaluation and check samples."""


def _minilm(_: argparse.Namespace) -> Loaded:
    from bench.calibration import minilm  # noqa: PLC0415
    from bench.sentences import CHECK  # noqa: PLC0415

    program, samples, evaluation = minilm(CHECK)
    return program, samples[: -len(CHECK)], evaluation, samples[-len(CHECK) :]


def _cnn(args: argparse.Namespace) -> Loaded:
    from bench.vision import (  # noqa: PLC0415
        CALIBRATION_IMAGES,
        EVALUATION_IMAGES,
        crops,
        efficientnet_lite0,
    )

    calibration = crops(CALIBRATION_IMAGES, args.cnn_cal_crops, seed=0)
    evaluation = crops(EVALUATION_IMAGES, args.cnn_eval_crops, seed=1)
    check = crops(CALIBRATION_IMAGES, CHECK_SAMPLES, seed=2)  # other crops of the same photos
    return efficientnet_lite0(), calibration, evaluation, check


def _lm(args: argparse.Namespace) -> Loaded:
    from bench.language_model import language_model  # noqa: PLC0415

    # the windows after the calibration ones, in the same texts
    program, windows, evaluation = language_model(
        args.lm_cal_windows + CHECK_SAMPLES, args.lm_eval_windows
    )
    return program, windows[: args.lm_cal_windows], evaluation, windows[args.lm_cal_windows :]


MODELS = {
    "minilm": Model(
        "minilm", "all-MiniLM-L6-v2", _minilm, "mean cosine", higher=True, padding_mask="mask"
    ),
    "cnn": Model(
        "cnn",
        "EfficientNet-Lite0 (ImageNet)",
        _cnn,
        "top-1 agreement",
        higher=True,
        goals=(0.16,),
    ),
    "lm": Model("lm", "SmolLM2-135M-Instruct", _lm, "perplexity", higher=False, probes=32),
}


def outputs(asset: Path, samples: Samples) -> np.ndarray:
    """Every sample's first output, stacked."""
    with closing(run_samples(asset, samples)) as results:
        return np.concatenate([next(iter(r.values()))[None] for r in results])


def score(
    metric: str, got: np.ndarray, dense: np.ndarray | None, samples: Samples
) -> dict[str, float]:
    """The model's metric of outputs ``got`` against the dense model's (perplexity needs
    only the samples' next tokens)."""
    if metric == "top-1 agreement" and dense is not None:
        agree = got.reshape(len(got), -1).argmax(1) == dense.reshape(len(dense), -1).argmax(1)
        return {"value": float(agree.mean())}
    if metric == "mean cosine" and dense is not None:
        a, b = got.reshape(len(got), -1), dense.reshape(len(dense), -1)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"value": float(cos.mean()), "min": float(cos.min())}
    total, count = 0.0, 0
    for sample, logits in zip(samples, got, strict=True):
        values = logits[0, :-1].astype(np.float64)
        targets = sample["ids"][0, 1:]
        peak = values.max(axis=1, keepdims=True)
        norm = np.log(np.exp(values - peak).sum(axis=1)) + peak[:, 0]
        total += float(np.sum(norm - values[np.arange(targets.size), targets]))
        count += targets.size
    return {"value": float(np.exp(total / count))}


def measure_row(
    metric: str,
    asset: Path,
    calibration_file: Path,
    choices: dict[str, str],
    samples: Samples,
    dense: np.ndarray | None,
) -> dict[str, float]:
    """In a fresh process: apply ``choices`` to the saved dense program, run the evaluation
    samples on the runtime, score them. ``bytes`` are the weights' stored bytes."""
    from coreai_opt.coreai_utils.assets import load_program  # noqa: PLC0415

    program = load_program(asset)
    calibration = Calibration.load(calibration_file)
    result = apply_choices(program, choices, calibration=calibration, in_place=True)
    with tempfile.TemporaryDirectory(prefix="bench-auto-row-") as scratch:
        path = Path(scratch) / "row.aimodel"
        result.program.save_asset(path)
        got = outputs(path, samples)
    return {**score(metric, got, dense, samples), "bytes": float(result.plan.total_bytes)}


def _weigh(
    program: Any, calibration: Calibration, samples: Samples, probes: int, info: dict[str, Any]
) -> Weighing:
    """Weigh the default candidates with ``probes`` runtime runs on ``samples``; record the
    proxy's time, the probes' time and the sensitivity in ``info``."""
    start = time.perf_counter()
    weighed_at: list[float] = []

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "weighing" and done == total:
            weighed_at.append(time.perf_counter())

    weighing = weigh_candidates(
        program, calibration=calibration, samples=samples, probes=probes, on_progress=on_progress
    )
    end = time.perf_counter()
    info["weigh_s"] = weighed_at[0] - start
    info["probe_s"] = end - weighed_at[0]
    info["sensitivity"] = weighing.sensitivity
    return weighing


def run_model(model: Model, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    program, calibration_samples, evaluation_samples, check_samples = model.load(args)
    print(f"[{model.name}] loaded in {time.perf_counter() - start:.1f} s", flush=True)
    info: dict[str, Any] = {
        "calibration_samples": len(calibration_samples),
        "held_out_samples": len(evaluation_samples),
        "check_samples": len(check_samples),
    }
    with tempfile.TemporaryDirectory(prefix="bench-auto-") as scratch_dir:
        scratch = Path(scratch_dir)
        asset, calibration_file = scratch / "dense.aimodel", scratch / "calibration.npz"
        program.save_asset(asset)
        dense = None if model.metric == "perplexity" else outputs(asset, evaluation_samples)
        start = time.perf_counter()
        calibration = collect_calibration(
            program, calibration_samples, padding_mask=model.padding_mask
        )
        info["calibration_s"] = time.perf_counter() - start
        calibration.save(calibration_file)
        probes = model.probes if args.probes is None else args.probes
        weighing = _weigh(program, calibration, calibration_samples, probes, info)
        dense_bytes = weighing.dense_bytes
        info["dense_bytes"] = dense_bytes
        print(
            f"[{model.name}] calibration {info['calibration_s']:.1f} s, weighing "
            f"{info['weigh_s']:.1f} s",
            flush=True,
        )
        uniform: dict[str, dict[str, str]] = {}
        for candidate in DEFAULT_CANDIDATES:
            uniform[candidate.name] = {
                w.site.id: candidate.name
                if any(o.name == candidate.name for o in w.options)
                else "dense"
                for w in weighing.weights
            }
        sizes = {
            name: sum(
                next((o.bytes for o in w.options if o.name == choice[w.site.id]), 0)
                or w.options[0].bytes
                for w in weighing.weights
            )
            for name, choice in uniform.items()
        }
        targets: list[tuple[str, int]] = [(f"auto @ {name}", size) for name, size in sizes.items()]
        targets.append(("auto @ 0.8 x int4-block32", int(0.8 * sizes["int4-block32"])))
        targets += [(f"auto @ {f:.0%} of dense", int(f * dense_bytes)) for f in model.goals]
        if args.only:  # the uniform configurations named, and auto at their sizes
            keep = {*args.only, *(f"auto @ {name}" for name in args.only)}
            keep |= {"auto @ 0.8 x int4-block32"} if "int4-block32" in args.only else set()
            uniform = {name: choice for name, choice in uniform.items() if name in keep}
            targets = [(label, size) for label, size in targets if label in keep]
        plans: list[Plan] = [("uniform", name, choice, {}) for name, choice in uniform.items()]
        plans += _auto_plans(
            model, program, weighing, calibration.function, check_samples, targets, info
        )
        spawn = multiprocessing.get_context("spawn")
        scores: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}  # same choices, same
        for kind, label, choice, check in plans:
            key = tuple(sorted(choice.items()))
            if key not in scores:
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    scores[key] = pool.submit(
                        measure_row,
                        model.metric,
                        asset,
                        calibration_file,
                        choice,
                        evaluation_samples,
                        dense,
                    ).result()
            measured = scores[key]
            mix: dict[str, int] = {}
            for value in choice.values():
                mix[value] = mix.get(value, 0) + 1
            row = {
                "kind": kind,
                "label": label,
                "fraction": measured["bytes"] / dense_bytes,
                **measured,
                "mix": mix,
                **check,
            }
            model.rows.append(row)
            print(f"[{model.name}] {json.dumps(row)}", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return info


Plan = tuple[str, str, dict[str, str], dict[str, Any]]
"""A row to measure: kind (uniform, auto, unchecked), label, choices, what the check did."""


def _auto_plans(
    model: Model,
    program: Any,
    weighing: Weighing,
    function: str,
    samples: Samples,
    targets: list[tuple[str, int]],
    info: dict[str, Any],
) -> list[Plan]:
    """auto at each target size: the plan, checked on the runtime against the best
    uniform configurations that fit (``check_plan`` on ``samples``, held out from the
    calibration and the evaluation), and the plan alone when the check kept another; the
    longest allocation and check in ``info``."""
    timings, check_times = [], []
    plans: list[Plan] = []
    done: dict[int, list[Plan]] = {}  # size -> its rows (palettize 4 and int4 often share one)
    for label, size in targets:
        if size in done:
            plans += [(kind, label, choice, check) for kind, _, choice, check in done[size]]
            continue
        start = time.perf_counter()
        try:
            plan = weighing.plan(size)
        except ValueError as error:
            print(f"[{model.name}] {label}: {error}", flush=True)
            continue
        timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        checked = check_plan(program, weighing, plan, samples, function=function)
        check_times.append(time.perf_counter() - start)
        check = {"kept": checked.kept, "checked": {run.name: run.error for run in checked.checked}}
        rows: list[Plan] = [("auto", label, checked.choices, check)]
        if checked.kept != "plan":  # the allocation alone, to show what the check did
            rows.append(("unchecked", label, plan.choices, {}))
        done[size] = rows
        plans += rows
    info["allocation_s"] = max(timings) if timings else 0.0
    info["check_s"] = max(check_times) if check_times else 0.0
    return plans


def _saved(name: str) -> Path:
    return RESULTS.with_name(f"auto-{name}.json")


def _table(model: Model, info: dict[str, Any]) -> str:
    lines = [
        f"## {model.title}",
        "",
        f"Run {info['run']} on {info['machine']}.",
        "",
        f"{info['calibration_samples']} calibration samples, "
        f"{info['held_out_samples']} held-out ones"
        + (
            f", {info['check_samples']} others for the check." if info.get("check_samples") else "."
        ),
        "",
        f"Dense weights {info['dense_bytes'] / 1e6:.2f} MB; calibration "
        f"{info['calibration_s']:.1f} s; weighing the {len(DEFAULT_CANDIDATES)} default "
        f"candidates {info['weigh_s']:.1f} s; {info['sensitivity']}: "
        f"{info['probe_s']:.1f} s; allocation at most {info['allocation_s'] * 1000:.1f} ms"
        + (
            f"; the check on the runtime at most {info['check_s']:.1f} s."
            if "check_s" in info
            else "."
        ),
        *([info["note"], ""] if info.get("note") else [""]),
        f"| configuration | size (of dense) | {model.metric} | auto at the same size | "
        "auto's mix | the check kept |",
        "|---|---|---|---|---|---|",
    ]
    autos = {r["label"]: r for r in model.rows if r["kind"] == "auto"}
    unchecked = {r["label"]: r for r in model.rows if r["kind"] == "unchecked"}
    for row in (r for r in model.rows if r["kind"] == "uniform"):
        paired = autos.get(f"auto @ {row['label']}")
        auto = (
            f"{_value(paired)} | {_mix(paired)} | {_kept(paired, unchecked)}"
            if paired
            else "- | - | -"
        )
        lines.append(f"| {row['label']} | {row['fraction']:.3f} | {_value(row)} | {auto} |")
    uniform = {r["label"] for r in model.rows if r["kind"] == "uniform"}
    for row in model.rows:
        if row["kind"] == "auto" and row["label"].removeprefix("auto @ ") not in uniform:
            lines.append(
                f"| {row['label']} | {row['fraction']:.3f} | - | {_value(row)} | {_mix(row)} | "
                f"{_kept(row, unchecked)} |"
            )
    return "\n".join(lines)


def _kept(row: dict[str, Any], unchecked: dict[str, dict[str, Any]]) -> str:
    """What the check kept: the plan, or a uniform configuration (with the plan's own
    held-out value)."""
    kept = row.get("kept")
    if kept is None:  # a row from before the check
        return "-"
    alone = unchecked.get(row["label"])
    return kept if alone is None else f"{kept} (the plan: {_value(alone)})"


def _value(row: dict[str, Any]) -> str:
    text = f"{row['value']:.3f}" if row["value"] < 10 else f"{row['value']:.2f}"
    return text + (f" (min {row['min']:.3f})" if "min" in row else "")


def _mix(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(row["mix"].items(), key=lambda kv: -kv[1]))


def _picture(models: list[Model]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        uniform = [r for r in model.rows if r["kind"] == "uniform"]
        auto = sorted((r for r in model.rows if r["kind"] == "auto"), key=lambda r: r["fraction"])
        axis.plot([r["fraction"] for r in auto], [r["value"] for r in auto], "o-", label="auto")
        axis.scatter(
            [r["fraction"] for r in uniform],
            [r["value"] for r in uniform],
            marker="s",
            color="tab:orange",
            label="uniform",
            zorder=3,
        )
        for row in uniform:
            axis.annotate(
                row["label"],
                (row["fraction"], row["value"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        axis.set_xlabel("weight bytes / dense (fp32)")
        axis.set_ylabel(model.metric)
        if not model.higher:
            axis.set_yscale("log")
        axis.set_title(model.title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(PICTURE, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auto")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cnn-cal-crops", type=int, default=32)
    parser.add_argument("--cnn-eval-crops", type=int, default=96)
    parser.add_argument("--lm-cal-windows", type=int, default=32)
    parser.add_argument("--lm-eval-windows", type=int, default=24)
    parser.add_argument(
        "--probes", type=int, default=None, help="probes for every model (default: its own)"
    )
    parser.add_argument("--note", help="a line under each measured model's timings")
    parser.add_argument(
        "--only",
        nargs="*",
        metavar="CANDIDATE",
        help="measure only these uniform configurations and auto at their sizes (the "
        "language model's rows take minutes each)",
    )
    args = parser.parse_args()
    for name in args.models:
        model = MODELS[name]
        info = run_model(model, args)
        info["run"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        info["machine"] = machine()
        if args.note:
            info["note"] = args.note
        saved = {"info": info, "rows": model.rows}
        _saved(name).write_text(json.dumps(saved, indent=1))
    sections, chosen = [], []
    for name, model in MODELS.items():  # every model measured so far, this run or an earlier
        if not _saved(name).exists():
            continue
        saved = json.loads(_saved(name).read_text())
        model.rows = saved["rows"]
        sections.append(_table(model, saved["info"]))
        chosen.append(model)
    _picture(chosen)
    text = f"""# Compress to a size: auto against uniform configurations

`python -m bench.auto [--models ...]`, one run per model (each section gives its date and
machine; the rows are kept in `bench/auto-<model>.json`, so a run of some models keeps the
others' sections).

Each uniform row is one default candidate applied to every weight that takes it (the others
stay dense), calibrated (GPTQ, OBS rounding, SparseGPT); "auto at the same size" is
`compress_to_size` (proxy sensitivity, calibrated across layers by `--probes` runtime runs
on the calibration samples) with that row's bytes as its budget, its plan checked on the
runtime against the two best-estimated uniform configurations that fit, on inputs that
neither the calibration nor the evaluation uses ("the check kept": the plan, or a uniform
configuration, with the plan's own value after it). Sizes are the stored weight bytes over
the dense fp32 bytes. Held-out inputs only (see the module doc of `bench/auto.py`).
Picture: [auto.png](auto.png).

{(chr(10) * 2).join(sections)}
"""
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
