"""The comparison report: one row per policy, as data, then as a table, markdown or JSON.

``emu run`` prints it after running; ``emu report DIR`` rebuilds it from a
finished run directory's ``results.json`` without running anything. Both go
through ``build_report(document)``, where *document* is the ``results.json``
document (``ExperimentResult.to_json()``), so the two always agree.

A row holds what a kernel engineer compares across variants:

=============================  ===================================================
column                         from ``results.json`` (DESIGN.md section 3)
=============================  ===================================================
``<task>/<op>`` p50, p99, max  ``latency``; every op except ``think``
fault retries, major faults    ``counters.fault_retries``, ``counters.major_faults``
held across IO count, total    ``counters.mmap_sem_held_across_io`` and ``_ns``
mmap_sem contended             ``mmap_sem.*.contended``, summed over processes
mmap_sem wait total, max, avg  ``perf lock contention``'s total/max/avg wait:
                               total summed over processes, max the largest,
                               avg = total / contended
invariant violations           ``invariants.violations``
=============================  ===================================================

Renderers: ``render_table`` (rich, for the terminal), ``render_markdown``
(a GitHub table) and ``report_json`` (the rows as data, times in ns).
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from rich.console import Console
from rich.table import Table

from emu import format_ns

#: The formats ``--format`` accepts.
FORMATS = ("table", "markdown", "json")
#: Ops left out of the report: time the workload spends on purpose.
UNREPORTED_OPS = ("think",)


@attrs.frozen(kw_only=True)
class OpLatency:
    """The reported percentiles of one ``<task>/<op>`` under one policy, in ns."""

    count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


@attrs.frozen(kw_only=True)
class PolicyRow:
    """One policy's row. ``latency`` maps every reported op; ``None`` if this policy never ran it."""

    policy: str
    latency: dict[str, OpLatency | None]
    fault_retries: int
    major_faults: int
    held_across_io: int
    held_across_io_ns: int
    contended: int
    wait_total_ns: int
    wait_max_ns: int
    wait_avg_ns: int
    invariant_violations: int


@attrs.frozen(kw_only=True)
class Report:
    """The comparison of one experiment's runs."""

    experiment: str
    seed: int | None
    tie_seed: int | None
    ops: list[str]
    rows: list[PolicyRow]

    @property
    def title(self) -> str:
        tie = "" if self.tie_seed is None else f", tie seed {self.tie_seed}"
        return f"{self.experiment} (seed {self.seed}{tie})"


def reported_ops(runs: list[dict[str, Any]]) -> list[str]:
    """Every ``<task>/<op>`` of *runs* worth a column (all but think), in first-seen order."""
    keys = dict.fromkeys(k for run in runs for k in run["latency"])
    return [k for k in keys if k.rpartition("/")[2] not in UNREPORTED_OPS]


def build_report(document: dict[str, Any]) -> Report:
    """The report of a ``results.json`` *document*."""
    runs = document["runs"]
    ops = reported_ops(runs)
    rows = []
    for run in runs:
        latency: dict[str, OpLatency | None] = {}
        for key in ops:
            lat = run["latency"].get(key)
            latency[key] = None if lat is None else OpLatency(count=lat["count"], p50_ns=lat["p50_ns"], p99_ns=lat["p99_ns"], max_ns=lat["max_ns"])
        counters = run["counters"]
        sems = list(run["mmap_sem"].values())
        contended = sum(s["contended"] for s in sems)
        wait_total = sum(s["wait_total_ns"] for s in sems)
        rows.append(
            PolicyRow(
                policy=run["policy"],
                latency=latency,
                fault_retries=counters.get("fault_retries", 0),
                major_faults=counters.get("major_faults", 0),
                held_across_io=counters.get("mmap_sem_held_across_io", 0),
                held_across_io_ns=counters.get("mmap_sem_held_across_io_ns", 0),
                contended=contended,
                wait_total_ns=wait_total,
                wait_max_ns=max((s["wait_max_ns"] for s in sems), default=0),
                wait_avg_ns=wait_total // contended if contended else 0,
                invariant_violations=len(run.get("invariants", {}).get("violations", [])),
            )
        )
    first = runs[0] if runs else {}
    return Report(
        experiment=document.get("experiment", "?"),
        seed=first.get("seed"),
        tie_seed=first.get("tie_seed"),
        ops=ops,
        rows=rows,
    )


# -- renderers ---------------------------------------------------------------------

#: Headers of the columns after the latencies: (two-line header, row attribute, is a time).
_COLUMNS = (
    ("fault\nretries", "fault_retries", False),
    ("major\nfaults", "major_faults", False),
    ("held across IO\ncount", "held_across_io", False),
    ("held across IO\ntotal", "held_across_io_ns", True),
    ("mmap_sem\ncontended", "contended", False),
    ("mmap_sem\nwait total", "wait_total_ns", True),
    ("mmap_sem\nwait max", "wait_max_ns", True),
    ("mmap_sem\nwait avg", "wait_avg_ns", True),
    ("invariant\nviolations", "invariant_violations", False),
)
_STATS = ("p50", "p99", "max")


def _cells(report: Report, row: PolicyRow) -> list[str]:
    cells = []
    for key in report.ops:
        lat = row.latency[key]
        cells += ["-"] * 3 if lat is None else [format_ns(lat.p50_ns), format_ns(lat.p99_ns), format_ns(lat.max_ns)]
    for _header, name, is_time in _COLUMNS:
        value = getattr(row, name)
        cells.append(format_ns(value) if is_time else str(value))
    return cells


def _headers(report: Report) -> list[str]:
    return [f"{key}\n{stat}" for key in report.ops for stat in _STATS] + [header for header, _, _ in _COLUMNS]


def render_table(report: Report) -> Table:
    """A rich table: one row per policy, violations in red."""
    table = Table(title=report.title)
    table.add_column("policy", no_wrap=True)
    for header in _headers(report):
        table.add_column(header, justify="right")
    for row in report.rows:
        cells = _cells(report, row)
        if row.invariant_violations:
            cells[-1] = f"[red]{cells[-1]}[/red]"
        table.add_row(row.policy, *cells)
    return table


def render_markdown(report: Report) -> str:
    """A GitHub-flavoured markdown table under a heading, newline-terminated."""
    headers = ["policy", *(h.replace("\n", " ") for h in _headers(report))]
    lines = [f"### {report.title}", "", "| " + " | ".join(headers) + " |", "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|"]
    for row in report.rows:
        lines.append("| " + " | ".join([row.policy, *_cells(report, row)]) + " |")
    return "\n".join(lines) + "\n"


def report_json(report: Report) -> dict[str, Any]:
    """The report as data (times in ns), for ``--format json``."""
    return {
        "experiment": report.experiment,
        "seed": report.seed,
        "tie_seed": report.tie_seed,
        "ops": report.ops,
        "rows": [
            {
                "policy": row.policy,
                "latency": {k: None if v is None else attrs.asdict(v) for k, v in row.latency.items()},
                "fault_retries": row.fault_retries,
                "major_faults": row.major_faults,
                "mmap_sem_held_across_io": row.held_across_io,
                "mmap_sem_held_across_io_ns": row.held_across_io_ns,
                "mmap_sem": {
                    "contended": row.contended,
                    "wait_total_ns": row.wait_total_ns,
                    "wait_max_ns": row.wait_max_ns,
                    "wait_avg_ns": row.wait_avg_ns,
                },
                "invariant_violations": row.invariant_violations,
            }
            for row in report.rows
        ],
    }


def print_report(report: Report, fmt: str = "table", *, console: Console | None = None) -> None:
    """Print *report* on stdout in *fmt* (one of ``FORMATS``).

    A rich table is fitted to a terminal, or printed at its natural width
    into a file or pipe (so ``emu run ... > table.txt`` keeps every column).
    """
    if fmt == "json":
        print(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2).decode())
        return
    if fmt == "markdown":
        print(render_markdown(report), end="")
        return
    if fmt != "table":
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    table = render_table(report)
    stdout = console or Console(highlight=False)
    if console is None and not stdout.is_terminal:
        natural = Console(highlight=False, width=100_000).measure(table).maximum
        stdout = Console(highlight=False, width=max(80, natural))
    stdout.print(table)
