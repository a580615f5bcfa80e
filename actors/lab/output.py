"""Writing a run directory: everything ``emu run`` leaves behind.

Layout (``docs/DESIGN.md``, "Run directory")::

    DIR/
      results.json            schema 1 (``ExperimentResult.to_json()``), orjson, indent 2
      config.toml             byte copy of the source config (replayable)
      replay.json             {"config" (absolute path), "config_copy", "policies", "seed", "tie_seed"}
      <policy>/trace.jsonl    the run's trace records (its BLAKE2b-128 is trace_digest)
      <policy>/trace.perfetto.json.gz   the same, drawn for ui.perfetto.dev (gzipped;
                              ``perfetto="json"``: plain ``trace.perfetto.json``)
      latency-cdf-<task>-<op>.png, timeline-<policy>.png, <policy>/latency-samples.json
                              plots and their samples (``actors.lab.plots``), unless plots are off

The directory appears whole or not at all: everything is written into a
sibling ``DIR.tmp-<random>`` (marked ``INCOMPLETE`` until it is whole, so a
temporary left by a killed process is never read as a run) and renamed into
place at the end. ``emu run`` makes that sibling before the simulations
(``OutDirClaim.staging``), so each policy's own files are written as soon as
its run ends (``actors.lab.policy_files``); the rest (results.json, the
plots) once every run is in.

What an existing ``DIR`` may be (``check_out_dir``): absent or empty; a
previous run of the same experiment, which is replaced; a run directory of
another experiment, replaced only with ``force``. Anything else (a file, a
directory of other files) is refused even with ``force``: only what
``emu run`` wrote is ever deleted.

``OutDirClaim`` holds ``DIR`` for one ``emu run`` from before the
simulation to the rename: it creates the parent (so an unwritable place is
reported before any work) and takes an exclusive ``flock`` on
``.<DIR name>.lock`` beside it, so a second ``emu run`` into the same
``DIR`` fails at once instead of both "succeeding" with one result lost.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import importlib
import multiprocessing
import os
import pathlib
import secrets
import shutil
import signal
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from actors.lab.policy_files import PolicyFiles, TraceFiles, WrittenRun
from actors.lab.rundir import (
    CONFIG_COPY,
    INCOMPLETE,
    MATRIX,
    REPLAY,
    RESULTS,
    policy_dir_name,
)
from emu.gcheap import frozen_heap

if TYPE_CHECKING:
    from actors.lab.config import ExperimentConfig
    from actors.lab.experiment import ExperimentResult



class OutputError(Exception):
    """The run directory cannot be written where asked (one line, for the user)."""


def check_out_dir(out: pathlib.Path, *, force: bool, experiment: str | None = None) -> str | None:
    """Refuse *out* early if writing there would fail or clobber something.

    Args:
        out: the run directory to be.
        force: replace a run directory of another experiment too.
        experiment: the name of the experiment about to run; a previous run
            of it in *out* is replaced without *force*.

    Returns:
        What will be replaced, for the user (``None`` if nothing).

    Raises:
        OutputError: *out* is a file, a directory that is not a run
            directory, or (without *force*) another experiment's run.
    """
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if (out / INCOMPLETE).is_file():
        if force:
            return f"an incomplete run in {out}"
        raise OutputError(f"{out}: holds an incomplete run (use --force to replace it)")
    marker = MATRIX if (out / MATRIX).is_file() else RESULTS
    if marker == RESULTS and (not (out / RESULTS).is_file() or not (out / REPLAY).is_file()):
        raise OutputError(f"{out}: directory is not empty and is not a run directory; emu run never replaces it, even with --force (choose another --out)")
    try:
        previous = orjson.loads((out / marker).read_bytes()).get("experiment")
    except (orjson.JSONDecodeError, AttributeError, OSError):
        previous = None
    if experiment is not None and previous == experiment:
        return f"the previous {experiment} run in {out}"
    if force:
        return f"the {previous or 'unreadable'} run in {out}"
    raise OutputError(f"{out}: holds a run of {previous!r}, not of {experiment!r} (use --force to replace it)")


class OutDirClaim:
    """Hold the run directory *out* for one ``emu run`` (a context manager).

    On entry: check *out* (``check_out_dir``), create its parent, and lock
    ``<parent>/.<name>.lock`` (``flock``, released by the kernel if the
    process dies). ``staging()`` makes the temporary directory the runs
    write their own files into as they end (``write_run_dir(staged=...)``
    finishes it). On exit: remove that directory if it was not moved into
    place, the lock, and the parents this claim created if nothing was
    written into them.

    Raises:
        OutputError: on entry, when *out* is refused, its parent cannot be
            created or written, or another ``emu run`` holds the lock.
    """

    def __init__(self, out: pathlib.Path, *, force: bool, experiment: str | None) -> None:
        self.out = pathlib.Path(out)
        _absolute(self.out)  # refuse "/" before anything else
        self.force = force
        self.experiment = experiment
        self.replaces: str | None = None
        self.lock_path = _absolute(self.out).with_name(f".{_absolute(self.out).name}.lock")
        self._created: list[pathlib.Path] = []
        self._fd: int | None = None
        self._staged: Staged | None = None

    def __enter__(self) -> OutDirClaim:
        self.replaces = check_out_dir(self.out, force=self.force, experiment=self.experiment)
        try:
            self._make_parents()
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            self._remove_parents()
            raise OutputError(f"{self.out}: cannot write there: {error.strerror or error}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(self._fd).st_ino != os.stat(self.lock_path).st_ino:  # unlinked by a finishing run meanwhile
                raise BlockingIOError(errno.EWOULDBLOCK, "lock file replaced")
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise OutputError(f"{self.out}: another emu run is writing it (it holds {self.lock_path}); wait for it or choose another --out") from None
        return self

    def staging(self) -> Staged:
        """The temporary sibling of *out* (``DIR.tmp-<random>``, marked ``INCOMPLETE``), made on the first call."""
        if self._staged is None:
            try:
                self._staged = Staged(root=_staging_dir(self.out))
            except OSError as error:
                raise OutputError(f"{self.out}: cannot write there: {error.strerror or error}") from None
        return self._staged

    def __exit__(self, *_exc: object) -> None:
        if self._staged is not None:
            shutil.rmtree(self._staged.root, ignore_errors=True)  # gone already once moved into place
            self._staged = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            os.close(self._fd)
            self._fd = None
        self._remove_parents()

    def _make_parents(self) -> None:
        missing = [p for p in [self.out.parent, *self.out.parent.parents] if not p.exists()]
        for path in reversed(missing):
            path.mkdir()
            self._created.append(path)

    def _remove_parents(self) -> None:
        for path in reversed(self._created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty
        self._created = []


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


def write_run_dir(
    out: pathlib.Path,
    result: ExperimentResult,
    *,
    plots: bool,
    force: bool = False,
    traces: TraceFiles = TraceFiles(),
    jobs: int = 1,
    staged: Staged | None = None,
) -> list[str]:
    """Write the run directory of *result* at *out*, atomically.

    Args:
        out: the directory to create (its parent is created if missing).
        result: the experiment's runs, with their traces kept (or dropped,
            for the runs *staged* has written).
        plots: also draw the plots (``actors.lab.plots.write_plots(dir, result)``).
        force: replace a run directory of another experiment (``check_out_dir``).
        traces: which trace files to write.
        jobs: write each policy's trace files and draw its timeline in up to
            this many forked processes, while this one draws the latency CDFs
            (the files are the same bytes as with 1).
        staged: the temporary directory ``OutDirClaim.staging`` made, where
            each run's own files were written as it ended
            (``actors.lab.policy_files``); written into and moved into place.

    Returns:
        Warnings for the user (a plot writer that failed); empty when all went well.

    Raises:
        OutputError: *out* is not usable (see ``check_out_dir``), or writing
            failed (disk full, read-only): one line, nothing left behind.
    """
    out = pathlib.Path(out)
    check_out_dir(out, force=force, experiment=result.config.name)
    warnings: list[str] = []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged.root if staged is not None else _staging_dir(out)
    except OSError as error:
        raise OutputError(f"{out}: cannot write there: {error.strerror or error}") from None
    try:
        if staged is not None and staged.error is not None:
            raise staged.error
        warnings.extend(_write_contents(tmp, result, traces, plots=plots, jobs=jobs, written=staged.runs if staged else {}))
        (tmp / INCOMPLETE).unlink()
        move_into_place(tmp, _absolute(out))
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        where = f" ({error.filename})" if error.filename else ""
        raise OutputError(f"{out}: writing failed: {error.strerror or error}{where}; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return warnings


@attrs.define
class Staged:
    """A run directory being written before the last run ends: its temporary directory, and the runs written into it.

    Attributes:
        root: the temporary directory (``OutDirClaim.staging``).
        runs: each written run by its index in the experiment.
    """

    root: pathlib.Path
    runs: dict[int, WrittenRun] = attrs.field(factory=dict)

    @property
    def error(self) -> OSError | None:
        """The first (in the experiment's order) of the writes that failed (disk full), which ``write_run_dir`` reports."""
        return next((self.runs[index].error for index in sorted(self.runs) if self.runs[index].error is not None), None)


def _staging_dir(out: pathlib.Path) -> pathlib.Path:
    """A new temporary sibling of *out*, marked ``INCOMPLETE`` until it is whole (so one left by a killed process is never read as a run)."""
    tmp = sibling_dir(out, "tmp")
    try:
        (tmp / INCOMPLETE).write_bytes(b"emu run is writing this directory; if no emu run is, it was interrupted\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _write_contents(
    root: pathlib.Path, result: ExperimentResult, traces: TraceFiles, *, plots: bool, jobs: int, written: dict[int, WrittenRun]
) -> list[str]:
    """Every file of the run directory into *root* (but those of the runs in *written*); the plot writers' warnings.

    Inside ``frozen_heap``, as a simulation: the outputs allocate millions of
    short-lived objects (decoded records, Perfetto events, plot artists)
    beside the runs' results, which the collector need not traverse again
    and again; the forked writers inherit the frozen heap.
    """
    with frozen_heap():
        return _write_files(root, result, traces, plots=plots, jobs=jobs, written=written)


def _write_files(
    root: pathlib.Path, result: ExperimentResult, traces: TraceFiles, *, plots: bool, jobs: int, written: dict[int, WrittenRun]
) -> list[str]:
    """``_write_contents`` without the heap settings."""
    global _SHARED  # noqa: PLW0603 - read by the forked writers, never written after the fork
    (root / RESULTS).write_bytes(dumps_json(result.to_json()))
    with contextlib.suppress(OSError):
        shutil.copyfile(result.config.source, root / CONFIG_COPY)
    (root / REPLAY).write_bytes(dumps_json(replay_info(result)))
    for run in result.runs:
        (root / policy_dir_name(run.policy)).mkdir(exist_ok=True)
    files = policy_files(root, result.config, result.config_sha256, traces, plots=plots)
    if plots:
        importlib.import_module("actors.lab.plots")  # before the fork: the writers inherit matplotlib
    indices = range(len(result.runs))
    jobs = min(jobs, len(result.runs))
    if jobs <= 1:
        warnings = [w for index in indices for w in _write_run_files(root, result, files, written, index)]
        return warnings + (_write_plots(root, result) if plots else [])
    _SHARED = result, files, written
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_run_files_job, root, index) for index in indices]
            cdf_warnings = _write_plots(root, result) if plots else []
            return [w for future in futures for w in future.result()] + cdf_warnings
    finally:
        _SHARED = None


def policy_files(root: pathlib.Path, config: ExperimentConfig, config_sha256: str, traces: TraceFiles, *, plots: bool) -> PolicyFiles:
    """How the policies of *config* write their own files into *root*."""
    return PolicyFiles(
        root=root,
        experiment=config.name,
        config_sha256=config_sha256,
        depth_cap=config.device.nr_requests,
        traces=traces,
        plots=plots,
    )


#: What the forked writers of ``_write_files`` read (inherited at the fork, never pickled).
_SHARED: tuple[ExperimentResult, PolicyFiles, dict[int, WrittenRun]] | None = None


def _run_files_job(root: pathlib.Path, index: int) -> list[str]:
    """``_write_run_files`` in a forked writer: Ctrl-C ends it silently (the parent reports it), as a run's worker."""
    signal.signal(signal.SIGINT, lambda _signum, _frame: os._exit(130))
    assert _SHARED is not None
    return _write_run_files(root, *_SHARED, index)


def _write_run_files(root: pathlib.Path, result: ExperimentResult, files: PolicyFiles, written: dict[int, WrittenRun], index: int) -> list[str]:
    """The files of ``result.runs[index]`` (its trace files unless *written* has them) and its timeline; the warnings."""
    done = written.get(index) or files.write(result.runs[index])
    if done.error is not None:
        raise done.error
    if not files.plots or done.intervals is None:
        return list(done.warnings)
    plots = importlib.import_module("actors.lab.plots")
    try:
        plots.write_timeline(root, plots.plot_runs(result), index, intervals=done.intervals)
    except Exception as error:  # noqa: BLE001 - a broken plot must not cost the run
        return [f"timeline of {result.runs[index].policy} failed: {type(error).__name__}: {error}"]
    return []


def _write_plots(root: pathlib.Path, result: ExperimentResult) -> list[str]:
    """The samples files and the latency CDFs (the timelines are ``_write_run_files``')."""
    plots = importlib.import_module("actors.lab.plots")  # matplotlib loads only when plots are drawn
    try:
        plots.write_plots(root, result, timelines=False)
    except Exception as error:  # noqa: BLE001 - a broken plot must not cost the run
        return [f"plots failed: {type(error).__name__}: {error}"]
    return []


def _absolute(out: pathlib.Path) -> pathlib.Path:
    """*out* as an absolute path with a name (``.`` becomes the current directory's); ``/`` is refused."""
    path = pathlib.Path(os.path.abspath(out))
    if not path.name:
        raise OutputError(f"{out}: a run directory needs a name of its own (not the root directory)")
    return path


def sibling_dir(out: pathlib.Path, kind: str) -> pathlib.Path:
    """Create an empty sibling ``<out>.<kind>-<random>`` with the umask's permissions (unlike mkdtemp's 0700)."""
    out = _absolute(out)
    while True:
        path = out.with_name(f"{out.name}.{kind}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def move_into_place(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Rename *tmp* to *out*; an existing *out* (empty, or allowed by ``check_out_dir``) is replaced."""
    if out.exists():
        old = sibling_dir(out, "old")
        old.rmdir()
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(out)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise OutputError(f"{out}: appeared while this run was writing (another emu run?); this run's results were not written") from None
        raise
