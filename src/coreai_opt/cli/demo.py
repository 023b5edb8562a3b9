"""``make demo``: sparsify the built-in demo program, run both on the runtime, show the change."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from coreai_opt.cli.demo_model import SEQUENCE, VOCAB, build_demo_program
from coreai_opt.coreai_utils.numerics.metrics import cosine_similarity, snr_db
from coreai_opt.coreai_utils.passes.sparsify import sparsify_with_report
from coreai_opt.coreai_utils.runtime import run_asset


def main() -> None:
    program = build_demo_program()
    result = sparsify_with_report(program, target_sparsity=0.5)
    print(f"{'weight':40} {'shape':>14} {'kind':>9} {'mode':>9} {'sparsity':>8} {'bytes':>15}")
    for row in result.weights:
        shape = "x".join(map(str, row.shape))
        sparsity = f"{row.sparsity:.3f}" if row.sparsity is not None else "-"
        size = f"{row.bytes_before}->{row.bytes_after}"
        mode = row.mode or "dense"
        print(f"{row.name:40} {shape:>14} {row.kind:>9} {mode:>9} {sparsity:>8} {size:>15}")
    ids = (np.arange(SEQUENCE, dtype=np.int32) * 37) % VOCAB
    with tempfile.TemporaryDirectory() as tmp:
        outputs = []
        for name, prog in (("dense", program), ("sparse", result.program)):
            path = Path(tmp) / f"{name}.aimodel"
            prog.save_asset(path)
            asset_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            print(f"{name} asset: {asset_bytes} bytes")
            outputs.append(run_asset(path, {"ids": ids}))
    for key, dense in outputs[0].items():
        snr, cosine = snr_db(dense, outputs[1][key]), cosine_similarity(dense, outputs[1][key])
        print(f"output {key}: SNR {snr:.1f} dB, cosine {cosine:.4f}")


if __name__ == "__main__":
    main()
