"""A run directory's layout, and reading one back.

The names of the files ``emu run`` writes (``actors.lab.output`` writes
them) and ``LoadedRun``/``RunDirectory``/``load_run_dir``, which ``emu
report``, ``emu replay`` and the plots read them with. It imports nothing
else of the lab, so writers and readers share one definition of the layout.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import attrs
import orjson

from emu import read_jsonl

RESULTS = "results.json"
CONFIG_COPY = "config.toml"
REPLAY = "replay.json"
TRACE_JSONL = "trace.jsonl"
TRACE_PERFETTO = "trace.perfetto.json"
#: The Perfetto file as ``emu run`` writes it by default: gzipped (ui.perfetto.dev opens it as is).
TRACE_PERFETTO_GZ = "trace.perfetto.json.gz"
#: ``--perfetto`` choices: gzipped JSON, plain JSON, none.
PERFETTO_FORMATS = ("gz", "json", "none")
#: Present while ``emu run`` writes a directory (removed before it is renamed into place).
INCOMPLETE = "INCOMPLETE"
#: Marks a matrix directory (``actors.lab.matrix``): one run directory per case.
MATRIX = "matrix.json"
#: Raw latency samples per policy, written beside the plots (``actors.lab.plots``).
SAMPLES = "latency-samples.json"


class RunDirError(Exception):
    """A run directory cannot be read (one line, for the user)."""


def policy_dir_name(policy: str) -> str:
    """A directory name for *policy* (path separators replaced)."""
    name = policy.replace(os.sep, "_").replace("/", "_")
    return "_" + name if name in ("", ".", "..") else name


@attrs.frozen(kw_only=True)
class LoadedRun:
    """One policy of a run directory: its results entry and where its files are."""

    policy: str
    results: dict[str, Any]
    directory: pathlib.Path

    @property
    def trace_path(self) -> pathlib.Path:
        return self.directory / TRACE_JSONL

    @property
    def samples(self) -> dict[str, list[int]] | None:
        """The raw latency samples, if the plots wrote them; else ``None``."""
        path = self.directory / SAMPLES
        if not path.is_file():
            return None
        return orjson.loads(path.read_bytes())["samples"]

    def records(self) -> list[dict[str, Any]]:
        """The trace records (``trace.jsonl``), decoded."""
        return read_jsonl(self.trace_path)


@attrs.frozen(kw_only=True)
class RunDirectory:
    """A finished run directory, as ``emu report`` and ``emu replay`` read it."""

    path: pathlib.Path
    document: dict[str, Any]
    replay: dict[str, Any]
    runs: list[LoadedRun]

    def run(self, policy: str) -> LoadedRun:
        for run in self.runs:
            if run.policy == policy:
                return run
        raise RunDirError(f"{self.path}: no run of policy {policy!r}; it has {', '.join(r.policy for r in self.runs)}")


def load_run_dir(path: pathlib.Path | str) -> RunDirectory:
    """Read ``results.json`` (and ``replay.json`` if present) of the run directory *path*.

    Raises:
        RunDirError: *path* is not a run directory, or its results.json is unreadable.
    """
    path = pathlib.Path(path)
    results = path / RESULTS
    if (path / INCOMPLETE).is_file():
        raise RunDirError(f"{path}: an incomplete run directory (emu run was interrupted while writing it); run the experiment again")
    if not results.is_file():
        if (path / MATRIX).is_file():
            raise RunDirError(f"{path}: a matrix directory; give one of its cases, {path}/<case>")
        raise RunDirError(f"{path}: not a run directory (no {RESULTS})")
    try:
        document = orjson.loads(results.read_bytes())
    except orjson.JSONDecodeError as error:
        raise RunDirError(f"{results}: not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != 1 or not isinstance(document.get("runs"), list):
        raise RunDirError(f"{results}: expected results.json schema 1")
    replay: dict[str, Any] = {}
    if (path / REPLAY).is_file():
        replay = orjson.loads((path / REPLAY).read_bytes())
    runs = [LoadedRun(policy=run["policy"], results=run, directory=path / policy_dir_name(run["policy"])) for run in document["runs"]]
    return RunDirectory(path=path, document=document, replay=replay, runs=runs)
