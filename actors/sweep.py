"""Parameter sweeps: many (config point, policy, seed) runs, merged into one table and a plot.

::

    emu sweep SWEEP.toml --out DIR [--jobs N] [--dask-scheduler ADDRESS] [--resume] [--serial]

A sweep file names a base config, the config keys to vary, the policies and
the number of seeds (DESIGN.md section 6)::

    base = "../seed-inversion.toml"      # relative to the sweep file
    policies = ["v4.19", "v3", "v5.1"]  # default: the base config's
    seeds = 3                           # seeds per (point, policy)
    root_seed = 2018                    # default: the base config's seed
    metric = "monitor/proc_read.p99_ns" # plotted (and always in the table)
    parameter = "cgroups[1].io.latency" # the plot's x axis; default: the first key
    metrics = ["counters.throttled_bios"]  # more table columns (optional)

    [[params]]                          # a grid: every combination of values
    key = "cgroups[1].io.latency"
    values = ["target=250", "target=1000", "max"]

    [[points]]                          # and/or explicit points (crossed with the grid)
    "processes[1].count" = 2
    horizon = "1s"

A key addresses the base config's TOML by path: ``horizon``,
``device.latency``, ``processes[1].count``, ``cgroups[1].io.latency`` (or
``cgroups[1]."io.latency"``). A point is applied to the parsed TOML dict and
then structured with ``ExperimentConfig.from_dict``, so every point is
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
      sweep.csv, sweep.jsonl      one row per run, in sweep order
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
import hashlib
import io
import itertools
import os
import pathlib
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import attrs
import click
import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from actors.config import ConfigError, ExperimentConfig
from actors.policy import PRESETS

SCHEMA = 1
EXIT_FAILED = 1
EXIT_USAGE = 2
RUNS = "runs"
CSV = "sweep.csv"
JSONL = "sweep.jsonl"
SWEEP_COPY = "sweep.toml"
BASE_COPY = "base.toml"
#: Top-level keys of a sweep file.
SWEEP_KEYS = ("name", "base", "policies", "seeds", "root_seed", "metric", "parameter", "metrics", "params", "points")
#: Config keys whose own name holds a dot (TOML quoted keys).
DOTTED_KEYS = ("io.latency",)
LATENCY_STATS = ("count", "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns")
RESULT_KEYS = ("policy", "seed", "tie_seed", "trace_digest", "virtual_ns", "events", "end", "latency", "counters", "mmap_sem", "iolatency", "invariants")


class SweepError(Exception):
    """A sweep file could not be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# -- key paths ---------------------------------------------------------------------

Step = str | int
_TOKEN = re.compile(r'\s*(?:"([^"]*)"|([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|(\.))')


def parse_key(text: str) -> list[tuple[Step, bool]]:
    """Split ``cgroups[1].io.latency`` into ``[("cgroups", False), (1, False), ("io", False), ("latency", False)]``.

    The flag says the name was quoted (``"io.latency"``), so it is never split.

    Raises:
        ValueError: not a key path.
    """
    tokens: list[tuple[Step, bool]] = []
    pos, expect_name = 0, True
    text = text.strip()
    if not text:
        raise ValueError("empty key path")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"bad key path {text!r} at character {pos + 1}")
        quoted, bare, index, dot = match.groups()
        if dot is not None:
            if expect_name:
                raise ValueError(f"bad key path {text!r}: unexpected '.' at character {pos + 1}")
            expect_name = True
        elif index is not None:
            if expect_name:
                raise ValueError(f"bad key path {text!r}: an index must follow a name")
            tokens.append((int(index), False))
        else:
            if not expect_name:
                raise ValueError(f"bad key path {text!r}: expected '.' or '[' before character {pos + 1}")
            tokens.append((quoted if quoted is not None else bare, quoted is not None))
            expect_name = False
        pos = match.end()
    if expect_name:
        raise ValueError(f"bad key path {text!r}: ends with '.'")
    return tokens


def resolve_key(text: str, data: dict[str, Any]) -> tuple[Step, ...]:
    """The steps of key path *text* in the TOML dict *data* (dotted names joined where the dict has them).

    Intermediate tables may be missing (they are created when set); list
    indices must exist.

    Raises:
        ValueError: not a key path, or it does not fit *data*.
    """
    tokens = parse_key(text)
    steps: list[Step] = []
    node: Any = data
    i = 0
    while i < len(tokens):
        step, quoted = tokens[i]
        if isinstance(step, int):
            where = _show(steps)
            if not isinstance(node, list):
                raise ValueError(f"{where} is not a list (an array of tables) in the base config")
            if step >= len(node):
                raise ValueError(f"index {step} out of range: {where} has {len(node)} entr{'y' if len(node) == 1 else 'ies'}")
            node = node[step]
            steps.append(step)
            i += 1
            continue
        if node is not None and not isinstance(node, dict):
            raise ValueError(f"{_show(steps) or '(top level)'} is not a table in the base config")
        run = i
        while run + 1 < len(tokens) and isinstance(tokens[run + 1][0], str) and not quoted and not tokens[run + 1][1]:
            run += 1
        name, used = step, 1
        if not quoted:  # longest dotted name the table has (or that the config knows)
            for end in range(run, i, -1):
                joined = ".".join(str(t[0]) for t in tokens[i : end + 1])
                if (isinstance(node, dict) and joined in node) or joined in DOTTED_KEYS:
                    name, used = joined, end - i + 1
                    break
        steps.append(name)
        node = node.get(name) if isinstance(node, dict) else None
        i += used
    return tuple(steps)


def set_key(data: dict[str, Any], steps: tuple[Step, ...], value: Any) -> None:
    """Set ``data[steps...] = value`` in place, creating missing tables."""
    node: Any = data
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    node[steps[-1]] = copy.deepcopy(value)


def get_key(data: dict[str, Any], steps: tuple[Step, ...]) -> Any:
    """``data[steps...]``, or ``None`` where a table lacks the key (the config's default applies)."""
    node: Any = data
    for step in steps:
        if isinstance(step, str):
            if not isinstance(node, dict) or step not in node:
                return None
        node = node[step]
    return node


def _show(steps: Iterable[Step]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + step
    return out


# -- the sweep file ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Param:
    """One swept key: the path as written, its resolved steps, and its values."""

    key: str
    steps: tuple[Step, ...]
    values: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class Point:
    """One config point: its id (``p<index>_<hash>``), the values by key, the config dict."""

    index: int
    id: str
    values: dict[str, Any]
    data: dict[str, Any]
    config_sha256: str


@attrs.frozen(kw_only=True)
class RunTask:
    """Everything one run needs, picklable: run it anywhere with ``run_one``."""

    point: str
    values: dict[str, Any]
    data: dict[str, Any]
    config_sha256: str
    source: str
    policy: str
    seed: int

    @property
    def run_id(self) -> str:
        """``<point>-<policy>-<seed>``: the run's file name without ``.json``."""
        policy = re.sub(r"[^A-Za-z0-9._+=-]", "_", self.policy)
        return f"{self.point}-{policy}-{self.seed}"


@attrs.frozen(kw_only=True)
class Sweep:
    """A parsed, checked sweep file."""

    path: pathlib.Path
    name: str
    base: pathlib.Path
    policies: tuple[str, ...]
    seeds: tuple[int, ...]
    root_seed: int
    metric: str
    metrics: tuple[str, ...]
    parameter: str
    keys: tuple[str, ...]
    points: tuple[Point, ...]

    def tasks(self) -> list[RunTask]:
        """Every run, in sweep order: point, then policy, then seed."""
        return [
            RunTask(
                point=point.id,
                values=point.values,
                data=point.data,
                config_sha256=point.config_sha256,
                source=str(self.base),
                policy=policy,
                seed=seed,
            )
            for point in self.points
            for policy in self.policies
            for seed in self.seeds
        ]


def derive_seeds(root_seed: int, count: int) -> tuple[int, ...]:
    """*count* engine seeds from *root_seed*: ``SeedSequence(root_seed).spawn(count)``, 32 bits each."""
    children = np.random.SeedSequence(root_seed).spawn(count)
    return tuple(int(child.generate_state(1, dtype=np.uint32)[0]) for child in children)


def load_sweep(path: str | pathlib.Path) -> Sweep:
    """Read and check the sweep file at *path*, and every config point it makes.

    Raises:
        SweepError: one ``file: key.path: message`` line per problem.
    """
    path = pathlib.Path(path)
    src = str(path)
    data = _read_toml(path)
    problems: list[str] = []

    def bad(where: str, message: str) -> None:
        problems.append(f"{src}: {where}: {message}")

    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        bad("(top level)", f"unknown key(s): {', '.join(unknown)}, expected one of {', '.join(SWEEP_KEYS)}")

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        bad("name", f"expected a non-empty string, got {name!r}")

    base_data: dict[str, Any] = {}
    base_config: ExperimentConfig | None = None
    base_path = path.parent
    if "base" not in data:
        bad("base", "required key is missing (the base config, relative to the sweep file)")
    elif not isinstance(data["base"], str):
        bad("base", f'expected a path like "../seed-inversion.toml", got {data["base"]!r}')
    else:
        base_path = (path.parent / data["base"]).resolve()
        try:
            base_data = _read_toml(base_path)
            base_config = ExperimentConfig.from_dict(copy.deepcopy(base_data), source=str(base_path))
        except SweepError as error:
            problems.extend(f"{src}: base: {p}" for p in error.problems)
        except ConfigError as error:
            problems.extend(f"{src}: base: {p}" for p in error.problems)

    valid_policies = [*PRESETS, *(p.name for p in base_config.policy)] if base_config else list(PRESETS)
    policies = data.get("policies", list(base_config.policies) if base_config else [])
    if not isinstance(policies, list) or not policies:
        bad("policies", f"expected a non-empty list of policy names, got {policies!r}")
        policies = []
    for i, policy in enumerate(policies):
        if policy not in valid_policies:
            bad(f"policies[{i}]", f"unknown policy {policy!r}, expected one of {', '.join(valid_policies)}")
    if len(set(map(str, policies))) != len(policies):
        bad("policies", "duplicate policy names")

    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        bad("seeds", f"expected an integer >= 1 (seeds per point and policy), got {seeds!r}")
        seeds = 1
    root_seed = data.get("root_seed", base_config.seed if base_config else 0)
    if isinstance(root_seed, bool) or not isinstance(root_seed, int) or root_seed < 0:
        bad("root_seed", f"expected an integer >= 0, got {root_seed!r}")
        root_seed = 0

    wanted: list[tuple[str, object]] = []
    if "metric" in data:
        wanted.append(("metric", data["metric"]))
    else:
        bad("metric", 'required key is missing (e.g. "monitor/proc_read.p99_ns")')
    extra_metrics = data.get("metrics", [])
    if isinstance(extra_metrics, list):
        wanted += [(f"metrics[{i}]", m) for i, m in enumerate(extra_metrics)]
    else:
        bad("metrics", f"expected a list of metrics, got {extra_metrics!r}")
    metrics: list[str] = []
    for where, value in wanted:
        message = _check_metric(value)
        if message:
            bad(where, message)
        elif value not in metrics:
            metrics.append(str(value))

    if base_config is None:  # key paths cannot be checked without the base
        raise SweepError(problems)

    params: list[Param] = []
    raw_params = data.get("params", [])
    if not isinstance(raw_params, list):
        bad("params", f"expected an array of tables [[params]], got {raw_params!r}")
        raw_params = []
    for i, entry in enumerate(raw_params):
        at = f"params[{i}]"
        if not isinstance(entry, dict):
            bad(at, f'expected a table {{ key = "...", values = [...] }}, got {entry!r}')
            continue
        extra = sorted(set(entry) - {"key", "values"})
        if extra:
            bad(at, f"unknown key(s): {', '.join(extra)}, expected one of key, values")
        key, values = entry.get("key"), entry.get("values")
        if not isinstance(key, str):
            bad(f"{at}.key", "required key is missing" if key is None else f"expected a key path string, got {key!r}")
            continue
        if not isinstance(values, list) or not values:
            bad(f"{at}.values", "required key is missing" if values is None else f"expected a non-empty list, got {values!r}")
            continue
        try:
            steps = resolve_key(key, base_data)
        except ValueError as error:
            bad(f"{at}.key", str(error))
            continue
        params.append(Param(key=key, steps=steps, values=tuple(values)))

    explicit: list[dict[tuple[Step, ...], tuple[str, Any]]] = []
    raw_points = data.get("points", [])
    if not isinstance(raw_points, list):
        bad("points", f"expected an array of tables [[points]], got {raw_points!r}")
        raw_points = []
    for i, entry in enumerate(raw_points):
        at = f"points[{i}]"
        if not isinstance(entry, dict) or not entry:
            bad(at, f'expected a table of key paths to values, like {{ "processes[1].count" = 2 }}, got {entry!r}')
            continue
        point: dict[tuple[Step, ...], tuple[str, Any]] = {}
        for key, value in _flatten(entry):
            try:
                point[resolve_key(key, base_data)] = (key, value)
            except ValueError as error:
                bad(f"{at}.{key}" if '"' not in key else f"{at}", str(error))
        explicit.append(point)

    if not params and not explicit:
        bad("params", "expected at least one [[params]] or [[points]] entry: nothing to sweep")
    steps_seen = [p.steps for p in params]
    for i, p in enumerate(params):
        if p.steps in steps_seen[:i]:
            bad(f"params[{i}].key", f"{p.key!r} is swept twice")
    grid_steps = set(steps_seen)
    for i, point in enumerate(explicit):
        for steps, (key, _) in point.items():
            if steps in grid_steps:
                bad(f"points[{i}]", f"{key!r} is also a [[params]] key (points are crossed with the grid)")

    keys = list(dict.fromkeys([p.key for p in params] + [key for point in explicit for key, _ in point.values()]))
    parameter = data.get("parameter", keys[0] if keys else "")
    if not isinstance(parameter, str) or (keys and parameter not in keys):
        bad("parameter", f"expected one of the swept keys ({', '.join(map(repr, keys))}), got {parameter!r}")

    if problems:
        raise SweepError(problems)

    points = _make_points(params, explicit, base_data, base_path, src)
    return Sweep(
        path=path,
        name=name,
        base=base_path,
        policies=tuple(policies),
        seeds=derive_seeds(root_seed, seeds),
        root_seed=root_seed,
        metric=data["metric"],
        metrics=tuple(metrics),
        parameter=parameter,
        keys=tuple(keys),
        points=points,
    )


def _make_points(
    params: list[Param],
    explicit: list[dict[tuple[Step, ...], tuple[str, Any]]],
    base_data: dict[str, Any],
    base_path: pathlib.Path,
    src: str,
) -> tuple[Point, ...]:
    """The grid (every combination of ``params``) crossed with the explicit points; each one checked."""
    combos = list(itertools.product(*(range(len(p.values)) for p in params)))
    points: list[Point] = []
    problems: list[str] = []
    alone: dict[tuple[int, int], list[str]] = {}

    def alone_problems(i: int, j: int) -> list[str]:
        """What is wrong with value *j* of param *i* applied to the base alone (cached)."""
        if (i, j) not in alone:
            data = copy.deepcopy(base_data)
            set_key(data, params[i].steps, params[i].values[j])
            try:
                ExperimentConfig.from_dict(data, source=str(base_path))
                alone[i, j] = []
            except ConfigError as error:
                alone[i, j] = [_strip_source(p, base_path) for p in error.problems]
        return alone[i, j]

    width = len(str(len(combos) * max(1, len(explicit)) - 1))
    for extra in explicit or [{}]:
        for combo in combos:
            data = copy.deepcopy(base_data)
            values: dict[str, Any] = {}
            for param, j in zip(params, combo):
                set_key(data, param.steps, param.values[j])
                values[param.key] = param.values[j]
            for steps, (key, value) in extra.items():
                set_key(data, steps, value)
                values[key] = value
            label = ", ".join(f"{k}={v!r}" for k, v in values.items())
            try:
                ExperimentConfig.from_dict(copy.deepcopy(data), source=str(base_path))
            except ConfigError as error:
                # blame a value that is bad on its own on its own line, else the combination
                blamed = [
                    f"{src}: params[{i}].values[{j}]: {params[i].values[j]!r} makes an invalid config: {'; '.join(alone_problems(i, j))}"
                    for i, j in enumerate(combo)
                    if alone_problems(i, j)
                ]
                problems.extend(blamed or [f"{src}: point {{{label}}}: {_strip_source(p, base_path)}" for p in error.problems])
                continue
            digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
            index = len(points)
            points.append(Point(index=index, id=f"p{index:0{width}d}_{digest[:8]}", values=values, data=data, config_sha256=digest))
    if problems:
        raise SweepError(list(dict.fromkeys(problems)))
    return tuple(points)


def _flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"device": {"latency": "1ms"}}`` (TOML dotted keys) back into ``("device.latency", "1ms")``."""
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and key not in DOTTED_KEYS and "[" not in key and "." not in key:
            yield from _flatten(value, path)
        else:
            yield path, value


def _strip_source(problem: str, base_path: pathlib.Path) -> str:
    prefix = f"{base_path}: "
    return problem[len(prefix) :] if problem.startswith(prefix) else problem


def _check_metric(metric: object) -> str | None:
    if not isinstance(metric, str) or not metric:
        return f'expected a metric like "monitor/proc_read.p99_ns" or "counters.throttled_bios", got {metric!r}'
    head, _, stat = metric.rpartition(".")
    if "/" in metric.partition(".")[0] or "/" in head:
        if not head or stat not in LATENCY_STATS:
            return f"a latency metric is <task>/<op>.<stat> with stat one of {', '.join(LATENCY_STATS)}, got {metric!r}"
        return None
    if metric.partition(".")[0] not in RESULT_KEYS:
        return f"unknown metric {metric!r}: expected <task>/<op>.<stat> or a path starting with one of {', '.join(RESULT_KEYS)}"
    return None


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    shown = str(path)
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SweepError([f"{shown}: no such file"]) from None
    except IsADirectoryError:
        raise SweepError([f"{shown}: is a directory, expected a TOML file"]) from None
    except UnicodeDecodeError as error:
        raise SweepError([f"{shown}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise SweepError([f"{shown}: not valid TOML: {error}"]) from None


# -- one run -------------------------------------------------------------------------


def run_one(task: RunTask) -> dict[str, Any]:
    """Run one (config point, policy, seed): the run file's document.

    Pure: the same task gives the same document (apart from ``wall_s``)
    wherever it runs. A run that fails returns ``error`` instead of
    ``results``.
    """
    from actors.experiment import run_policy

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
        config = ExperimentConfig.from_dict(copy.deepcopy(task.data), source=task.source)
        document["results"] = run_policy(config, task.policy, seed=task.seed, keep_trace=False).results
    except Exception as error:  # noqa: BLE001 - reported per run, the sweep goes on
        document["error"] = f"{type(error).__name__}: {error}"
    document["wall_s"] = round(time.perf_counter() - start, 3)
    return document


def metric_value(results: dict[str, Any], metric: str) -> Any:
    """*metric* of one run's results (``None`` if the run has no such value, e.g. no samples)."""
    head, _, stat = metric.rpartition(".")
    latency = results.get("latency", {})
    if head in latency:
        return latency[head].get(stat)
    node: Any = results
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


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
        for metric in sweep.metrics:
            row[metric] = metric_value(results, metric)
        out.append(row)
    return out


def write_merged(sweep: Sweep, out: pathlib.Path, documents: list[dict[str, Any]]) -> list[pathlib.Path]:
    """Write ``sweep.csv``, ``sweep.jsonl`` and the plot; return the plot paths written."""
    table = rows(sweep, documents)
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
    if outcome.failed:
        for document in outcome.failed:
            click.echo(f"failed: {document['point']} {document['params']} policy {document['policy']} seed {document['seed']}: {document['error']}", err=True)
        sys.exit(EXIT_FAILED)

