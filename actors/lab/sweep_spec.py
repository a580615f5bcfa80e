"""Sweep files: what a sweep varies, parsed strictly, expanded into runs.

See ``actors.lab.sweep`` for the file format and the command. This module turns
a sweep file into a ``Sweep``: its key paths resolved against the base
config's TOML, every point applied and checked with
``config_from_dict`` before anything runs, and seeds derived with
``numpy.random.SeedSequence``. Problems are ``file: key.path: message``
lines in a ``SweepError``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import numpy as np
import orjson

from actors.lab.config import ConfigError, ExperimentConfig, config_from_dict, read_toml
from actors.lab.figures import check_figure
from actors.lab.sweep_summary import Conclusion, parse_conclusions
from actors.policy import PRESETS

#: Top-level keys of a sweep file.
SWEEP_KEYS = ("name", "base", "policies", "seeds", "root_seed", "metric", "parameter", "metrics", "params", "points", "conclusions")
#: Config keys whose own name holds a dot (TOML quoted keys).
DOTTED_KEYS = ("io.latency", "io.max", "memory.max", "memory.high")


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
    conclusions: tuple[Conclusion, ...] = ()

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
            base_config = config_from_dict(copy.deepcopy(base_data), source=str(base_path))
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

    conclusions, conclusion_problems = parse_conclusions(data.get("conclusions", []), [str(p) for p in policies], metrics)
    for where, message in conclusion_problems:
        bad(where, message)

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
        conclusions=tuple(conclusions),
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
                config_from_dict(data, source=str(base_path))
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
                config_from_dict(copy.deepcopy(data), source=str(base_path))
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
    message = check_figure(metric)
    return None if message is None else message.replace("figure", "metric")


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except ConfigError as error:
        raise SweepError(error.problems) from None