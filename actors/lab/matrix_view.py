"""Printing a matrix directory: each case's report, then the verdicts of every case and column.

``emu run MATRIX``, ``emu kernel-run MATRIX`` and ``emu report DIR`` print a
matrix through ``print_matrix``; ``--format json`` prints one JSON document
(``{"matrix", "cases": {case: report}, "verdicts"}``) instead.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from actors.lab.matrix import MatrixDirectory, verdict_rule, verdicts
from actors.lab.realkernel.stacks_view import print_stacks
from actors.lab.report import FEW_SAMPLES, Report, build_report, print_report, report_json
from actors.lab.rundir import RunDirectory
from emu import format_ns


def _p99(p99_ns: int | None, count: int) -> str:
    if p99_ns is None:
        return "-"
    return f"{format_ns(p99_ns)}{'*' if count < FEW_SAMPLES else ''} ({count})"


def verdict_table(loaded: MatrixDirectory) -> Table:
    """One row per case and column: the op's p99 (samples), the verdict and what it was compared with."""
    header = loaded.header
    table = Table(title=f"{header['experiment']}: {verdict_rule(header)}", title_justify="left", box=box.SIMPLE_HEAD)
    columns = [("case", "left"), ("run", "left"), (f"{header['op']}\np99 (samples)", "right")]
    if header.get("baseline"):
        columns.append(("x baseline\np99", "right"))
    for name, justify in [*columns, ("verdict", "left")]:
        table.add_column(name, justify=justify, overflow="fold")
    for row in verdicts(loaded):
        shown = "(baseline)" if row.case == header.get("baseline") else row.verdict.verdict
        ratio = [] if not header.get("baseline") else ["-" if row.ratio is None else f"{row.ratio:,.1f}x"]
        table.add_row(row.case, row.column, _p99(row.verdict.p99_ns, row.count), *ratio, shown)
    return table


def print_matrix(loaded: MatrixDirectory, fmt: str, answer_of: Callable[[RunDirectory], list[str]], *, console: Console | None = None) -> None:
    """Every case's report (``fmt`` as ``emu report``'s), then the verdict table."""
    console = console or Console(highlight=False)
    reports: dict[str, Report] = {name: build_report(run_dir.document, answer=answer_of(run_dir)) for name, run_dir in loaded.cases.items()}
    if fmt == "json":
        document = {
            "matrix": loaded.header,
            "cases": {name: report_json(report) for name, report in reports.items()},
            "verdicts": [{"case": v.case, "column": v.column, "count": v.count, "verdict": v.verdict.verdict, "p99_ns": v.verdict.p99_ns, "reference": v.verdict.reference} for v in verdicts(loaded)],
        }  # fmt: skip
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    for name, report in reports.items():
        if fmt == "markdown":
            print(f"\n### case {name}\n")
        else:
            console.rule(f"case {name}", align="left")
        print_report(report, fmt, console=console if fmt != "wide" else None)
        print_stacks(loaded.cases[name].document["runs"], fmt, console=console)
    console.print(verdict_table(loaded))
