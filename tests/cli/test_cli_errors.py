"""Every user error: one clear line on stderr, non-zero exit, no traceback, no output left."""

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli, snapshot


def assert_clean_failure(
    run: object, message: str, directory: Path, before: set[str] | None = None
) -> None:
    code, err = run.code, run.err  # type: ignore[attr-defined]
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("coreai-sparsify: error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    remaining = {p.name for p in directory.iterdir()}
    assert remaining == (before or set()), f"left behind: {remaining}"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target-sparsity", "0.5", "--n-m", "2:4"], "not allowed with argument"),
        (["--quantize-dtype", "int8", "--palettize-nbits", "4"], "not allowed with argument"),
        (["--target-sparsity", "1.5"], "--target-sparsity must be in [0, 1], got 1.5"),
        (["--target-sparsity", "nan"], "--target-sparsity must be in [0, 1]"),
        (["--target-sparsity", "half"], "invalid float value: 'half'"),
        (["--n-m", "5:4"], "--n-m needs n in [0, m], got (5, 4)"),
        (["--n-m", "2:0"], "--n-m needs m > 0"),
        (["--n-m", "24"], "--n-m takes N:M"),
        (["--block-size", "1"], "--block-size must be greater than 1, got 1"),
        (
            ["--block-size", "4", "--n-m", "2:4"],
            "--block-size (4) prunes to --target-sparsity and cannot be combined with --n-m",
        ),
        (["--palettize-nbits", "5"], "invalid choice: 5"),
        (["--quantize-dtype", "int4"], "invalid choice: 'int4'"),
        (["--weight-num-threshold", "-1"], "--weight-num-threshold must be non-negative"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_options(source_asset: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    before = snapshot(source_asset)
    run = run_cli(source_asset, "-o", tmp_path / "out.aimodel", *flags)
    assert_clean_failure(run, message, tmp_path)
    assert snapshot(source_asset) == before


def test_missing_input(tmp_path: Path) -> None:
    run = run_cli(tmp_path / "nope.aimodel", "-o", tmp_path / "out.aimodel")
    assert_clean_failure(run, "input does not exist", tmp_path)


def test_input_is_a_plain_file(tmp_path: Path) -> None:
    bogus = tmp_path / "model.aimodel"
    bogus.write_text("not a model")
    run = run_cli(bogus, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(run, "input is not a valid .aimodel asset", tmp_path, {"model.aimodel"})


def test_directory_that_is_not_an_asset(tmp_path: Path) -> None:
    bogus = tmp_path / "empty.aimodel"
    bogus.mkdir()
    (bogus / "junk.txt").write_text("x")
    run = run_cli(bogus, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(run, "input is not a valid .aimodel asset", tmp_path, {"empty.aimodel"})


def test_corrupt_asset(source_asset: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken.aimodel"
    shutil.copytree(source_asset, broken)
    for mlirb in broken.rglob("*.mlirb"):
        mlirb.write_bytes(b"garbage")
    run = run_cli(broken, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(
        run,
        "input is corrupt (main.mlirb does not match its recorded hash)",
        tmp_path,
        {"broken.aimodel"},
    )


def test_corrupt_bytecode_with_matching_hash(source_asset: Path, tmp_path: Path) -> None:
    """Garbage whose hash was rewritten too: the framing check still refuses it."""
    import hashlib
    import shutil

    broken = tmp_path / "broken.aimodel"
    shutil.copytree(source_asset, broken)
    (broken / "main.mlirb").write_bytes(b"garbage")
    (broken / "main.hash").write_bytes(hashlib.sha256(b"garbage").digest())
    run = run_cli(broken, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(
        run, "input is corrupt (main.mlirb: not MLIR bytecode", tmp_path, {"broken.aimodel"}
    )


def test_truncated_bytecode(source_asset: Path, tmp_path: Path) -> None:
    import hashlib
    import shutil

    broken = tmp_path / "broken.aimodel"
    shutil.copytree(source_asset, broken)
    data = (broken / "main.mlirb").read_bytes()[:-100]
    (broken / "main.mlirb").write_bytes(data)
    (broken / "main.hash").write_bytes(hashlib.sha256(data).digest())
    run = run_cli(broken, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(
        run, "input is corrupt (main.mlirb: truncated bytecode)", tmp_path, {"broken.aimodel"}
    )


def test_output_equal_to_input(source_asset: Path) -> None:
    before = snapshot(source_asset)
    run = run_cli(source_asset, "-o", source_asset, "--force")
    assert run.code == 2 and "output is the input" in run.err and "Traceback" not in run.err
    assert snapshot(source_asset) == before


def test_output_inside_input(source_asset: Path) -> None:
    before = snapshot(source_asset)
    run = run_cli(source_asset, "-o", source_asset / "inner.aimodel")
    assert run.code == 2 and "inside the input asset" in run.err
    assert snapshot(source_asset) == before


def test_output_exists_without_force(source_asset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.aimodel"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = run_cli(source_asset, "-o", out)
    assert_clean_failure(run, "output exists", tmp_path, {"out.aimodel"})
    assert (out / "keep.txt").read_text() == "mine"


def test_output_must_be_aimodel(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(source_asset, "-o", tmp_path / "out.bin")
    assert_clean_failure(run, "output must end in .aimodel", tmp_path)


def test_output_directory_missing(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(source_asset, "-o", tmp_path / "no" / "out.aimodel")
    assert_clean_failure(run, "output directory does not exist", tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "missing INPUT"), (["--demo", "x.aimodel"], "either INPUT or --demo")],
)
def test_input_or_demo(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_cli(*args, "-o", tmp_path / "out.aimodel")
    assert_clean_failure(run, message, tmp_path)


def test_missing_output_flag(source_asset: Path) -> None:
    run = run_cli(source_asset)
    assert run.code == 2 and "missing -o OUTPUT.aimodel" in run.err and "Traceback" not in run.err


def test_report_inside_the_input_asset(source_asset: Path, tmp_path: Path) -> None:
    before = snapshot(source_asset)
    run = run_cli(source_asset, "-o", tmp_path / "out.aimodel", "--report", source_asset / "r.json")
    assert_clean_failure(run, "would be written into the input asset", tmp_path)
    assert snapshot(source_asset) == before


def test_report_directory_missing(source_asset: Path, tmp_path: Path) -> None:
    run = run_cli(
        source_asset, "-o", tmp_path / "out.aimodel", "--report", tmp_path / "no" / "r.json"
    )
    assert_clean_failure(run, "report directory does not exist", tmp_path)
