"""collect_calibration: captured statistics equal torch's activations of converted modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coreai_opt.coreai_utils import Calibration, collect_calibration
from coreai_opt.coreai_utils.calibration import capture_run
from coreai_opt.coreai_utils.numerics.activations import ActivationStats, StatsLayout
from tests.helpers import nested_program
from tests.reference import ref_conv_patches
from tests.torch_models import MLP, TinyTransformer, convert

torch.manual_seed(0)


def linear_inputs(model: nn.Module, samples: list[dict[str, torch.Tensor]]) -> list[np.ndarray]:
    """The input rows of every nn.Linear of ``model`` over all samples, in module order."""
    seen: dict[str, list[np.ndarray]] = {}
    hooks = [
        layer.register_forward_hook(
            lambda _m, args, _o, name=name: seen.setdefault(name, []).append(
                args[0].detach().numpy().reshape(-1, args[0].shape[-1])
            )
        )
        for name, layer in model.named_modules()
        if isinstance(layer, nn.Linear)
    ]
    with torch.no_grad():
        for sample in samples:
            model(*sample.values())
    for hook in hooks:
        hook.remove()
    return [np.concatenate(rows).astype(np.float64) for rows in seen.values()]


def assert_stats(stats: ActivationStats, rows: np.ndarray) -> None:
    """``stats`` (one group) equal the reduction of ``rows`` within float tolerance."""
    assert stats.count == rows.shape[0]
    np.testing.assert_allclose(stats.sq_sum[0], (rows**2).sum(0), rtol=1e-5, atol=1e-6)
    assert stats.gram is not None
    gram = rows.T @ rows
    np.testing.assert_allclose(stats.gram[0], gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())


def test_mlp_linear_inputs() -> None:
    model = MLP().eval()
    samples = [{"x": torch.randn(5, 24)} for _ in range(3)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"x": s["x"].numpy()} for s in samples])
    assert calibration.samples == 3 and calibration.function == "main"
    assert list(calibration.stats) == ["@main/w0", "@main/w1", "@main/w2"]
    for stats, rows in zip(calibration.stats.values(), linear_inputs(model, samples), strict=True):
        assert stats.layout is StatsLayout.LINEAR
        assert_stats(stats, rows)


class Batched(nn.Module):
    """``x @ W^T`` on a 3-D input, and ``W @ x`` with the weight as the left operand."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 20, bias=False)
        self.left = nn.Parameter(torch.randn(16, 20))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)  # [b, t, 20]
        return self.left @ h.transpose(1, 2)  # [b, 16, t]


def test_batched_and_left_operand_matmuls() -> None:
    model = Batched().eval()
    samples = [{"x": torch.randn(2, 7, 12)} for _ in range(2)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"x": s["x"].numpy()} for s in samples])
    by_shape = {tuple(s.sq_sum.shape): s for s in calibration.stats.values()}
    xs = np.concatenate([s["x"].numpy().reshape(-1, 12) for s in samples]).astype(np.float64)
    assert_stats(by_shape[(1, 12)], xs)
    with torch.no_grad():
        hs = np.concatenate([model.proj(s["x"]).numpy().reshape(-1, 20) for s in samples])
    assert_stats(by_shape[(1, 20)], hs.astype(np.float64))


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=2)
        self.b = nn.Conv2d(6, 8, (2, 3), stride=(1, 2), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_conv_inputs_as_unfolded_patches() -> None:
    model = Convs().eval()
    samples = [{"x": torch.randn(2, 4, 9, 11)} for _ in range(2)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"x": s["x"].numpy()} for s in samples])
    stats = list(calibration.stats.values())
    assert [s.layout for s in stats] == [StatsLayout.CONV, StatsLayout.CONV]
    for layer, stat in zip((model.a, model.b), stats, strict=True):
        inputs = []
        with torch.no_grad():
            for sample in samples:
                x = sample["x"] if layer is model.a else torch.relu(model.a(sample["x"]))
                ph, pw = layer.padding
                padded = np.pad(x.numpy(), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
                inputs.append(
                    ref_conv_patches(
                        padded, layer.kernel_size, layer.stride, layer.dilation, layer.groups
                    )
                )
        patches = np.concatenate(inputs, axis=1)
        assert stat.groups == layer.groups and stat.count == patches.shape[1]
        np.testing.assert_allclose(stat.sq_sum, (patches**2).sum(1), rtol=1e-5, atol=1e-6)
        gram = np.einsum("gnc,gnd->gcd", patches, patches)
        assert stat.gram is not None
        np.testing.assert_allclose(stat.gram, gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())


def test_transformer_shares_one_input_and_skips_the_embedding() -> None:
    model = TinyTransformer().eval()
    samples = [{"ids": torch.randint(0, 64, (2, 8), dtype=torch.int32)} for _ in range(3)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"ids": s["ids"].numpy()} for s in samples])
    assert "gather_nd" in calibration.missing["@main/w0"]
    # q, k, v read the same normalized input: one statistics object
    rows = linear_inputs(model, samples)
    stats = [calibration.stats[f"@main/w{k}"] for k in range(1, 8)]
    assert stats[0] is stats[1] is stats[2]
    by_module = dict(zip(("q", "k", "v", "o", "up", "down", "lm_head"), rows, strict=True))
    for stat, name in zip(stats, ("q", "k", "v", "o", "up", "down", "lm_head"), strict=True):
        assert_stats(stat, by_module[name])


def test_nested_private_graph(tmp_path: object) -> None:
    weight = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    program = nested_program(weight)
    x = np.random.default_rng(1).standard_normal((6, 6)).astype(np.float32)
    calibration = collect_calibration(program, [{"x": x}, {"x": 2 * x}])
    (stats,) = calibration.stats.values()
    assert_stats(stats, np.concatenate([x, 2 * x]).astype(np.float64))


def test_program_untouched_and_runs_split_by_memory_budget() -> None:
    model = MLP().eval()
    samples = [{"x": torch.randn(5, 24).numpy()} for _ in range(2)]
    program = convert(model, {"x": torch.from_numpy(samples[0]["x"])})
    before = str(program._module._mlir_module)
    one = collect_calibration(program, samples)
    several = collect_calibration(program, samples, max_capture_bytes=1)
    assert str(program._module._mlir_module) == before
    for key, stats in one.stats.items():
        np.testing.assert_array_equal(stats.sq_sum, several.stats[key].sq_sum)
        np.testing.assert_array_equal(stats.gram, several.stats[key].gram)  # type: ignore[arg-type]


def test_rows_carried_between_samples_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no carry allowed, every sample is reduced before the next one runs: the
    # statistics are those of the same rows (summed in other blocks).
    model = MLP().eval()
    samples = [{"x": torch.randn(5, 24)} for _ in range(4)]
    program = convert(model, samples[0])
    monkeypatch.setattr(capture_run, "CARRY_BYTES", 0)
    pending: list[int] = []
    add = ActivationStats.add

    def watched(self: ActivationStats, rows: np.ndarray) -> None:
        pending.append(self.pending_bytes)  # what earlier samples left behind
        add(self, rows)

    monkeypatch.setattr(ActivationStats, "add", watched)
    calibration = collect_calibration(program, [{"x": s["x"].numpy()} for s in samples])
    assert pending == [0] * len(pending) and len(pending) == 3 * len(samples)
    for stats, rows in zip(calibration.stats.values(), linear_inputs(model, samples), strict=True):
        assert_stats(stats, rows)


def test_gram_only_up_to_max_gram_channels() -> None:
    program = convert(MLP().eval(), {"x": torch.randn(5, 24)})
    calibration = collect_calibration(
        program, [{"x": np.ones((5, 24), np.float32)}], max_gram_channels=40
    )
    grams = [s.gram is not None for s in calibration.stats.values()]
    assert grams == [True, False, True]  # 24, 48 and 40 input channels


def test_save_and_load_round_trip(tmp_path: object) -> None:
    model = TinyTransformer().eval()
    ids = torch.randint(0, 64, (2, 8), dtype=torch.int32)
    program = convert(model, {"ids": ids})
    calibration = collect_calibration(program, [{"ids": ids.numpy()}])
    path = tmp_path / "calibration.npz"  # type: ignore[operator]
    calibration.save(path)
    loaded = Calibration.load(path)
    assert loaded.samples == 1 and loaded.missing == calibration.missing
    assert loaded.stats["@main/w1"] is loaded.stats["@main/w2"], "sharing survives"
    for key, stats in calibration.stats.items():
        assert loaded.stats[key].layout is stats.layout and loaded.stats[key].count == stats.count
        np.testing.assert_array_equal(loaded.stats[key].sq_sum, stats.sq_sum)
        np.testing.assert_array_equal(loaded.stats[key].gram, stats.gram)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "error", "match"),
    [
        ([], ValueError, "samples is empty"),
        (
            [{"y": np.zeros((5, 24), np.float32)}],
            ValueError,
            "missing input 'x'.*unknown input 'y'",
        ),
        ([{"x": np.zeros((5, 24), np.float64)}], ValueError, "input 'x' must have dtype float32"),
        (
            [{"x": np.zeros((4, 24), np.float32)}],
            ValueError,
            r"input 'x' must have shape \(5, 24\)",
        ),
        (
            [{"x": np.zeros((5, 24), np.float32)}, {"x": np.zeros(3, np.float32)}],
            ValueError,
            "sample 1",
        ),
        ([np.zeros((5, 24), np.float32)], TypeError, "sample 0 must be a dict"),
    ],
)
def test_bad_samples_raise_before_anything_runs(
    samples: list[object], error: type[Exception], match: str
) -> None:
    program = convert(MLP().eval(), {"x": torch.randn(5, 24)})
    with pytest.raises(error, match=match):
        collect_calibration(program, samples)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    program = convert(MLP().eval(), {"x": torch.randn(5, 24)})
    sample = [{"x": np.zeros((5, 24), np.float32)}]
    with pytest.raises(ValueError, match="function 'nope' not found"):
        collect_calibration(program, sample, function="nope")
    with pytest.raises(ValueError, match="max_gram_channels must be a non-negative int"):
        collect_calibration(program, sample, max_gram_channels=-1)
    with pytest.raises(TypeError, match="AIProgram"):
        collect_calibration("model.aimodel", sample)  # type: ignore[arg-type]


def test_load_rejects_files_that_are_not_calibrations(tmp_path: object) -> None:
    bad = tmp_path / "bad.npz"  # type: ignore[operator]
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a calibration file"):
        Calibration.load(bad)
    text = tmp_path / "text.npz"  # type: ignore[operator]
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a calibration file"):
        Calibration.load(text)


class Upsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


def test_transposed_conv_gets_per_channel_sums_only() -> None:
    model = Upsample().eval()
    samples = [{"x": torch.randn(2, 6, 5, 5)} for _ in range(2)]
    program = convert(model, samples[0])
    calibration = collect_calibration(program, [{"x": s["x"].numpy()} for s in samples])
    (stats,) = calibration.stats.values()
    assert stats.layout is StatsLayout.CHANNELS and stats.gram is None
    x = np.concatenate([s["x"].numpy() for s in samples]).astype(np.float64)
    np.testing.assert_allclose(stats.sq_sum[0], (x**2).sum((0, 2, 3)), rtol=1e-6)
    assert stats.count == 2 * 2 * 5 * 5
