"""Parameter sweeps: many (config point, policy, seed) runs, merged into one table and a plot.

::

    emu sweep SWEEP.toml --out DIR [--jobs N] [--dask-scheduler ADDRESS] [--resume] [--serial]

A sweep file names a base config, the config keys to vary, the policies and
the number of seeds::

    base = "../seed-inversion.toml"      # relative to the sweep file
    policies = ["v4.19", "v3", "v5.1"]  # default: the base config's
    seeds = 3                           # seeds per (point, policy)
    root_seed = 2018                    # default: the base config's seed
    metric = "monitor/proc_read.p99_ns" # plotted (and always in the table)
    parameter = "cgroups[1].io.latency" # the plot's x axis; default: the first key
    metrics = ["counters.throttled_bios"]  # more table columns (optional)

    [[conclusions]]                     # checked at every point (optional; actors.lab.sweep_summary)
    claim = "below"
    policy = "v5.1"
    metric = "monitor/proc_read.p99_ns"
    value = "200us"

    [[params]]                          # a grid: every combination of values
    key = "cgroups[1].io.latency"
    values = ["target=250", "target=1000", "max"]

    [[points]]                          # and/or explicit points (crossed with the grid)
    "processes[1].count" = 2
    horizon = "1s"

A key addresses the base config's TOML by path: ``horizon``,
``device.latency``, ``processes[1].count``, ``cgroups[1].io.latency`` (or
``cgroups[1]."io.latency"``). A point is applied to the parsed TOML dict and
then structured with ``config_from_dict``, so every point is
checked like a config before anything runs. Seeds come from
``numpy.random.SeedSequence(root_seed).spawn(seeds)``; every point and policy
uses the same seeds (common random numbers); the base config's own ``seed``
only serves as the default ``root_seed``. A metric is
``<task>/<op>.<stat>`` (a latency entry of ``results.json``, e.g.
``monitor/proc_read.p99_ns``) or a dotted path into a run's results
(``counters.throttled_bios``).

A run is a pure function of (config point, policy, seed): ``run_one`` gets
everything it needs in one picklable ``RunTask``, so it runs the same in
this process, in a joblib (loky) worker or on a Dask worker. Output::

    DIR/
      sweep.toml, base.toml       byte copies of the sweep file and its base config
      runs/<point>-<policy>-<seed>.json   one per run, written as it finishes
      sweep.csv, sweep.jsonl      one row per run, in sweep order (with each latency op's sample count)
      summary.md                  the table and the conclusions the command prints (actors.lab.sweep_summary)
      <metric>-vs-<parameter>.png median over seeds per policy, min-max band

``<point>`` is ``p<index>_<hash>``, the hash being of the point's effective
config; ``--resume`` skips a run whose file exists with the same config hash,
policy and seed. ``sweep.csv`` and ``sweep.jsonl`` hold nothing that depends
on the executor, so they are byte-identical whichever one ran the sweep.

Exit status: 0 success; 1 some run failed (the others are still merged); 2
the command line or the sweep file is wrong (one ``file: key.path: message``
line per problem, nothing run).
"""

from __future__ import annotations

import copy
import csv
import io
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import attrs
import click
import numpy as np
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from actors.lab.config import config_from_dict
from actors.lab.figures import figure_value
from actors.lab.sweep_spec import RunTask, Sweep, SweepError, load_sweep
from actors.lab.sweep_summary import count_metrics, evaluate, render_conclusions, render_markdown, render_table

SCHEMA = 1
EXIT_FAILED = 1
EXIT_USAGE = 2
RUNS = "runs"
CSV = "sweep.csv"
JSONL = "sweep.jsonl"
SUMMARY = "summary.md"
SWEEP_COPY = "sweep.toml"
BASE_COPY = "base.toml"

# -- one run -------------------------------------------------------------------------


def run_one(task: RunTask) -> dict[str, Any]:
    """Run one (config point, policy, seed): the run file's document.

    Pure: the same task gives the same document (apart from ``wall_s``)
    wherever it runs. A run that fails returns ``error`` instead of
    ``results``.
    """
    from actors.lab.experiment import run_policy

    start = time.perf_counter()
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "point": task.point,
        "params": task.values,
        "policy": task.policy,
        "seed": task.seed,
        "config_sha256": task.config_sha256,
    }
    try:
        config = config_from_dict(copy.deepcopy(task.data), source=task.source)
        document["results"] = run_policy(config, task.policy, seed=task.seed, keep_trace=False).results
    except Exception as error:  # noqa: BLE001 - reported per run, the sweep goes on
        document["error"] = f"{type(error).__name__}: {error}"
    document["wall_s"] = round(time.perf_counter() - start, 3)
    return document


# -- executors -----------------------------------------------------------------------

Executor = Callable[[list[RunTask]], Iterator[dict[str, Any]]]


def run_serial(tasks: list[RunTask]) -> Iterator[dict[str, Any]]:
    """Run *tasks* one after another in this process."""
    for task in tasks:
        yield run_one(task)


def cores() -> int:
    """The CPUs this process may run on (the default ``--jobs``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_joblib(tasks: list[RunTask], jobs: int | None = None) -> Iterator[dict[str, Any]]:
    """Run *tasks* on *jobs* local worker processes (loky; default: every core); documents as they finish."""
    from joblib import Parallel, delayed

    n_jobs = jobs or cores()
    if n_jobs == 1 or len(tasks) <= 1:
        yield from run_serial(tasks)
        return
    parallel = Parallel(n_jobs=min(n_jobs, len(tasks)), backend="loky", return_as="generator_unordered", batch_size=1)
    yield from parallel(delayed(run_one)(task) for task in tasks)


def run_dask(tasks: list[RunTask], address: str) -> Iterator[dict[str, Any]]:
    """Run *tasks* on the Dask distributed cluster at *address*; documents as they finish.

    Each run is one ``Client.submit`` of the pure function ``run_one`` (its
    key names the run, so resubmitting the same run reuses it); results are
    gathered as they complete. Workers need ``faultpath`` importable.
    """
    from distributed import Client, as_completed

    with Client(address, timeout="30s", set_as_default=False) as client:
        futures = [client.submit(run_one, task, key=f"faultpath-{task.config_sha256[:16]}-{task.run_id}", pure=True) for task in tasks]
        try:
            for future in as_completed(futures, loop=client.loop):
                yield future.result()
                future.release()
        finally:
            client.cancel(futures)


# -- the sweep -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SweepOutcome:
    """What ``run_sweep`` did: run documents in sweep order, how many ran or were reused, and failures."""

    documents: list[dict[str, Any]]
    ran: int
    reused: int
    failed: list[dict[str, Any]]
    wall_s: float


def run_sweep(
    sweep: Sweep,
    out: pathlib.Path,
    *,
    executor: Executor = run_serial,
    resume: bool = False,
    console: Console | None = None,
) -> SweepOutcome:
    """Run every task of *sweep* not already in ``out/runs`` (with *resume*), then merge.

    Each run's document is written to ``out/runs/<run_id>.json`` as it
    arrives; failed runs are not written (a resume retries them).
    """
    start = time.perf_counter()
    out = pathlib.Path(out)
    runs_dir = out / RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep.path, out / SWEEP_COPY)
    shutil.copyfile(sweep.base, out / BASE_COPY)
    tasks = sweep.tasks()
    done: dict[str, dict[str, Any]] = {}
    if resume:
        for task in tasks:
            previous = _read_run(runs_dir / f"{task.run_id}.json", task)
            if previous is not None:
                done[task.run_id] = previous
    todo = [task for task in tasks if task.run_id not in done]
    reused = len(done)
    failed: list[dict[str, Any]] = []
    console = console or Console(stderr=True, highlight=False)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
    )
    by_id = {task.run_id: task for task in todo}
    with progress:
        bar = progress.add_task(f"{sweep.name}: {len(todo)} runs" + (f" ({reused} done before)" if reused else ""), total=len(tasks), completed=reused)
        for document in executor(todo) if todo else iter(()):
            task = by_id[_doc_run_id(document)]
            if "error" in document:
                failed.append(document)
                progress.console.print(f"error: {task.run_id}: {document['error']}")
            else:
                _write_atomic(runs_dir / f"{task.run_id}.json", orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
                done[task.run_id] = document
            progress.advance(bar)
    documents = [done[task.run_id] for task in tasks if task.run_id in done]
    write_merged(sweep, out, documents)
    return SweepOutcome(documents=documents, ran=len(todo), reused=reused, failed=failed, wall_s=time.perf_counter() - start)


def _doc_run_id(document: dict[str, Any]) -> str:
    policy = re.sub(r"[^A-Za-z0-9._+=-]", "_", document["policy"])
    return f"{document['point']}-{policy}-{document['seed']}"


def _read_run(path: pathlib.Path, task: RunTask) -> dict[str, Any] | None:
    """The finished run at *path* if it is this task's (same config hash, policy and seed)."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    same = (
        isinstance(document, dict)
        and document.get("config_sha256") == task.config_sha256
        and document.get("policy") == task.policy
        and document.get("seed") == task.seed
        and isinstance(document.get("results"), dict)
    )
    return document if same else None


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- merging -------------------------------------------------------------------------


def rows(sweep: Sweep, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: point, swept values, policy, seed, trace digest, end, the metrics."""
    out = []
    for document in documents:
        results = document["results"]
        row: dict[str, Any] = {"point": document["point"]}
        for key in sweep.keys:
            row[key] = document["params"].get(key)
        row["policy"] = document["policy"]
        row["seed"] = document["seed"]
        row["trace_digest"] = results["trace_digest"]
        row["end"] = results["end"]
        row["virtual_ns"] = results["virtual_ns"]
        row["events"] = results["events"]
        row["invariant_violations"] = len(results.get("invariants", {}).get("violations", []))
        for metric in (*sweep.metrics, *count_metrics(sweep.metrics)):
            row[metric] = figure_value(results, metric)
        out.append(row)
    return out


def write_merged(sweep: Sweep, out: pathlib.Path, documents: list[dict[str, Any]]) -> list[pathlib.Path]:
    """Write ``sweep.csv``, ``sweep.jsonl``, ``summary.md`` and the plot; return the plot paths written."""
    table = rows(sweep, documents)
    _write_atomic(out / SUMMARY, (render_markdown(sweep, table, evaluate(sweep, table)) if table else "").encode())
    _write_atomic(out / JSONL, b"".join(orjson.dumps(row) + b"\n" for row in table))
    buffer = io.StringIO()
    columns = list(table[0]) if table else ["point", *sweep.keys, "policy", "seed", "trace_digest", *sweep.metrics]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if v is None else (orjson.dumps(v).decode() if isinstance(v, dict | list) else v) for k, v in row.items()})
    _write_atomic(out / CSV, buffer.getvalue().encode())
    if not table:
        return []
    path = out / plot_name(sweep.metric, sweep.parameter)
    plot(sweep, table, path)
    return [path]


def plot_name(metric: str, parameter: str) -> str:
    """``<metric>-vs-<parameter>.png`` with characters unsafe in file names replaced."""
    safe = lambda text: re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")  # noqa: E731
    return f"{safe(metric)}-vs-{safe(parameter)}.png"


def axis_values(values: list[Any]) -> tuple[list[float], str, list[str] | None]:
    """Numeric x positions for a parameter's values, a unit for the label, and tick labels if categorical."""
    from actors.block.blk_cgroup import parse_io_latency
    from emu.time import parse_duration, parse_size

    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], "", None
    if all(isinstance(v, str) for v in values):
        for parse, scale, unit in ((parse_io_latency, 1e-3, "io.latency target, µs"), (parse_duration, 1e-6, "ms"), (parse_size, 1 / 1024, "KiB")):
            try:
                parsed = [parse(v) for v in values]
            except (ValueError, TypeError):
                continue
            if all(p is not None for p in parsed):
                return [p * scale for p in parsed], unit, None
    labels = list(dict.fromkeys(str(v) for v in values))
    return [float(labels.index(str(v))) for v in values], "", labels


def plot(sweep: Sweep, table: list[dict[str, Any]], path: pathlib.Path) -> None:
    """*sweep.metric* against *sweep.parameter*: per policy (and other swept values), median over seeds, min-max band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parameter, metric = sweep.parameter, sweep.metric
    xs, unit, ticks = axis_values([row[parameter] for row in table])
    others = [k for k in sweep.keys if k != parameter and len({orjson.dumps(row[k]) for row in table}) > 1]
    scale, y_unit = (1e-6, " (ms)") if metric.endswith("_ns") and metric.rpartition(".")[2] != "count" else (1.0, "")
    lines: dict[tuple, dict[float, list[float]]] = {}
    for x, row in zip(xs, table):
        label = (row["policy"], *(f"{k}={row[k]}" for k in others))
        value = row[metric]
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.setdefault(label, {}).setdefault(x, []).append(value * scale)
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positive = True
    for label, by_x in lines.items():
        x_sorted = sorted(by_x)
        samples = [np.asarray(by_x[x]) for x in x_sorted]
        median = [float(np.median(s)) for s in samples]
        low = [float(s.min()) for s in samples]
        high = [float(s.max()) for s in samples]
        positive = positive and min(low) > 0
        (line,) = axes.plot(x_sorted, median, marker="o", label=", ".join(label))
        axes.fill_between(x_sorted, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    values = [v for by_x in lines.values() for s in by_x.values() for v in s]
    if values and positive and max(values) / min(values) > 30:
        axes.set_yscale("log")
    if ticks is not None:
        axes.set_xticks(range(len(ticks)), ticks)
    axes.set_xlabel(f"{parameter} ({unit})" if unit else parameter)
    axes.set_ylabel(f"{metric}{y_unit}")
    axes.set_title(f"{sweep.name}: median over {len(sweep.seeds)} seed(s), band = min-max")
    axes.grid(True, alpha=0.3)
    if lines:
        axes.legend(fontsize="small")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def print_summary(sweep: Sweep, table: list[dict[str, Any]]) -> None:
    """The merged table and the conclusions to stdout, as wide as the table needs (at least 80 columns)."""
    rendered = render_table(sweep, table)
    width = max(80, Console(highlight=False, width=100_000).measure(rendered).maximum)
    stdout = Console(highlight=False, width=width)
    stdout.print(rendered)
    for line in render_conclusions(evaluate(sweep, table)):
        stdout.print(Text(line), soft_wrap=True)


# -- the command ---------------------------------------------------------------------


def _die(lines: list[str] | str, status: int = EXIT_USAGE) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        click.echo(line, err=True)
    sys.exit(status)


@click.command("sweep", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sweep_path", metavar="SWEEP.toml", type=click.Path(path_type=pathlib.Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=pathlib.Path), help="Sweep directory (created).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Local worker processes (joblib, loky). [default: all cores]")
@click.option("--dask-scheduler", "dask_scheduler", metavar="ADDRESS", default=None, help="Run on the Dask cluster at ADDRESS (e.g. tcp://host:8786).")
@click.option("--resume", is_flag=True, help="Continue DIR: skip runs already written there.")
@click.option("--serial", is_flag=True, help="Run everything in this process, one run at a time.")
def sweep_command(sweep_path: pathlib.Path, out: pathlib.Path, jobs: int | None, dask_scheduler: str | None, resume: bool, serial: bool) -> None:
    """Run SWEEP.toml: every point x policy x seed; write DIR/sweep.csv, sweep.jsonl and a plot."""
    if serial and dask_scheduler:
        _die("error: --serial and --dask-scheduler exclude each other")
    if jobs is not None and (serial or dask_scheduler):
        _die(f"error: --jobs is for the local joblib executor, not with {'--serial' if serial else '--dask-scheduler'}")
    try:
        sweep = load_sweep(sweep_path)
    except SweepError as error:
        _die(error.problems)
    if out.exists() and not out.is_dir():
        _die(f"error: {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        _die(f"error: {out}: directory is not empty (use --resume to continue that sweep)")

    if serial:
        executor: Executor = run_serial
        how = "serially"
    elif dask_scheduler:
        executor = lambda tasks: run_dask(tasks, dask_scheduler)  # noqa: E731
        how = f"on Dask at {dask_scheduler}"
    else:
        n_jobs = jobs or cores()
        executor = lambda tasks: run_joblib(tasks, n_jobs)  # noqa: E731
        how = f"with joblib, {n_jobs} job(s)"

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    total = len(sweep.points) * len(sweep.policies) * len(sweep.seeds)
    console.print(f"{sweep.name}: {len(sweep.points)} point(s) x {len(sweep.policies)} polic{'y' if len(sweep.policies) == 1 else 'ies'} x {len(sweep.seeds)} seed(s) = {total} runs, {how}")
    try:
        outcome = run_sweep(sweep, out, executor=executor, resume=resume, console=console)
    except OSError as error:
        _die(f"error: {error}", EXIT_FAILED)
    console.print(
        f"{outcome.ran - len(outcome.failed)} run(s) done, {outcome.reused} reused, {len(outcome.failed)} failed in {outcome.wall_s:.1f} s; "
        f"wrote {out / CSV}, {out / JSONL}" + ("" if not outcome.documents else f", {out / plot_name(sweep.metric, sweep.parameter)}")
    )
    if outcome.documents:
        print_summary(sweep, rows(sweep, outcome.documents))
    if outcome.failed:
        for document in outcome.failed:
            click.echo(f"failed: {document['point']} {document['params']} policy {document['policy']} seed {document['seed']}: {document['error']}", err=True)
        sys.exit(EXIT_FAILED)

