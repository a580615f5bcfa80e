"""Plots of a run directory: latency CDFs per op, and a timeline of the worst stall.

``write_plots(run_dir, result)`` draws, into *run_dir*:

``latency-cdf-<task>-<op>.png``
    one per reported op (every ``<task>/<op>`` except think), one curve per
    policy: the CDF on a log time axis (left) and its tail, 1 - CDF on a log
    axis (right), where p99 and max differences show.
``timeline-<policy>.png``
    a window of virtual time (default: the 200 ms around the worst stall of
    the task that reads ``/proc``, else of the task with the worst op
    latency), one row per task: ``mmap_sem`` held for read or write (upper
    half), waiting for ``mmap_sem``, waiting on IO, throttled by io.latency
    and paying io.latency's induced delay (lower half).
``<policy>/latency-samples.json``
    the raw latency samples behind the CDFs (``{"policy", "unit": "ns",
    "samples": {"<task>/<op>": [...]}}``), so ``emu report`` can redraw the
    CDFs exactly from disk.

*result* is an ``actors.lab.experiment.ExperimentResult`` (during ``emu run``)
or an ``actors.lab.report.RunDirectory`` (``emu report``, from disk); both give
the same pictures, byte for byte. Rendering uses matplotlib's Agg canvas
through ``matplotlib.figure.Figure`` (no pyplot, no global backend), fixed
rc settings, and PNG metadata without the ``Software`` key, so a run's PNGs
are a pure function of its results and traces.

Timeline intervals come from trace records (``actors.lab.timeline_intervals``).
"""

from __future__ import annotations

import bisect
import pathlib
from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np
import orjson
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from actors.lab.report import reported_ops
from actors.lab.rundir import SAMPLES, policy_dir_name
from actors.lab.timeline_intervals import Interval, timeline_intervals
from emu import NSEC_PER_MSEC, NSEC_PER_USEC, format_ns

#: Resolution of a CDF's points on its log time axis (``_decimated``): 1,000 steps a decade, 4-25 per pixel column
#: of a 480-pixel axes over 2-12 decades.
CDF_BINS_PER_DECADE = 1000
#: Default timeline window width.
WINDOW_NS = 200 * NSEC_PER_MSEC
#: Waits of one task closer than this are one stall (``worst_stall``), unless a stall break lies between.
STALL_GAP_NS = 100 * NSEC_PER_USEC
#: The /proc reader is the timeline's focus only if one of its reads took at least this long (``focus_task``).
STALL_MIN_NS = NSEC_PER_MSEC
#: Interval kinds, in drawing order, with their colours and legend labels.
KINDS = {
    "hold_read": ("#9ecae1", "mmap_sem held (read)"),
    "hold_write": ("#08519c", "mmap_sem held (write)"),
    "mmap_sem_wait": ("#fd8d3c", "waiting for mmap_sem"),
    "io": ("#31a354", "waiting on IO"),
    "throttle": ("#de2d26", "throttled by io.latency"),
    "delay": ("#756bb1", "io.latency induced delay"),
}
_HOLDS = ("hold_read", "hold_write")
#: Policy colours, by the policy's index in the experiment (matplotlib's tab10).
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: rc settings for every figure: independent of the user's matplotlibrc.
_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "path.simplify": True,
    "svg.hashsalt": "faultpath",
}
#: A latency CDF figure's size (inches) and its two axes' extents (figure fractions: left, bottom, right, top). Its
#: labels take the same room whatever the data (a fixed font, the CDF's y axis 0 to 1, the tail's powers of ten,
#: time labels centred under the axes), so these are the extents matplotlib's constrained layout finds for every
#: CDF, set once: the layout engine's pass over every tick label was 40 % of drawing a CDF.
_CDF_SIZE = (11, 4.2)
_CDF_AXES = (
    (0.04858882496843434, 0.10939930348875662, 0.49045454545454525, 0.9431028149801586),
    (0.5543460976957068, 0.10939930348875662, 0.9962118181818181, 0.9431028149801586),
)
#: PNG metadata: matplotlib would add "Software: matplotlib version...".
_PNG_METADATA = {"Software": None}


@attrs.frozen(kw_only=True)
class PlotRun:
    """What the plots need of one policy's run, from memory or from disk."""

    policy: str
    results: dict[str, Any]
    samples: dict[str, list[int]] | None
    records: Any  # () -> Iterable[dict]: trace records in order (None: the trace was dropped once written)


def plot_runs(result: Any) -> list[PlotRun]:
    """The runs of an ``ExperimentResult`` or a ``RunDirectory``, as ``PlotRun``s."""
    runs = []
    for run in result.runs:
        if hasattr(run, "trace"):  # RunResult, in memory
            records = run.trace.records if run.trace is not None else None
            runs.append(PlotRun(policy=run.policy, results=run.results, samples=run.samples or None, records=records))
        else:  # LoadedRun, from disk
            runs.append(PlotRun(policy=run.policy, results=run.results, samples=run.samples, records=run.records))
    return runs


def write_plots(run_dir: pathlib.Path | str, result: Any, *, window: tuple[int, int] | None = None, timelines: bool = True) -> list[pathlib.Path]:
    """Draw every plot of *result* into *run_dir*; see the module docstring.

    Args:
        run_dir: the run directory (its ``<policy>/`` folders exist).
        result: an ``ExperimentResult`` or an ``actors.lab.report.RunDirectory``.
        window: the timeline's ``(start_ns, end_ns)``; default: around each
            policy's worst stall.
        timelines: also draw each policy's timeline (``write_timeline``; off
            when another process draws them).

    Returns:
        The files written, in order.
    """

    run_dir = pathlib.Path(run_dir)
    runs = plot_runs(result)
    written: list[pathlib.Path] = []
    for run in runs:
        if run.samples is not None:
            path = run_dir / policy_dir_name(run.policy) / SAMPLES
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(orjson.dumps({"policy": run.policy, "unit": "ns", "samples": run.samples}) + b"\n")
                written.append(path)
    with rc_context(_RC):
        for key in reported_ops([run.results for run in runs]):
            path = run_dir / f"latency-cdf-{_slug(key)}.png"
            _save(latency_cdf_figure(key, runs), path)
            written.append(path)
    if timelines:
        written.extend(write_timeline(run_dir, runs, index, window=window) for index in range(len(runs)))
    return written


def write_timeline(
    run_dir: pathlib.Path,
    runs: list[PlotRun],
    index: int,
    *,
    window: tuple[int, int] | None = None,
    intervals: dict[str, dict[str, list[Interval]]] | None = None,
) -> pathlib.Path:
    """Draw ``timeline-<policy>.png`` of ``runs[index]`` (the focus task is chosen over all *runs*, the colour by *index*).

    *intervals*: the run's ``timeline_intervals``, already worked out (by
    ``actors.lab.policy_files``, where the run ended); by default they are
    read from the run's records.
    """
    run = runs[index]
    focus = focus_task([r.results for r in runs])
    if intervals is None:
        intervals = timeline_intervals(run.records())
    end_ns = run.results.get("virtual_ns") or max((iv[1] for ivs in intervals.values() for iv in ivs), default=0)
    chosen = window or default_window(intervals, focus, end_ns)
    path = pathlib.Path(run_dir) / f"timeline-{_slug(run.policy)}.png"
    with rc_context(_RC):
        _save(timeline_figure(run.policy, intervals, chosen, focus=focus, colour=_COLOURS[index % len(_COLOURS)]), path)
    return path


def _slug(name: str) -> str:
    """A file-name piece: ``monitor/proc_read`` → ``monitor-proc_read``."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in name)


def _save(figure: Figure, path: pathlib.Path) -> None:
    figure.savefig(path, format="png", metadata=_PNG_METADATA)


def _ns_label(value: float, _pos: object = None) -> str:
    return format_ns(round(value)) if value >= 1 else ""


# -- latency CDFs ------------------------------------------------------------------


def cdf_points(run: PlotRun, key: str) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(sorted latencies, cumulative fractions, exact) of *key* in *run*, or ``None`` if it never ran.

    Exact: from every sample. Without samples (a run directory written with
    ``--no-plots``): the steps of ``results.json``'s min, p50, p90, p99,
    p99.9 and max, marked inexact.
    """
    if run.samples is not None and run.samples.get(key):
        values = np.sort(np.asarray(run.samples[key], dtype=np.int64))
        return np.maximum(values, 1), np.arange(1, values.size + 1) / values.size, True
    lat = run.results["latency"].get(key)
    if lat is None:
        return None
    values = np.asarray([lat["min_ns"], lat["p50_ns"], lat["p90_ns"], lat["p99_ns"], lat["p999_ns"], lat["max_ns"]], dtype=np.int64)
    fractions = np.asarray([1 / max(lat["count"], 1), 0.5, 0.9, 0.99, 0.999, 1.0])
    return np.maximum(values, 1), fractions, False


def latency_cdf_figure(key: str, runs: list[PlotRun]) -> Figure:
    """The CDF (left) and tail (right) of *key*, one curve per policy, log time axes.

    A policy whose curve is identical to an earlier one's is drawn dashed on
    top of it and says so in the legend, so neither hides the other.
    """
    figure = Figure(figsize=_CDF_SIZE)
    cdf, tail = (figure.add_axes(Bbox.from_extents(*extents)) for extents in _CDF_AXES)
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    for index, run in enumerate(runs):
        points = cdf_points(run, key)
        if points is None:
            continue
        x, y, exact = points
        style = {"color": _COLOURS[index % len(_COLOURS)], "linewidth": 1.4}
        lat = run.results["latency"][key]
        label = f"{run.policy}  p99 {format_ns(lat['p99_ns'])}  max {format_ns(lat['max_ns'])}"
        if not exact:
            style |= {"linestyle": "--", "marker": "o", "markersize": 3}
            label += " (from percentiles)"
        same = next((policy for policy, px, py in drawn if np.array_equal(px, x) and np.array_equal(py, y)), None)
        if same is not None:
            style |= {"linestyle": (0, (4, 3)), "linewidth": 2.0}
            label += f"  (identical to {same})"
        drawn.append((run.policy, x, y))
        shown = _decimated(x)
        cdf.step(x[shown], y[shown], where="post", label=label, **style)
        # The tail: fraction of ops slower than x; the last sample has none.
        above = 1.0 - y
        keep = above > 0
        x, above = x[keep], above[keep]
        shown = _decimated(x)
        tail.step(x[shown], above[shown], where="post", **style)
    for ax in (cdf, tail):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(_ns_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{key} latency (virtual time)")
    cdf.set_ylim(0, 1.02)
    cdf.set_ylabel("fraction of ops ≤ latency")
    cdf.set_title(f"{key}: latency CDF")
    cdf.legend(loc="best", fontsize=8)
    tail.set_yscale("log")
    tail.set_ylabel("fraction of ops > latency")
    tail.set_title(f"{key}: tail (1 - CDF)")
    return figure


def _decimated(x: np.ndarray) -> np.ndarray:
    """Indices of sorted latencies *x* (>= 1) that draw the same step curve on a log axis.

    Of each run of samples within 1/``CDF_BINS_PER_DECADE`` of a decade of
    one another (a few per pixel column) the first and the last are kept: the
    step between them is vertical at that resolution, and so is the curve
    through the samples in between.
    """
    if x.size <= 2:
        return np.arange(x.size)
    bins = np.floor(np.log10(x) * CDF_BINS_PER_DECADE)
    change = bins[1:] != bins[:-1]
    keep = np.ones(x.size, dtype=bool)
    keep[1:-1] = change[:-1] | change[1:]  # the last of a run, or the first of the next
    return np.flatnonzero(keep)


# -- timeline ----------------------------------------------------------------------

def focus_task(runs: list[dict[str, Any]]) -> str | None:
    """The task whose stalls the timeline centres on: the ``/proc`` reader if it stalls, else the worst op's task.

    A ``/proc`` reader whose reads all took under ``STALL_MIN_NS`` is not
    the story of the run, so the task with the slowest op is shown instead.
    """
    ops = reported_ops(runs)
    for key in ops:
        if key.endswith("/proc_read") and max((run["latency"][key]["max_ns"] for run in runs if key in run["latency"]), default=0) >= STALL_MIN_NS:
            return key.partition("/")[0]
    worst = max(((run["latency"][key]["max_ns"], key) for run in runs for key in ops if key in run["latency"]), default=None)
    return None if worst is None else worst[1].partition("/")[0]


def worst_stall(intervals: dict[str, dict[str, list[Interval]]], task: str | None) -> Interval | None:
    """The longest stall of *task*'s actors (of any task's, if *task* has none).

    A stall is a run of one actor's waits (mmap_sem, IO, throttle, delay) and
    faults with gaps under ``STALL_GAP_NS`` between them and no stall break
    (``timeline_intervals``) inside: one ``/proc`` read that walks four
    processes' mmap_sems is one stall, not four, while back-to-back ops
    (a loop's ``mmap`` and ``munmap``, one fault after another) are stalls
    of their own.
    """
    kinds = ("mmap_sem_wait", "io", "throttle", "delay", "fault")

    def longest(actors: Iterable[str]) -> Interval | None:
        best: Interval | None = None
        for actor in actors:
            breaks = [ts for ts, _ in intervals[actor].get("stall_break", ())]
            merged: list[Interval] = []
            for start, end in sorted(iv for kind in kinds for iv in intervals[actor].get(kind, ())):
                broken = bool(merged) and bisect.bisect_left(breaks, start + 1) > bisect.bisect_right(breaks, merged[-1][0])
                if merged and start - merged[-1][1] < STALL_GAP_NS and not broken:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            for iv in merged:
                if best is None or (iv[1] - iv[0], -iv[0]) > (best[1] - best[0], -best[0]):
                    best = iv
        return best

    mine = [actor for actor in intervals if task is not None and actor.partition(".")[2] == task]
    return longest(mine) or longest(intervals)


def default_window(intervals: dict[str, dict[str, list[Interval]]], task: str | None, end_ns: int, width: int = WINDOW_NS) -> Interval:
    """*width* ns centred on the worst stall (widened to hold it), kept inside ``[0, end_ns]``."""
    stall = worst_stall(intervals, task)
    if stall is None:
        return 0, max(min(width, end_ns), 1)
    start, end = stall
    if end - start >= width:
        pad = (end - start) // 20
        return max(0, start - pad), end + pad
    lo = (start + end) // 2 - width // 2
    lo = max(0, min(lo, end_ns - width))
    return lo, lo + width


def zoom_window(stall: Interval, window: Interval) -> Interval:
    """The stall with half its length either side (at least 2 ms in all), inside *window*."""
    start, end = stall
    pad = max((end - start) // 2, (2 * NSEC_PER_MSEC - (end - start)) // 2, 0)
    return max(window[0], start - pad), min(window[1], end + pad)


def timeline_figure(
    policy: str,
    intervals: dict[str, dict[str, list[Interval]]],
    window: Interval,
    *,
    focus: str | None = None,
    colour: str = "#1f77b4",
) -> Figure:
    """One row per task actor: mmap_sem holds above, waits below, over *window* (in ms).

    A second panel zooms on the worst stall of *focus* inside the window
    (see ``worst_stall``), shaded grey in the first.
    """
    lo, hi = window
    actors = list(intervals)
    inside = {actor: {kind: [iv for iv in ivs if iv[1] > lo and iv[0] < hi] for kind, ivs in kinds.items()} for actor, kinds in intervals.items()}
    stall = worst_stall(inside, focus)
    if stall is not None:
        stall = (max(stall[0], lo), min(stall[1], hi))
    height = 0.42 * max(len(actors), 1)
    panels = 2 if stall is not None and stall[1] > stall[0] else 1
    figure = Figure(figsize=(12, 1.4 + height * panels), layout="constrained")
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    focus_note = f", centred on {focus}'s worst stall" if focus else ""
    _draw_rows(axes[0], actors, inside, window)
    axes[0].set_title(f"{policy}: {format_ns(lo)} to {format_ns(hi)}{focus_note}", color=colour)
    if panels == 2:
        assert stall is not None
        axes[0].axvspan(stall[0] / NSEC_PER_MSEC, stall[1] / NSEC_PER_MSEC, color="#000000", alpha=0.12, linewidth=0)
        zoom = zoom_window(stall, window)
        _draw_rows(axes[1], actors, inside, zoom)
        axes[1].set_title(f"zoom: the worst stall, {format_ns(stall[1] - stall[0])} from {format_ns(stall[0])}", color=colour)
    handles = [Patch(facecolor=face, label=label) for face, label in KINDS.values()]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return figure


def _draw_rows(ax: Any, actors: list[str], intervals: dict[str, dict[str, list[Interval]]], window: Interval) -> None:
    lo, hi = window
    scale = 1 / NSEC_PER_MSEC
    for row, actor in enumerate(actors):
        y = len(actors) - 1 - row
        for kind, (face, _label) in KINDS.items():
            spans = [(max(s, lo), min(e, hi)) for s, e in intervals[actor].get(kind, ()) if e > lo and s < hi]
            spans = [(s * scale, max(e - s, 1) * scale) for s, e in spans]
            if spans:
                band = (y + 0.5, 0.4) if kind in _HOLDS else (y + 0.08, 0.4)
                ax.broken_barh(spans, band, facecolors=face, edgecolor="none")
    ax.set_yticks([len(actors) - 1 - row + 0.5 for row in range(len(actors))], actors)
    ax.set_ylim(0, max(len(actors), 1))
    ax.set_xlim(lo * scale, hi * scale)
    ax.set_xlabel("virtual time (ms)")
    ax.grid(axis="y", alpha=0)
