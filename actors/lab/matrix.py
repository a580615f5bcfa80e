"""Matrices: configs that answer one question together, run and compared as one.

A question such as "does a /proc/<pid>/mem read under io.max invert the
monitor?" needs several runs that differ in one thing each: no limit, the
limit alone, the limit and the reader, the reader alone. A matrix file
names them (each case an ordinary config, runnable on its own) and the case
the others are measured against::

    matrix = "realkernel-iomax"
    baseline = "iomax-faults"        # optional: verdicts by ratio to this case
    op = "monitor/proc_read"         # the op whose p99 gives each verdict
    factor = 10                      # with a baseline: inversion at >= 10x its p99
    threshold = "20ms"               # an inversion's p99 is at least this (with or without a baseline)

    [[cases]]
    name = "plain"
    config = "realkernel/plain.toml" # relative to the matrix file

``emu run MATRIX`` and ``emu kernel-run MATRIX`` write one directory::

    DIR/
      matrix.json     {"schema", "experiment", "cases", "baseline", "op", "factor", "threshold_ns"}
      matrix.toml     byte copy of the matrix file
      <case>/         an ordinary run directory per case (emu report reads it alone)

written whole or not at all (a sibling ``DIR.tmp-*`` renamed into place).
``emu report DIR`` prints each case and the verdicts; ``emu compare`` of an
emulated and a real matrix directory pairs them case by case.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from actors.lab.config import ConfigError, ExperimentConfig, load_config, read_toml
from actors.lab.output import OutDirClaim, dumps_json, move_into_place, sibling_dir
from actors.lab.realkernel.compare import DEFAULT_FACTOR, DEFAULT_OP, DEFAULT_THRESHOLD_NS, Verdict, verdict
from actors.lab.rundir import INCOMPLETE, MATRIX, RunDirectory, RunDirError, load_run_dir
from emu import format_ns, parse_duration

MATRIX_COPY = "matrix.toml"
MATRIX_KEYS = ("matrix", "baseline", "op", "factor", "threshold", "cases")
CASE_KEYS = ("name", "config")


@attrs.frozen(kw_only=True)
class Case:
    name: str
    config: ExperimentConfig


@attrs.frozen(kw_only=True)
class Matrix:
    """A parsed matrix file: its cases' configs, loaded and checked."""

    name: str
    source: pathlib.Path
    cases: tuple[Case, ...]
    baseline: str | None = None
    op: str = DEFAULT_OP
    factor: float = DEFAULT_FACTOR
    threshold_ns: int = DEFAULT_THRESHOLD_NS

    def header(self) -> dict[str, Any]:
        """What ``matrix.json`` records of the matrix."""
        return {
            "schema": 1, "experiment": self.name, "cases": [c.name for c in self.cases], "baseline": self.baseline,
            "op": self.op, "factor": self.factor, "threshold_ns": self.threshold_ns,
        }  # fmt: skip


def is_matrix_file(path: pathlib.Path) -> bool:
    """Whether *path* is a TOML file with a top-level ``matrix`` key (a config never has one)."""
    try:
        return "matrix" in read_toml(pathlib.Path(path))
    except ConfigError:
        return False


def load_matrix(path: pathlib.Path) -> Matrix:
    """Read the matrix file *path* and every case's config.

    Raises:
        ConfigError: one ``file: key.path: message`` line per problem (a case's
            config problems name that config's file).
    """
    path = pathlib.Path(path)
    data = read_toml(path)
    problems: list[str] = []

    def bad(key: str, message: str) -> None:
        problems.append(f"{path}: {key}: {message}")

    for key in data:
        if key not in MATRIX_KEYS:
            bad(key, f"unknown key; a matrix file has {', '.join(MATRIX_KEYS)}")
    name = data.get("matrix")
    if not isinstance(name, str) or not name.strip():
        bad("matrix", f"expected the matrix's name, a non-empty string, got {name!r}")
    op = data.get("op", DEFAULT_OP)
    if not isinstance(op, str) or "/" not in op:
        bad("op", f'expected "<task>/<op>" such as "monitor/proc_read", got {op!r}')
    factor = data.get("factor", DEFAULT_FACTOR)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 1e6:
        bad("factor", f"expected a number from 1 to 1e6, got {factor!r}")
    threshold_ns = DEFAULT_THRESHOLD_NS
    if "threshold" in data:
        try:
            threshold_ns = parse_duration(data["threshold"])
        except (TypeError, ValueError) as error:
            bad("threshold", str(error))
    cases: list[Case] = []
    raw = data.get("cases")
    if not isinstance(raw, list) or not raw:
        bad("cases", f"expected at least one [[cases]] table, got {raw!r}")
        raw = []
    for i, entry in enumerate(raw):
        at = f"cases[{i}]"
        if not isinstance(entry, dict):
            bad(at, f"expected a table with {', '.join(CASE_KEYS)}, got {entry!r}")
            continue
        for key in entry:
            if key not in CASE_KEYS:
                bad(f"{at}.{key}", f"unknown key; a case has {', '.join(CASE_KEYS)}")
        case_name, config_path = entry.get("name"), entry.get("config")
        if not isinstance(case_name, str) or not case_name or "/" in case_name or case_name.startswith("."):
            bad(f"{at}.name", f"expected a directory name (no '/', not starting with '.'), got {case_name!r}")
            continue
        if case_name in (c.name for c in cases):
            bad(f"{at}.name", f"{case_name!r} is the name of an earlier case")
            continue
        if not isinstance(config_path, str) or not config_path:
            bad(f"{at}.config", f"expected the path of a config, relative to the matrix file, got {config_path!r}")
            continue
        try:
            cases.append(Case(name=case_name, config=load_config(path.parent / config_path)))
        except ConfigError as error:
            problems.extend(error.problems)
    baseline = data.get("baseline")
    if baseline is not None and baseline not in [c.name for c in cases]:
        bad("baseline", f"expected the name of a case ({', '.join(c.name for c in cases)}), got {baseline!r}")
    if problems:
        raise ConfigError(problems)
    return Matrix(name=name.strip(), source=path, cases=tuple(cases), baseline=baseline, op=op, factor=float(factor), threshold_ns=threshold_ns)


class MatrixStaging:
    """The sibling directory a matrix is written into, and the out-directory claim around it.

    Its ``__exit__`` removes the staging directory (unless ``finish`` moved it
    into place) and releases the claim: what ``emu run``'s Ctrl-C handler
    calls, so an interrupted matrix leaves nothing.
    """

    def __init__(self, out: pathlib.Path, claim: OutDirClaim) -> None:
        self.out, self.claim = pathlib.Path(out), claim
        self.path: pathlib.Path | None = sibling_dir(out, "tmp")
        (self.path / INCOMPLETE).write_bytes(b"emu is writing this matrix directory\n")

    def case_dir(self, case: Case) -> pathlib.Path:
        assert self.path is not None
        return self.path / case.name

    def finish(self, matrix: Matrix) -> None:
        assert self.path is not None
        (self.path / MATRIX).write_bytes(dumps_json(matrix.header()))
        shutil.copyfile(matrix.source, self.path / MATRIX_COPY)
        (self.path / INCOMPLETE).unlink()
        move_into_place(self.path, pathlib.Path(self.out).absolute())
        self.path = None

    def __exit__(self, *_exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        self.claim.__exit__(None, None, None)


def write_matrix(matrix: Matrix, staging: MatrixStaging, run_case: Callable[[Case, pathlib.Path], None]) -> None:
    """Run every case with ``run_case(case, directory)`` (which writes a whole run directory there), then move the matrix into place."""
    for case in matrix.cases:
        run_case(case, staging.case_dir(case))
    staging.finish(matrix)


# -- reading a matrix directory -------------------------------------------------------


@attrs.frozen(kw_only=True)
class MatrixDirectory:
    path: pathlib.Path
    header: dict[str, Any]
    cases: dict[str, RunDirectory]

    @property
    def baseline(self) -> RunDirectory | None:
        name = self.header.get("baseline")
        return self.cases.get(name) if name else None


def is_matrix_dir(path: pathlib.Path) -> bool:
    return (pathlib.Path(path) / MATRIX).is_file()


def load_matrix_dir(path: pathlib.Path) -> MatrixDirectory:
    """Read ``matrix.json`` and every case's run directory.

    Raises:
        RunDirError: not a whole matrix directory.
    """
    path = pathlib.Path(path)
    if (path / INCOMPLETE).is_file():
        raise RunDirError(f"{path}: an incomplete matrix directory (the run was interrupted while writing it); run it again")
    try:
        header = orjson.loads((path / MATRIX).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise RunDirError(f"{path / MATRIX}: cannot read: {error}") from None
    if not isinstance(header, dict) or header.get("schema") != 1 or not isinstance(header.get("cases"), list):
        raise RunDirError(f"{path / MATRIX}: expected matrix.json schema 1")
    return MatrixDirectory(path=path, header=header, cases={name: load_run_dir(path / name) for name in header["cases"]})


@attrs.frozen(kw_only=True)
class CaseVerdict:
    case: str
    column: str
    count: int
    verdict: Verdict
    ratio: float | None  # p99 over the baseline case's p99 in the same column (None without a baseline)


def verdicts(loaded: MatrixDirectory) -> list[CaseVerdict]:
    """Each (case, column)'s verdict on the matrix's op: by ratio to the baseline case, else by threshold."""
    header = loaded.header
    out = []
    for name, run_dir in loaded.cases.items():
        for run in run_dir.runs:
            lat = run.results["latency"].get(header["op"])
            v = verdict(run, header["op"], loaded.baseline, factor=header["factor"], threshold_ns=header["threshold_ns"])
            ratio = None
            if loaded.baseline is not None and lat is not None:
                base = next((r for r in loaded.baseline.runs if r.policy == run.policy), loaded.baseline.runs[0])
                base_lat = base.results["latency"].get(header["op"])
                ratio = lat["p99_ns"] / max(base_lat["p99_ns"], 1) if base_lat else None
            out.append(CaseVerdict(case=name, column=run.policy, count=lat["count"] if lat else 0, verdict=v, ratio=ratio))
    return out


def verdict_rule(header: dict[str, Any]) -> str:
    """The rule the verdicts follow, in words."""
    if header.get("baseline"):
        return f"inversion: {header['op']} p99 at least {header['factor']:g}x that of case {header['baseline']!r} in the same column, and at least {format_ns(header['threshold_ns'])}"
    return f"inversion: {header['op']} p99 at least {format_ns(header['threshold_ns'])}"
