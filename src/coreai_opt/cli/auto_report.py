"""What ``coreai-compress auto`` prints and records: the allocation per weight and in total.

In the JSON report (the schema of ``report.py``, ``command`` ``"auto"``), ``options`` holds
``size`` (bytes asked for, or null), ``ratio`` (or null), ``candidates`` (their names, in
order), ``sensitivity``, ``weight_num_threshold`` and ``exclude``; each weight row adds
``choice`` (the candidate, or ``dense``), ``estimated_error`` (the sensitivity of that
choice), ``options`` (every option weighed: name -> ``[bytes, estimated error]``) and
``skipped`` (candidate -> why it was not offered); and ``allocation`` holds ``budget``,
``total_bytes``, ``dense_bytes``, ``smallest_bytes``, ``estimated_error``,
``sensitivity``, ``checked`` (the configurations the last check ran on the runtime, in
order: ``name``, ``total_bytes``, ``measured_error``; empty when there was no check) and
``kept`` (the one applied: ``plan``, ``uniform <candidate>``, or ``uniform <candidate>,
<n> weights a step down``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from coreai_opt.cli.report import size_text, weight_label, weights_table
from coreai_opt.coreai_utils.passes.auto.plan import SizePlan

__all__ = ["allocation_json", "check_line", "print_allocation", "with_choices"]


def allocation_json(plan: SizePlan) -> dict[str, Any]:
    """The report's ``allocation`` section."""
    return {
        "budget": plan.budget,
        "total_bytes": plan.total_bytes,
        "dense_bytes": plan.dense_bytes,
        "smallest_bytes": plan.smallest_bytes,
        "estimated_error": plan.total_error,
        "sensitivity": plan.sensitivity,
        "checked": [
            {"name": run.name, "total_bytes": run.total_bytes, "measured_error": run.error}
            for run in plan.checked
        ],
        "kept": plan.kept,
    }


def check_line(plan: SizePlan) -> str | None:
    """What the last check ran and kept, in one line (None when there was no check)."""
    if not plan.checked:
        return None
    runs = ", ".join(f"{escape(run.name)} {run.error:.4g}" for run in plan.checked)
    return f"checked on the runtime (output error): {runs}; kept {escape(plan.kept)}"


def with_choices(rows: list[dict[str, Any]], plan: SizePlan) -> list[dict[str, Any]]:
    """The report's weight rows with each weight's choice, error, options and skips."""
    by_id = {choice.site.id: choice for choice in plan.weights}
    merged = []
    for row in rows:
        choice = by_id[row["id"]]
        merged.append(
            {
                **row,
                "choice": choice.choice,
                "estimated_error": choice.error,
                "options": {name: [size, error] for name, size, error in choice.weighed},
                "skipped": dict(choice.skipped),
            }
        )
    return merged


def print_allocation(plan: SizePlan, console: Console, *, title: str) -> None:
    """One row per weight: the choice, its bytes and estimated error; then the totals."""
    table = weights_table(title, ("shape", "kind", "choice", "bytes", "est. error"))
    for row in plan.weights:
        site = row.site
        if row.fixed is not None:
            choice = f"[dim]dense: {escape(row.fixed)}[/dim]"
        else:
            choice = escape(row.choice)
            decision = row.option.decision
            if decision is not None and decision.reason:
                choice += f" [yellow]({escape(decision.reason)})[/yellow]"
        table.add_row(
            weight_label(site.path, site.id, site.name, site.source),
            "x".join(map(str, site.shape)),
            site.kind.value,
            choice,
            f"{size_text(row.bytes_before)} -> {size_text(row.bytes)}",
            f"{row.error:.3g}",
        )
    console.print(table)
    counts: dict[str, int] = {}
    for row in plan.weights:
        counts[row.choice] = counts.get(row.choice, 0) + 1
    mix = ", ".join(f"{name} x{count}" for name, count in counts.items())
    console.print(
        f"weight data {size_text(plan.dense_bytes)} -> {size_text(plan.total_bytes)} "
        f"({plan.total_bytes} bytes; budget {plan.budget}, smallest possible "
        f"{plan.smallest_bytes}); {plan.dense_bytes / plan.total_bytes:.2f}x smaller"
    )
    console.print(f"chosen: {mix}; estimated error {plan.total_error:.4g} ({plan.sensitivity})")
    line = check_line(plan)
    if line is not None:
        console.print(line)
