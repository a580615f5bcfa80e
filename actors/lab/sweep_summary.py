"""A sweep's merged table and the conclusions it supports, point by point.

``emu sweep`` prints both after merging (``actors.lab.sweep``) and writes
them to ``DIR/summary.md``:

* the table: one row per (point, policy), the swept values that vary, then
  each metric's median over the seeds (the plotted metric also its min-max);
  every latency op's sample count ``n`` (the fewest over the seeds), and a
  ``*`` on a percentile taken over fewer than 100 samples, as ``emu run``'s
  table marks them;
* the conclusions: the sweep file's ``[[conclusions]]``, each checked at
  every point for every seed (the seeds are shared by every policy, so a
  comparison pairs runs of the same seed), and the part of the parameter
  range where it holds: everywhere, nowhere, exactly where some keys take
  some values, or at a list of points.

A conclusion is one of::

    [[conclusions]]                     # v5.1's p99 < 200 us
    claim = "below"                     # or "above"
    policy = "v5.1"
    metric = "monitor/proc_read.p99_ns" # one of the sweep's metrics
    value = "200us"                     # a duration for *_ns metrics, else a number

    [[conclusions]]                     # v4.19's p99 >= 10 x v5.1's, seed by seed
    claim = "ratio"
    policy = "v4.19"
    over = "v5.1"
    factor = 10
    metric = "monitor/proc_read.p99_ns"

    [[conclusions]]                     # v5.1 <= v3 <= v4.19, seed by seed
    claim = "between"
    policy = "v3"
    low = "v5.1"
    high = "v4.19"
    metric = "monitor/proc_read.p99_ns"

A run without the metric (no samples) makes the conclusion fail at that point.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from rich.table import Table
from rich.text import Text

from actors.lab.figures import LATENCY_STATS, RATE_STAT, is_latency
from emu import format_ns, parse_duration

if TYPE_CHECKING:
    from actors.lab.sweep_spec import Sweep

#: ``[[conclusions]]`` claims and the keys each takes beside ``claim``.
CLAIMS: dict[str, tuple[str, ...]] = {
    "below": ("policy", "metric", "value"),
    "above": ("policy", "metric", "value"),
    "ratio": ("policy", "over", "factor", "metric"),
    "between": ("policy", "low", "high", "metric"),
}
#: Percentile statistics: marked ``*`` when taken over fewer than ``FEW_SAMPLES``.
PERCENTILES = ("p50_ns", "p90_ns", "p99_ns", "p999_ns")
FEW_SAMPLES = 100
#: Points listed one by one when a conclusion's range is no box of values.
MAX_LISTED = 8


@attrs.frozen(kw_only=True)
class Conclusion:
    """One ``[[conclusions]]`` entry."""

    claim: str
    policy: str
    metric: str
    value: float | None = None
    over: str | None = None
    factor: float | None = None
    low: str | None = None
    high: str | None = None

    def describe(self) -> str:
        """The claim in words: ``v5.1 monitor/proc_read.p99_ns < 200 us``."""
        what = f"{self.policy} {self.metric}"
        if self.claim in ("below", "above"):
            return f"{what} {'<' if self.claim == 'below' else '>'} {_show(self.metric, self.value)}"
        if self.claim == "ratio":
            return f"{what} >= {self.factor:g} x {self.over}'s"
        return f"{what} between {self.low}'s and {self.high}'s"

    def holds(self, by_policy: dict[str, dict[int, Any]]) -> bool:
        """Whether the claim holds for every seed of one point (*by_policy*: policy -> seed -> value)."""
        mine = by_policy.get(self.policy, {})
        if not mine:
            return False
        for seed, value in mine.items():
            if not _number(value):
                return False
            if self.claim == "below" and not value < self.value:
                return False
            if self.claim == "above" and not value > self.value:
                return False
            others = {"ratio": (self.over,), "between": (self.low, self.high)}.get(self.claim, ())
            refs = [by_policy.get(name, {}).get(seed) for name in others]
            if not all(_number(ref) for ref in refs):
                return False
            if self.claim == "ratio" and not value >= self.factor * refs[0]:
                return False
            if self.claim == "between" and not refs[0] <= value <= refs[1]:
                return False
        return True


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_conclusions(raw: object, policies: Sequence[str], metrics: Sequence[str]) -> tuple[list[Conclusion], list[tuple[str, str]]]:
    """``[[conclusions]]`` as ``Conclusion``s, and (key path, message) for every problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, list):
        return [], [("conclusions", f"expected an array of tables [[conclusions]], got {raw!r}")]
    out: list[Conclusion] = []
    for i, entry in enumerate(raw):
        at = f"conclusions[{i}]"
        if not isinstance(entry, dict):
            problems.append((at, f'expected a table like {{ claim = "below", policy = "v5.1", ... }}, got {entry!r}'))
            continue
        claim = entry.get("claim")
        if claim not in CLAIMS:
            problems.append((f"{at}.claim", f"expected one of {', '.join(CLAIMS)}, got {claim!r}"))
            continue
        wanted = CLAIMS[claim]
        extra = sorted(set(entry) - {"claim", *wanted})
        if extra:
            problems.append((at, f"unknown key(s) for claim {claim!r}: {', '.join(extra)}, expected {', '.join(wanted)}"))
        fields: dict[str, Any] = {"claim": claim}
        for key in wanted:
            value = entry.get(key)
            message = _check(key, value, policies, metrics, entry.get("metric"))
            if message:
                problems.append((f"{at}.{key}", message))
            else:
                fields[key] = parse_duration(value) if key == "value" and isinstance(value, str) else value
        if len(fields) == len(wanted) + 1 and not extra:
            out.append(Conclusion(**fields))
    return out, problems


def _check(key: str, value: object, policies: Sequence[str], metrics: Sequence[str], metric: object) -> str | None:
    """What is wrong with *value* for *key* of a conclusion (``None``: nothing)."""
    if value is None:
        return "required key is missing"
    if key in ("policy", "over", "low", "high"):
        return None if value in policies else f"expected one of the sweep's policies ({', '.join(policies)}), got {value!r}"
    if key == "metric":
        return None if value in metrics else f"expected one of the sweep's metrics ({', '.join(metrics)}), got {value!r}"
    if key == "factor":
        return None if _number(value) and value > 0 else f"expected a number > 0, got {value!r}"
    if isinstance(value, str):  # key == "value"
        if not str(metric).endswith("_ns"):
            return f"a duration bound needs a *_ns metric, got {value!r} for {metric!r}"
        try:
            parse_duration(value)
        except ValueError as error:
            return f'expected a duration like "200us" or a number, got {value!r} ({error})'
        return None
    return None if _number(value) else f'expected a duration like "200us" or a number, got {value!r}'


# -- evaluation -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Verdict:
    """Where one conclusion holds: the points, and that range in words."""

    conclusion: Conclusion
    holding: tuple[str, ...]
    total: int
    where: str


def varying_keys(sweep: Sweep, table: list[dict[str, Any]]) -> list[str]:
    """The swept keys whose value differs between points (a key with one value is fixed)."""
    return [key for key in sweep.keys if len({repr(row.get(key)) for row in table}) > 1]


def _points(sweep: Sweep, table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Point id -> its values of the varying keys, in sweep order.

    Keys that hold the same value at every point are one: their labels are
    joined (``parallelism=queue_depth``), so a range names them once.
    """
    groups: list[list[str]] = []
    for key in varying_keys(sweep, table):
        twin = next((group for group in groups if all(row.get(group[0]) == row.get(key) for row in table)), None)
        if twin is None:
            groups.append([key])
        else:
            twin.append(key)
    return {row["point"]: {"=".join(_label(k) for k in group): row.get(group[0]) for group in groups} for row in table}


def evaluate(sweep: Sweep, table: list[dict[str, Any]]) -> list[Verdict]:
    """Each of *sweep*'s conclusions checked at every point of the merged *table*."""
    points = _points(sweep, table)
    values: dict[tuple[str, str], dict[str, dict[int, Any]]] = {}
    for row in table:
        for metric in sweep.metrics:
            values.setdefault((row["point"], metric), {}).setdefault(row["policy"], {})[row["seed"]] = row.get(metric)
    verdicts = []
    for conclusion in sweep.conclusions:
        holding = tuple(point for point in points if conclusion.holds(values.get((point, conclusion.metric), {})))
        verdicts.append(Verdict(conclusion=conclusion, holding=holding, total=len(points), where=describe_range(points, set(holding))))
    return verdicts


def _label(key: str) -> str:
    """A swept key as a column: its last name (``cgroups[1].io.latency`` -> ``io.latency``)."""
    return "io.latency" if key.endswith("io.latency") else key.rpartition(".")[2]


def _point_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{label}={value}" for label, value in values.items())


def describe_range(points: dict[str, dict[str, Any]], holding: set[str]) -> str:
    """Where the points in *holding* lie among *points* (point id -> label -> value), in words."""
    n = len(points)
    if len(holding) == n:
        return f"everywhere ({n}/{n} points)"
    if not holding:
        return f"nowhere (0/{n} points)"
    keys = list(next(iter(points.values())))
    allowed = {key: [] for key in keys}
    for point in points:
        if point in holding:
            for key in keys:
                if points[point][key] not in allowed[key]:
                    allowed[key].append(points[point][key])
    box = {point for point, values in points.items() if all(values[key] in allowed[key] for key in keys)}
    count = f"{len(holding)}/{n} points"
    if box == holding:
        every = {key: {repr(values[key]) for values in points.values()} for key in keys}
        limits = [f"{key} in {{{', '.join(map(str, allowed[key]))}}}" for key in keys if len(allowed[key]) < len(every[key])]
        return f"where {' and '.join(limits)} ({count})"
    failing = [point for point in points if point not in holding]
    listed, verb = (sorted(holding, key=list(points).index), "at") if len(holding) <= len(failing) else (failing, "everywhere but at")
    text = "; ".join(_point_text(points[point]) for point in listed[:MAX_LISTED])
    more = f"; and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
    return f"{verb} {text}{more} ({count})"


# -- the table --------------------------------------------------------------------


def _show(metric: str, value: object) -> str:
    if not _number(value):
        return "-"
    if metric.endswith("_ns"):
        return format_ns(int(value))
    if metric.endswith(RATE_STAT) or (isinstance(value, float) and not value.is_integer()):
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _ops(metrics: Sequence[str]) -> list[str]:
    """The ``<task>/<op>`` of every latency metric, in order."""
    ops: list[str] = []
    for metric in metrics:
        head, _, stat = metric.rpartition(".")
        if is_latency(metric) and stat in LATENCY_STATS and head not in ops:
            ops.append(head)
    return ops


def count_metrics(metrics: Sequence[str]) -> list[str]:
    """The ``<task>/<op>.count`` a sweep's rows carry beside its latency metrics (not already among them)."""
    return [f"{op}.count" for op in _ops(metrics) if f"{op}.count" not in metrics]


@attrs.frozen(kw_only=True)
class SummaryRow:
    """One (point, policy): the varying keys' values, then each column's cell text."""

    values: tuple[str, ...]
    policy: str
    cells: tuple[str, ...]


def summary_rows(sweep: Sweep, table: list[dict[str, Any]]) -> tuple[list[str], list[SummaryRow]]:
    """The table's headers and rows: medians over seeds, min-max for the plotted metric, ``n`` per op."""
    keys = varying_keys(sweep, table)
    ops = _ops(sweep.metrics)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in table:
        groups.setdefault((row["point"], row["policy"]), []).append(row)
    headers = [*(_label(key) for key in keys), "policy"]
    for metric in sweep.metrics:
        headers.append(metric if metric != sweep.metric else f"{metric} [min-max]")
    headers += [f"{op} n" for op in ops]
    out = []
    for (_point, policy), rows in groups.items():
        fewest = {op: min((r.get(f"{op}.count") or 0 for r in rows), default=0) for op in ops}
        cells = []
        for metric in sweep.metrics:
            numbers = [r[metric] for r in rows if _number(r.get(metric))]
            if not numbers:
                cells.append("-")
                continue
            text = _show(metric, statistics.median(numbers))
            head, _, stat = metric.rpartition(".")
            if stat in PERCENTILES and fewest.get(head, 0) < FEW_SAMPLES:
                text += "*"
            if metric == sweep.metric:
                text += f" [{_show(metric, min(numbers))}-{_show(metric, max(numbers))}]"
            cells.append(text)
        cells += [f"{fewest[op]:,}" for op in ops]
        out.append(SummaryRow(values=tuple(str(rows[0].get(key)) for key in keys), policy=policy, cells=tuple(cells)))
    return headers, out


def _fixed(sweep: Sweep, table: list[dict[str, Any]]) -> str:
    varying = varying_keys(sweep, table)
    fixed = [f"{key} = {table[0].get(key)}" for key in sweep.keys if key not in varying] if table else []
    return f"{sweep.name}: median over {len(sweep.seeds)} seed(s)" + (f"; {', '.join(fixed)}" if fixed else "")


def render_table(sweep: Sweep, table: list[dict[str, Any]]) -> Table:
    """The rich table ``emu sweep`` prints."""
    headers, rows = summary_rows(sweep, table)
    note = f"(* percentile over fewer than {FEW_SAMPLES} samples; n = the fewest over the seeds)"
    out = Table(title=Text(f"{_fixed(sweep, table)}\n{note}"), title_justify="left", show_edge=False, pad_edge=False)
    left = len(varying_keys(sweep, table)) + 1  # the swept values and the policy
    for i, header in enumerate(headers):
        out.add_column(Text(header), justify="left" if i < left else "right", overflow="fold")
    for row in rows:
        out.add_row(*(Text(cell) for cell in (*row.values, row.policy, *row.cells)))
    return out


def render_conclusions(verdicts: list[Verdict]) -> list[str]:
    """One line per conclusion: the claim, then where it holds."""
    return [f"{verdict.conclusion.describe()}: holds {verdict.where}" for verdict in verdicts]


def render_markdown(sweep: Sweep, table: list[dict[str, Any]], verdicts: list[Verdict]) -> str:
    """``DIR/summary.md``: the same table and conclusions, as Markdown."""
    headers, rows = summary_rows(sweep, table)
    lines = [f"{_fixed(sweep, table)} (* percentile over fewer than {FEW_SAMPLES} samples; n = the fewest over the seeds)", ""]
    lines.append("| " + " | ".join(headers) + " |")
    left = len(varying_keys(sweep, table)) + 1
    lines.append("|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join((*row.values, row.policy, *row.cells)) + " |" for row in rows]
    if verdicts:
        lines += ["", "Conclusions (each checked for every seed at every point):", ""]
        lines += [f"* {line}" for line in render_conclusions(verdicts)]
    return "\n".join(lines) + "\n"
