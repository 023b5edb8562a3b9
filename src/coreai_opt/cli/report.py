"""The run report: one row per weight considered, totals, validation; as a table or JSON.

JSON schema (``version`` 3; keys are stable):

    {"version": 3, "command": "sparsify" | "quantize" | "palettize",
     "input": str, "output": str,
     "options": {"target_sparsity", "n_m_ratio", "block_size", "quantize_dtype",
                 "palettize_nbits", "weight_num_threshold", "algorithm",
                 "exclude": [pattern], "overrides": null | {pattern: {option: value} | null}},
     "calibration": null | {"file": str, "function": str, "samples": int,
                            "padding_mask": str | null},
     "weights": [{"name", "id", "path", "source", "shape", "dtype", "consumers", "kind",
                  "mode", "joint", "algorithm", "reason", "sparsity", "bytes_before",
                  "bytes_after"}],
     "totals": {"weights_considered", "weights_compressed", "weight_bytes_before",
                "weight_bytes_after", "asset_bytes_before", "asset_bytes_after", "ratio"},
     "validation": null | {"seed": int | null, "inputs": str | null,
                           "skipped": {function: reason},
                           "functions": {name: {output: {"snr_db", "cosine", "identical"}}}}}

``options.algorithm`` is the resolved algorithm (sparsify: magnitude, wanda, sparsegpt;
quantize: rtn, gptq; palettize: kmeans, weighted_kmeans, obs); a weight's ``algorithm`` is
the one actually used (null when left dense), with any fallback explained in its
``reason``. ``mode`` is null for weights left dense (``reason`` says why);
``snr_db`` is null when the outputs are identical (infinite SNR). ``validation.inputs`` is
the ``--validate-with`` file (``seed`` is then null), or null for seeded random inputs.
A weight's ``path`` is its readable name (the module call stack recorded by coreai-torch,
else its id) and ``source`` the model's own ``file.py:line`` (null when not recorded).
For quantize and palettize, ``options`` are that pass's arguments (with ``algorithm``,
``exclude`` and ``overrides``), a weight's ``mode`` is the granularity used, ``joint`` its
storage (``int4``, ``palettize4``...) and ``sparsity`` is null. Version 2 added
``command``, ``calibration``, ``options.algorithm``/``exclude``/``overrides``, the weights'
``id``, ``path``, ``source`` and ``algorithm``, and ``validation.inputs``; version 3
``calibration.padding_mask``, and calibration, ``algorithm``, ``exclude`` and ``overrides``
for quantize and palettize (a weight's ``algorithm`` is no longer null there).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coreai_opt.coreai_utils import WeightOutcome
from coreai_opt.coreai_utils.calibration import Calibration
from coreai_opt.coreai_utils.passes.plan import WeightPlan, expected_bytes
from coreai_opt.coreai_utils.passes.runner import Decision
from coreai_opt.coreai_utils.validation import OutputComparison

__all__ = [
    "build_report",
    "calibration_json",
    "print_decisions",
    "print_plan",
    "print_report",
    "size_text",
    "weight_label",
    "weights_table",
    "write_json",
]

REPORT_VERSION = 3


def build_report(
    *,
    source: str,
    output: str,
    options: dict[str, Any],
    weights: tuple[WeightOutcome, ...],
    asset_bytes_before: int,
    asset_bytes_after: int,
    validation: dict[str, list[OutputComparison]] | None,
    skipped: dict[str, str],
    seed: int | None,
    command: str = "sparsify",
    validation_inputs: str | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    rows = [{**asdict(w), "shape": list(w.shape), "consumers": list(w.consumers)} for w in weights]
    compressed = [w for w in weights if w.mode is not None]
    return {
        "version": REPORT_VERSION,
        "command": command,
        "input": source,
        "output": output,
        "options": json.loads(json.dumps(options, default=str)),
        "calibration": calibration,
        "weights": rows,
        "totals": {
            "weights_considered": len(weights),
            "weights_compressed": len(compressed),
            "weight_bytes_before": sum(w.bytes_before for w in weights),
            "weight_bytes_after": sum(w.bytes_after for w in weights),
            "asset_bytes_before": asset_bytes_before,
            "asset_bytes_after": asset_bytes_after,
            "ratio": asset_bytes_before / asset_bytes_after if asset_bytes_after else None,
        },
        "validation": None
        if validation is None
        else {
            "seed": seed,
            "inputs": validation_inputs,
            "skipped": dict(skipped),
            "functions": {
                function: {
                    c.name: {
                        "snr_db": None if math.isinf(c.snr_db) else c.snr_db,
                        "cosine": c.cosine,
                        "identical": c.identical,
                    }
                    for c in comparisons
                }
                for function, comparisons in validation.items()
            },
        },
    }


def calibration_json(path: Path | None, calibration: Calibration | None) -> dict[str, Any] | None:
    """The report's ``calibration`` section (null without one)."""
    if calibration is None:
        return None
    return {
        "file": str(path),
        "function": calibration.function,
        "samples": calibration.samples,
        "padding_mask": calibration.padding_mask,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report atomically (temporary file beside it, then rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def size_text(count: int) -> str:
    """``count`` bytes in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


_RIGHT = {"shape", "sparsity", "bytes", "bytes (expected)", "est. error"}


def weights_table(title: str, columns: tuple[str, ...]) -> Table:
    """A table with a "weight" column (long paths fold) followed by ``columns``."""
    table = Table(title=title)
    table.add_column("weight", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right" if column in _RIGHT else "left")
    return table


def weight_label(path: str, weight_id: str, name: str, source: str | None) -> str:
    """The readable path with its id and source dimmed; the plain name without a path."""
    if path == weight_id:
        return escape(name)
    extra = ", ".join(x for x in (weight_id, source) if x)
    return f"{escape(path)} [dim]({escape(extra)})[/dim]"


def _planned(mode: str, rule: str | None, reason: str | None) -> str:
    """A --plan mode cell: the mode, the override that set it, the note or fallback."""
    if rule:
        mode += f" [dim](override {escape(rule)})[/dim]"
    if reason:
        mode += f" [yellow]({escape(reason)})[/yellow]"
    return mode


def print_plan(plans: tuple[WeightPlan, ...], console: Console, *, calibrated: bool) -> None:
    """The --plan table: what would happen to each weight, and the expected sizes."""
    table = weights_table(
        "coreai-sparsify --plan (dry run: nothing read or written)",
        ("shape", "kind", "mode", "joint", "bytes (expected)"),
    )
    before = after = 0
    for plan in plans:
        site, options = plan.site, plan.options
        size = site.nbytes
        expected = expected_bytes(plan)
        before, after = before + size, after + expected
        if plan.mode is None:
            mode = f"[dim]dense: {escape(plan.reason or '')}[/dim]"
            joint = "-"
        else:
            pattern = plan.mode.value
            if options is not None and options.n_m_ratio is not None:
                pattern = f"{options.n_m_ratio[0]}:{options.n_m_ratio[1]}"
            elif options is not None and options.target_sparsity is not None:
                pattern += f" {options.target_sparsity:g}"
            mode = _planned(f"{plan.algorithm.value} {pattern}", plan.rule, plan.reason)
            joint = "-"
            if options is not None and options.quantize_dtype is not None:
                joint = str(options.quantize_dtype)
            elif options is not None and options.palettize_nbits is not None:
                joint = f"palettize{options.palettize_nbits}"
        table.add_row(
            weight_label(site.path, site.id, site.name, site.source),
            "x".join(map(str, site.shape)),
            site.kind.value,
            mode,
            joint,
            f"{size_text(size)} -> {size_text(expected)}",
        )
    compressed = sum(1 for p in plans if p.mode is not None)
    _plan_footer(console, table, (len(plans), compressed), (before, after, "about "), calibrated)


def _plan_footer(
    console: Console,
    table: Table,
    counts: tuple[int, int],
    sizes: tuple[int, int, str],
    calibrated: bool,  # noqa: FBT001
) -> None:
    """The --plan table, then the counts (considered, to compress), the sizes (before,
    after, how exact) and the calibration note."""
    console.print(table)
    before, after, how = sizes
    console.print(
        f"weights: {counts[0]} considered, {counts[1]} to compress; "
        f"weight data {size_text(before)} -> {how}{size_text(after)}"
    )
    if calibrated:
        console.print(
            "calibration is not run by --plan: algorithms assume every capturable weight gets "
            "statistics"
        )


def print_decisions(
    decisions: tuple[Decision, ...],
    console: Console,
    command: str,
    expected: Callable[[Decision], int],
    *,
    calibrated: bool,
) -> None:
    """The --plan table of ``coreai-compress quantize|palettize``: each weight's granularity,
    algorithm, storage and expected bytes."""
    table = weights_table(
        f"coreai-compress {command} --plan (dry run: nothing read or written)",
        ("shape", "kind", "mode", "storage", "bytes (expected)"),
    )
    before = after = 0
    for decision in decisions:
        site, options = decision.site, decision.options
        size = site.nbytes
        stored = expected(decision)
        before, after = before + size, after + stored
        if decision.mode is None:
            mode = f"[dim]dense: {escape(decision.reason or '')}[/dim]"
            storage = "-"
        else:
            mode = _planned(f"{decision.algorithm} {decision.mode}", decision.rule, decision.reason)
            storage = str(options.dtype) if command == "quantize" else f"palettize{options.n_bits}"
        table.add_row(
            weight_label(site.path, site.id, site.name, site.source),
            "x".join(map(str, site.shape)),
            site.kind.value,
            mode,
            storage,
            f"{size_text(size)} -> {size_text(stored)}",
        )
    compressed = sum(1 for d in decisions if d.mode is not None)
    _plan_footer(console, table, (len(decisions), compressed), (before, after, ""), calibrated)


def print_report(report: dict[str, Any], console: Console) -> None:
    """Render the summary table, totals and validation results."""
    command = report["command"]
    title = "coreai-sparsify" if command == "sparsify" else f"coreai-compress {command}"
    table = weights_table(title, ("shape", "dtype", "consumers", "mode", "sparsity", "bytes"))
    for row in report["weights"]:
        weight = weight_label(row["path"], row["id"], row["name"], row["source"])
        consumers = ", ".join(
            c.removeprefix("coreai.").removeprefix("decomposable.") for c in row["consumers"]
        )
        if row["mode"] is None:
            mode = f"[dim]dense: {escape(row['reason'] or '')}[/dim]"
        else:
            mode = f"{row['algorithm']} {row['mode']}" if row["algorithm"] else row["mode"]
            mode += f" + {row['joint']}" if row["joint"] else ""
            if row["reason"]:
                mode += f" [yellow]({escape(row['reason'])})[/yellow]"
        sparsity = "-" if row["sparsity"] is None else f"{row['sparsity']:.3f}"
        size = f"{size_text(row['bytes_before'])} -> {size_text(row['bytes_after'])}"
        table.add_row(
            weight,
            "x".join(map(str, row["shape"])),
            row["dtype"],
            consumers,
            mode,
            sparsity,
            size,
        )
    console.print(table)
    totals = report["totals"]
    ratio = totals["ratio"]
    before, after = (
        size_text(totals["weight_bytes_before"]),
        size_text(totals["weight_bytes_after"]),
    )
    console.print(
        f"weights: {totals['weights_considered']} considered, "
        f"{totals['weights_compressed']} compressed; weight data {before} -> {after}"
    )
    console.print(
        f"asset: {size_text(totals['asset_bytes_before'])} -> "
        f"{size_text(totals['asset_bytes_after'])}" + (f" ({ratio:.2f}x smaller)" if ratio else "")
    )
    validation = report["validation"]
    if validation is not None:
        source = (
            f"inputs from {validation['inputs']}"
            if validation["inputs"]
            else f"seeded random inputs, seed {validation['seed']}"
        )
        check = Table(title=f"validation ({source})")
        for column in ("function", "output", "SNR (dB)", "cosine"):
            check.add_column(
                column, justify="left" if column in ("function", "output") else "right"
            )
        for function, outputs in validation["functions"].items():
            for name, result in outputs.items():
                snr = "inf (identical)" if result["snr_db"] is None else f"{result['snr_db']:.2f}"
                check.add_row(function, name, snr, f"{result['cosine']:.6f}")
        console.print(check)
