"""Writing a run directory: everything ``emu run`` leaves behind.

Layout (DESIGN.md section 3)::

    DIR/
      results.json            schema 1 (``ExperimentResult.to_json()``), orjson, indent 2
      config.toml             byte copy of the source config (replayable)
      replay.json             {"config" (absolute path), "config_copy", "policies", "seed", "tie_seed"}
      <policy>/trace.jsonl    the run's trace records (its BLAKE2b-128 is trace_digest)
      <policy>/trace.perfetto.json   the same, drawn for ui.perfetto.dev
      latency-cdf-<task>-<op>.png, timeline-<policy>.png, <policy>/latency-samples.json
                              plots and their samples (``actors.lab.plots``), unless plots are off

The directory appears whole or not at all: everything is written into a
sibling ``DIR.tmp-<random>`` and renamed into place at the end. An existing
``DIR`` that is not empty is refused unless ``force`` is given, in which case
it is replaced (after the new one is complete).
"""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import orjson

from actors.lab.perfetto_export import to_perfetto
from actors.lab.rundir import (
    CONFIG_COPY,
    REPLAY,
    RESULTS,
    TRACE_JSONL,
    TRACE_PERFETTO,
    policy_dir_name,
)
from emu import PerfettoTrace

if TYPE_CHECKING:
    from actors.lab.experiment import ExperimentResult



class OutputError(Exception):
    """The run directory cannot be written where asked (one line, for the user)."""


def check_out_dir(out: pathlib.Path, *, force: bool) -> None:
    """Refuse *out* early if writing there would fail or clobber a previous run.

    Raises:
        OutputError: *out* is a file, or a non-empty directory without *force*.
    """
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: directory is not empty (use --force to replace it)")


def replay_info(result: ExperimentResult) -> dict[str, Any]:
    """What ``replay.json`` holds: enough to rerun exactly this experiment."""
    first = result.runs[0].results if result.runs else {}
    return {
        "config": str(pathlib.Path(result.config.source).resolve()),
        "config_copy": CONFIG_COPY,
        "policies": [run.policy for run in result.runs],
        "seed": first.get("seed", result.config.seed),
        "tie_seed": first.get("tie_seed"),
    }


def dumps_json(document: Any) -> bytes:
    """orjson, indented by 2, newline-terminated, keys in insertion order."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def write_run_dir(out: pathlib.Path, result: ExperimentResult, *, plots: bool, force: bool = False) -> list[str]:
    """Write the run directory of *result* at *out*, atomically.

    Args:
        out: the directory to create (its parent is created if missing).
        result: the experiment's runs, with their traces kept.
        plots: also draw the plots (``actors.lab.plots.write_plots(dir, result)``).
        force: replace an existing non-empty *out*.

    Returns:
        Warnings for the user (a plot writer that failed); empty when all went well.

    Raises:
        OutputError: *out* is not usable (see ``check_out_dir``).
    """
    out = pathlib.Path(out)
    check_out_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    tmp = _sibling(out, "tmp")
    try:
        _write_contents(tmp, result)
        if plots:
            warnings.extend(_write_plots(tmp, result))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return warnings


def _write_contents(root: pathlib.Path, result: ExperimentResult) -> None:
    (root / RESULTS).write_bytes(dumps_json(result.to_json()))
    with contextlib.suppress(OSError):
        shutil.copyfile(result.config.source, root / CONFIG_COPY)
    (root / REPLAY).write_bytes(dumps_json(replay_info(result)))
    depth_cap = result.config.device.nr_requests
    for run in result.runs:
        run_dir = root / policy_dir_name(run.policy)
        run_dir.mkdir(exist_ok=True)
        run.trace.write_jsonl(run_dir / TRACE_JSONL)
        with open(run_dir / TRACE_PERFETTO, "wb") as stream:
            to_perfetto(run.trace.records(), depth_cap=depth_cap, out=PerfettoTrace(stream)).close()


def _write_plots(root: pathlib.Path, result: ExperimentResult) -> list[str]:
    plots = importlib.import_module("actors.lab.plots")  # matplotlib loads only when plots are drawn
    try:
        plots.write_plots(root, result)
    except Exception as error:  # noqa: BLE001 - a broken plot must not cost the run
        return [f"plots failed: {type(error).__name__}: {error}"]
    return []


def _sibling(out: pathlib.Path, kind: str) -> pathlib.Path:
    """Create an empty sibling ``<out>.<kind>-<random>`` with the umask's permissions (unlike mkdtemp's 0700)."""
    while True:
        path = out.with_name(f"{out.name}.{kind}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def _move_into_place(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Rename *tmp* to *out*; an existing *out* (empty, or forced) is replaced."""
    if out.exists():
        old = _sibling(out, "old")
        old.rmdir()
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
