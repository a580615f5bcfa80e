"""Naming one figure of a run's results: ``monitor/proc_read.p99_ns``, ``counters.throttled_bios``.

The one spelling the lab uses wherever a user points at a number in
``results.json``: a sweep's ``metric``/``metrics`` (``actors.lab.sweep_spec``)
and a config's ``[report] answer`` (``actors.lab.report`` prints them).

* ``<task>/<op>.<stat>``: a latency statistic of that thread's op
  (``LATENCY_STATS``: ``count``, ``min_ns`` ... ``mean_ns``), or ``per_s``,
  its samples per virtual second (iterations per second for a loop's op);
* any other dotted path into one run's entry, starting with one of
  ``RESULT_KEYS``: ``counters.sigbus_delivered``, ``mmap_sem.batch0.contended``,
  ``virtual_ns``.
"""

from __future__ import annotations

from typing import Any

#: The statistics ``results.json`` keeps per ``<task>/<op>``.
LATENCY_STATS = ("count", "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns")
#: Derived latency statistics: samples per virtual second.
RATE_STAT = "per_s"
#: The keys of one run's entry in ``results.json``.
RESULT_KEYS = ("policy", "seed", "tie_seed", "trace_digest", "virtual_ns", "events", "end", "latency", "counters", "mmap_sem", "iolatency", "memcg", "swap", "invariants")


def is_latency(figure: str) -> bool:
    """Whether *figure* names a latency statistic (``<task>/<op>.<stat>``)."""
    return "/" in figure.partition(".")[0] or "/" in figure.rpartition(".")[0]


def check_figure(figure: object, *, rates: bool = False) -> str | None:
    """What is wrong with the spelling of *figure* (``None`` if nothing); *rates* allows ``per_s``."""
    if not isinstance(figure, str) or not figure:
        return f'expected a figure like "monitor/proc_read.p99_ns" or "counters.throttled_bios", got {figure!r}'
    head, _, stat = figure.rpartition(".")
    if is_latency(figure):
        stats = (*LATENCY_STATS, RATE_STAT) if rates else LATENCY_STATS
        if not head or stat not in stats:
            return f"a latency figure is <task>/<op>.<stat> with stat one of {', '.join(stats)}, got {figure!r}"
        return None
    if figure.partition(".")[0] not in RESULT_KEYS:
        return f"unknown figure {figure!r}: expected <task>/<op>.<stat> or a path starting with one of {', '.join(RESULT_KEYS)}"
    return None


def figure_value(results: dict[str, Any], figure: str) -> Any:
    """*figure* of one run's *results* (``None`` if the run has no such value, e.g. no samples)."""
    head, _, stat = figure.rpartition(".")
    latency = results.get("latency", {})
    if head in latency:
        if stat == RATE_STAT:
            seconds = results.get("virtual_ns", 0) / 1e9
            return latency[head]["count"] / seconds if seconds else None
        return latency[head].get(stat)
    node: Any = results
    for part in figure.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
