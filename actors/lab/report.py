"""The comparison report: as data, then for a terminal, as a wide table, markdown or JSON.

``emu run`` prints it after running; ``emu report DIR`` rebuilds it from a
finished run directory's ``results.json`` without running anything. Both go
through ``build_report(document)``, where *document* is the ``results.json``
document (``ExperimentResult.to_json()``), so the two always agree.

A row holds what a kernel engineer compares across variants:

=============================  ===================================================
column                         from ``results.json`` (docs/DESIGN.md)
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

plus every other counter any run has (``counters``, zero where a run has
none: a counter that stayed 0 is an answer too), and the figures the config
names as its answer (``[report] answer``, ``answer_figures``).

Renderers: ``render_panels`` (the terminal's default, ``--format table``:
policies as columns, one panel per kind of figure, so it fits 80 columns
with up to four policies), ``render_table`` (``--format wide``: one row per
policy, every figure a column), ``render_markdown`` (a GitHub table) and
``report_json`` (the rows as data, times in ns). Every latency shows its
sample count, and a percentile over fewer than ``FEW_SAMPLES`` samples is
marked ``*``: with 14 samples a "p99" is simply the largest one.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from rich.console import Console
from rich.table import Table

from actors.lab.figures import RATE_STAT, figure_value, is_latency
from emu import format_ns

#: The formats ``--format`` accepts.
FORMATS = ("table", "wide", "markdown", "json")
#: Below this many samples a percentile is marked (``*``): it is only the largest few values.
FEW_SAMPLES = 100
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
    #: Every counter of the report's ``counters`` list, 0 where this run has none.
    counters: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Answer:
    """One figure the config names as its answer, per policy (``None``: this run has no such figure)."""

    figure: str
    values: dict[str, int | float | None]
    #: Sample counts behind a latency figure, per policy (empty for counters).
    counts: dict[str, int] = attrs.field(factory=dict)
    #: How to show a value: "ns", "count" or "rate" (per virtual second).
    unit: str = "count"


@attrs.frozen(kw_only=True)
class Report:
    """The comparison of one experiment's runs."""

    experiment: str
    seed: int | None
    tie_seed: int | None
    ops: list[str]
    rows: list[PolicyRow]
    #: Counters shown beyond the row's named ones: every counter any run has.
    counters: list[str] = attrs.field(factory=list)
    answer: list[Answer] = attrs.field(factory=list)
    #: Per-cgroup memory figures (results.json ``memcg``): label, one value per run, whether a time.
    memory: list[tuple[str, list[int], bool]] = attrs.field(factory=list)

    @property
    def title(self) -> str:
        tie = "" if self.tie_seed is None else f", tie seed {self.tie_seed}"
        return f"{self.experiment} (seed {self.seed}{tie})"


def reported_ops(runs: list[dict[str, Any]]) -> list[str]:
    """Every ``<task>/<op>`` of *runs* worth a column (all but think), in first-seen order."""
    keys = dict.fromkeys(k for run in runs for k in run["latency"])
    return [k for k in keys if k.rpartition("/")[2] not in UNREPORTED_OPS]


#: Counters the row's named fields already show.
_NAMED_COUNTERS = ("fault_retries", "major_faults", "mmap_sem_held_across_io", "mmap_sem_held_across_io_ns")
def answer_figures(runs: list[dict[str, Any]], figures: list[str]) -> list[Answer]:
    """The value of each answer *figure* (``actors.lab.figures``) in each run.

    A counter a run never counted is 0; a latency figure carries its sample counts.
    """
    answers = []
    for figure in figures:
        values: dict[str, int | float | None] = {}
        counts: dict[str, int] = {}
        for run in runs:
            value = figure_value(run, figure)
            if value is None and figure.startswith("counters."):
                value = 0
            values[run["policy"]] = value
            if is_latency(figure) and (lat := run["latency"].get(figure.rpartition(".")[0])) is not None:
                counts[run["policy"]] = lat["count"]
        unit = "rate" if figure.endswith(f".{RATE_STAT}") else "ns" if figure.endswith("_ns") else "count"
        answers.append(Answer(figure=figure, values=values, counts=counts if unit == "ns" else {}, unit=unit))
    return answers


def build_report(document: dict[str, Any], *, answer: list[str] = ()) -> Report:
    """The report of a ``results.json`` *document*; *answer* lists the config's answer figures."""
    runs = document["runs"]
    ops = reported_ops(runs)
    names = [name for name in dict.fromkeys(k for run in runs for k in run["counters"]) if name not in _NAMED_COUNTERS]
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
                counters={name: counters.get(name, 0) for name in names},
            )
        )
    first = runs[0] if runs else {}
    return Report(
        experiment=document.get("experiment", "?"),
        seed=first.get("seed"),
        tie_seed=first.get("tie_seed"),
        ops=ops,
        rows=rows,
        counters=names,
        answer=answer_figures(runs, list(answer)),
        memory=memory_rows(runs),
    )


#: The per-cgroup figures the memory panel shows: results.json ``memcg`` key, label, whether a time.
_MEMORY_FIGURES = (
    ("psi_some_ns", "memory pressure some", True),
    ("psi_full_ns", "memory pressure full", True),
    ("watermark_pages", "peak usage (pages)", False),
    ("oom_kill", "OOM kills", False),
)


def memory_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[int], bool]]:
    """The memory panel's rows: each cgroup with a memory limit, in first-seen order."""
    paths = dict.fromkeys(path for run in runs for path in run.get("memcg", {}))
    rows = []
    for path in paths:
        groups = [run.get("memcg", {}).get(path, {}) for run in runs]
        if not any(g.get("max_pages") is not None or g.get("high_pages") is not None for g in groups):
            continue
        for key, label, is_time in _MEMORY_FIGURES:
            rows.append((f"{path} {label}", [g.get(key, 0) for g in groups], is_time))
    return rows


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
_STATS = ("n", "p50", "p99", "max")


def _cells(report: Report, row: PolicyRow) -> list[str]:
    cells = []
    for key in report.ops:
        lat = row.latency[key]
        cells += ["-"] * 4 if lat is None else [f"{lat.count:,}", _latency_cell(lat, "p50_ns"), _latency_cell(lat, "p99_ns"), _latency_cell(lat, "max_ns")]
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


def _latency_cell(lat: OpLatency | None, attr: str) -> str:
    if lat is None:
        return "-"
    text = format_ns(getattr(lat, attr))
    return f"{text}*" if attr != "max_ns" and lat.count < FEW_SAMPLES else text


def _answer_cell(answer: Answer, policy: str) -> str:
    value = answer.values.get(policy)
    if value is None:
        return "-"
    if answer.unit == "rate":
        return f"{value:,.1f}/s"
    if answer.unit == "count":
        return f"{value:,}" if isinstance(value, int) else str(value)
    count = answer.counts.get(policy)
    few = "*" if count is not None and count < FEW_SAMPLES and answer.figure.rpartition(".")[2].startswith("p") else ""
    return f"{format_ns(int(value))}{few}" + ("" if count is None else f" n={count:,}")


def render_panels(report: Report) -> list[Table]:
    """The terminal's layout: policies as columns; panels for the answer, latencies, mmap_sem and counters.

    The counters panel lists every counter any run has, 0 where a run never counted it.
    """
    policies = [row.policy for row in report.rows]

    def panel(title: str) -> Table:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("", overflow="fold", ratio=None)
        for policy in policies:
            table.add_column(policy, justify="right", no_wrap=True)
        return table

    tables = []
    if report.answer:
        answer = panel("the answer (the figures the config names)")
        for item in report.answer:
            answer.add_row(item.figure, *(_answer_cell(item, p) for p in policies))
        tables.append(answer)
    if report.ops:
        latency = panel("latency per op (* over fewer than 100 samples)")
        for key in report.ops:
            lats = [row.latency[key] for row in report.rows]
            latency.add_row(f"[bold]{key}[/bold] samples", *("-" if lat is None else f"{lat.count:,}" for lat in lats))
            for stat, attr in (("p50", "p50_ns"), ("p99", "p99_ns"), ("max", "max_ns")):
                latency.add_row(f"  {stat}", *(_latency_cell(lat, attr) for lat in lats), end_section=stat == "max")
        tables.append(latency)
    locks = panel("mmap_sem and faults")
    for header, name, is_time in _COLUMNS:
        values = [getattr(row, name) for row in report.rows]
        cells = [format_ns(v) if is_time else f"{v:,}" for v in values]
        if name == "invariant_violations":
            cells = [f"[red]{c}[/red]" if v else c for c, v in zip(cells, values, strict=True)]
        locks.add_row(header.replace("\n", " "), *cells)
    tables.append(locks)
    if report.memory:
        memory = panel("memory per cgroup (memory.pressure total=, memory.events)")
        for label, values, is_time in report.memory:
            memory.add_row(label, *(format_ns(v) if is_time else f"{v:,}" for v in values))
        tables.append(memory)
    if report.counters:
        counters = panel("counters")
        for name in report.counters:
            counters.add_row(name, *(_count_cell(name, row.counters[name]) for row in report.rows))
        tables.append(counters)
    return tables


def _count_cell(name: str, value: int) -> str:
    return format_ns(value) if name.endswith("_ns") else f"{value:,}"


def render_markdown(report: Report) -> str:
    """A GitHub-flavoured markdown table under a heading, newline-terminated."""
    headers = ["policy", *(h.replace("\n", " ") for h in _headers(report))]
    lines = [f"### {report.title}", "", "| " + " | ".join(headers) + " |", "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|"]
    for row in report.rows:
        lines.append("| " + " | ".join([row.policy, *_cells(report, row)]) + " |")
    if report.answer:
        policies = [row.policy for row in report.rows]
        lines += ["", "| answer | " + " | ".join(policies) + " |", "|---|" + "---:|" * len(policies)]
        lines += ["| " + " | ".join([a.figure, *(_answer_cell(a, p) for p in policies)]) + " |" for a in report.answer]
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
                "counters": row.counters,
            }
            for row in report.rows
        ],
        "answer": [attrs.asdict(answer) for answer in report.answer],
    }


def print_report(report: Report, fmt: str = "table", *, console: Console | None = None) -> None:
    """Print *report* on stdout in *fmt* (one of ``FORMATS``).

    ``table`` prints the panels at the terminal's width (80 columns into a
    file or pipe); ``wide`` prints one row per policy, fitted to a terminal
    or at its natural width into a file or pipe (so ``emu run --format wide
    ... > table.txt`` keeps every column).
    """
    if fmt == "json":
        print(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2).decode())
        return
    if fmt == "markdown":
        print(render_markdown(report), end="")
        return
    if fmt not in ("table", "wide"):
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    stdout = console or Console(highlight=False)
    if fmt == "table":
        stdout.print(f"[bold]{report.title}[/bold]")
        for table in render_panels(report):
            stdout.print(table)
            stdout.print()
        return
    table = render_table(report)
    if console is None and not stdout.is_terminal:
        natural = Console(highlight=False, width=100_000).measure(table).maximum
        stdout = Console(highlight=False, width=max(80, natural))
    stdout.print(table)
