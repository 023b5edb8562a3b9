"""A tied embedding / LM head is calibrated through its matmul; padding stays out of the
statistics of the activations that map onto the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coreai_opt.coreai_utils import collect_calibration, sparsify_with_report
from tests.calibration.test_capture import assert_stats
from tests.torch_models import convert

torch.manual_seed(0)


class TiedLM(nn.Module):
    """An embedding whose table is also the output head (as small language models have)."""

    def __init__(self, vocab: int = 64, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids.long()))))


def head_inputs(model: TiedLM, samples: list[dict[str, torch.Tensor]]) -> np.ndarray:
    with torch.no_grad():
        rows = [
            torch.tanh(model.mix(model.embed(s["ids"].long()))).numpy().reshape(-1, 32)
            for s in samples
        ]
    return np.concatenate(rows).astype(np.float64)


def test_a_tied_embedding_is_calibrated_through_its_head() -> None:
    model = TiedLM().eval()
    samples = [{"ids": torch.randint(0, 64, (1, 12), dtype=torch.int32)} for _ in range(3)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"ids": s["ids"].numpy()} for s in samples])
    tied = "@main/w0"
    assert tied not in calibration.missing
    assert "gather_nd lookup has no activation" in calibration.notes[tied]
    assert_stats(calibration.stats[tied], head_inputs(model, samples))
    for algorithm in ("wanda", "sparsegpt"):
        result = sparsify_with_report(
            program, calibration=calibration, algorithm=algorithm, weight_num_threshold=0
        )
        row = next(w for w in result.weights if w.id == tied)
        assert row.kind == "embedding" and row.algorithm == algorithm
        assert "calibrated through its matmul" in (row.reason or "")
    # kind:embedding selects the tied table (it was reported as linear before)
    chosen = sparsify_with_report(
        program,
        calibration=calibration,
        weight_num_threshold=0,
        overrides={"kind:embedding": {"target_sparsity": 0.25}},
    )
    row = next(w for w in chosen.weights if w.id == tied)
    assert row.sparsity == pytest.approx(0.25, abs=0.01)


class Padded(nn.Module):
    """Token embeddings, zeroed where the mask is 0, through two linears and a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.fc1 = nn.Linear(16, 24)
        self.fc2 = nn.Linear(24, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids.long()) + mask.unsqueeze(-1).float()  # padded rows are not zero
        return torch.relu(self.fc1(h))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.hidden(ids, mask))
        return self.conv(h.transpose(1, 2))


def padded_samples(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(count):
        length = int(rng.integers(2, 10))
        mask = (np.arange(10) < length).astype(np.int32)[None]
        ids = np.where(mask > 0, rng.integers(1, 50, (1, 10)), 0).astype(np.int32)
        samples.append({"ids": ids, "mask": mask})
    return samples


def test_padded_positions_are_left_out_where_rows_map_onto_the_mask() -> None:
    model = Padded().eval()
    samples = padded_samples(4)
    torch_samples = [{k: torch.from_numpy(v) for k, v in s.items()} for s in samples]
    program = convert(model, torch_samples[0])
    calibration = collect_calibration(program, samples, padding_mask="mask")
    assert calibration.padding_mask == "mask"
    with torch.no_grad():
        kept = [s["mask"].reshape(-1) > 0 for s in samples]
        fc2_rows = np.concatenate(
            [
                model.hidden(t["ids"], t["mask"]).numpy().reshape(-1, 24)[k]
                for t, k in zip(torch_samples, kept, strict=True)
            ]
        )
    by_columns = {s.columns: (key, s) for key, s in calibration.stats.items()}
    fc2_id, fc2_stats = by_columns[24]
    assert fc2_stats.count == sum(int(k.sum()) for k in kept)
    assert_stats(fc2_stats, fc2_rows.astype(np.float64))
    conv_id = next(k for k, s in calibration.stats.items() if s.layout.value == "conv")
    assert "padding kept" in calibration.unmasked[conv_id]
    assert fc2_id not in calibration.unmasked
    unmasked = collect_calibration(program, samples)
    assert unmasked.stats[fc2_id].count == 10 * len(samples)
    assert unmasked.padding_mask is None and not unmasked.unmasked
    # the report row of a weight that keeps its padding says so
    result = sparsify_with_report(program, calibration=calibration, weight_num_threshold=0)
    row = next(w for w in result.weights if w.id == conv_id)
    assert "padding kept" in (row.reason or "")


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("nope", ValueError, "padding_mask 'nope' is not an input of 'main'"),
        (3, TypeError, "padding_mask must be the name of an input"),
    ],
)
def test_a_bad_padding_mask_is_refused_before_anything_runs(
    name: object, error: type, match: str
) -> None:
    samples = padded_samples(1)
    program = convert(Padded().eval(), {k: torch.from_numpy(v) for k, v in samples[0].items()})
    with pytest.raises(error, match=match):
        collect_calibration(program, samples, padding_mask=name)  # type: ignore[arg-type]


def test_a_float_input_is_not_a_padding_mask() -> None:
    program = convert(nn.Linear(8, 8).eval(), {"x": torch.randn(2, 8)})
    with pytest.raises(ValueError, match="must be an integer or bool input"):
        collect_calibration(program, [{"x": np.ones((2, 8), np.float32)}], padding_mask="x")


def test_the_file_keeps_notes_padding_and_shapes(tmp_path: object) -> None:
    from pathlib import Path

    samples = padded_samples(2)
    program = convert(Padded().eval(), {k: torch.from_numpy(v) for k, v in samples[0].items()})
    calibration = collect_calibration(program, samples, padding_mask="mask")
    path = Path(str(tmp_path)) / "c.npz"
    calibration.save(path)
    loaded = type(calibration).load(path)
    assert loaded.padding_mask == "mask" and loaded.unmasked == calibration.unmasked
    assert loaded.notes == calibration.notes and loaded.shapes == calibration.shapes
    assert (50, 16) in loaded.shapes.values()


def test_a_padding_mask_that_maps_onto_nothing_is_refused() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * flags.float().sum()

    x = np.ones((4, 8), np.float32)
    flags = np.ones((3,), np.int32)  # 3 positions; the linear's rows are 4
    program = convert(Pair().eval(), {"x": torch.from_numpy(x), "flags": torch.from_numpy(flags)})
    with pytest.raises(ValueError, match="maps onto no weight's activation rows"):
        collect_calibration(program, [{"x": x, "flags": flags}], padding_mask="flags")
