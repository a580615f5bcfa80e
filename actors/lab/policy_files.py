"""One policy's own files in a run directory, written as soon as its run ends.

``<policy>/trace.jsonl`` and ``<policy>/trace.perfetto.json.gz`` depend on
that run alone (and on the experiment's name and config digest, which the
Perfetto file's metadata names), so ``emu run`` writes them in the worker
process that ran the policy, while the other policies still run, and drops
the trace there instead of sending it back (``actors.lab.cli._run_all``).
The timeline PNG is not one of them: its window is centred on the stall of
a task chosen over every policy's results (``actors.lab.plots.focus_task``).
What it needs of the trace, its intervals (``actors.lab.timeline_intervals``,
which needs no matplotlib), is worked out here from the same decoding pass
as the Perfetto file (``actors.lab.drawn``) and travels back instead; the
picture is drawn once every run is in (``actors.lab.output``).

``PolicyFiles`` is picklable: a worker receives it with its policy.
"""

from __future__ import annotations

import contextlib
import gzip
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from actors.lab.drawn import DrawnRecords, drawn_records
from actors.lab.perfetto_export import DRAWN, to_perfetto
from actors.lab.rundir import PERFETTO_FORMATS, TRACE_JSONL, TRACE_PERFETTO, TRACE_PERFETTO_GZ, policy_dir_name
from actors.lab.timeline_intervals import TIMELINE_EVENTS, Interval, timeline_intervals
from emu import PerfettoTrace
from emu.gcheap import frozen_heap

if TYPE_CHECKING:
    from actors.lab.experiment import RunResult


@attrs.frozen(kw_only=True)
class TraceFiles:
    """Which trace files ``write_run_dir`` writes.

    Attributes:
        jsonl: ``<policy>/trace.jsonl`` (``emu replay`` and ``emu report --plots-out`` need it).
        perfetto: ``"gz"`` (default, ``trace.perfetto.json.gz``), ``"json"`` or ``"none"``.
        window: ``(start_ns, end_ns)``: the Perfetto file keeps only what overlaps it.
    """

    jsonl: bool = True
    perfetto: str = attrs.field(default="gz", validator=attrs.validators.in_(PERFETTO_FORMATS))
    window: tuple[int, int] | None = None


@attrs.frozen(kw_only=True)
class WrittenRun:
    """A run whose own files are written: the run without its trace, and what its timeline needs.

    Attributes:
        run: the ``RunResult``, its ``trace`` dropped (``None``).
        intervals: ``timeline_intervals`` of its trace (``None`` without plots,
            or when working them out failed: see *warnings*).
        warnings: for the user (the timeline's intervals could not be worked out).
        error: the write that failed (disk full, read-only), for the caller to report.
    """

    run: RunResult
    intervals: dict[str, dict[str, list[Interval]]] | None
    warnings: tuple[str, ...] = ()
    error: OSError | None = None


@attrs.frozen(kw_only=True)
class PolicyFiles:
    """Where and how to write each policy's own files (see the module docstring).

    Attributes:
        root: the run directory being written (``<policy>/`` is created in it).
        experiment: the experiment's name, and *config_sha256* its config's
            digest (the Perfetto file's metadata).
        depth_cap: the device's queue depth (``to_perfetto``'s *depth_cap*).
        traces: which trace files to write.
        plots: work out the timeline's intervals too.
    """

    root: pathlib.Path
    experiment: str
    config_sha256: str
    depth_cap: int
    traces: TraceFiles
    plots: bool

    def write(self, run: RunResult) -> WrittenRun:
        """Write *run*'s trace files; its timeline's intervals. A write that fails is returned, not raised (it travels back from a worker).

        Inside ``frozen_heap``, as a simulation: decoding and drawing
        allocate millions of short-lived objects.
        """
        try:
            with frozen_heap():
                return self._write(run)
        except OSError as error:
            return WrittenRun(run=attrs.evolve(run, trace=None), intervals=None, error=error)

    def _write(self, run: RunResult) -> WrittenRun:
        assert run.trace is not None
        run_dir = self.root / policy_dir_name(run.policy)
        run_dir.mkdir(exist_ok=True)
        if self.traces.jsonl:
            run.trace.write_jsonl(run_dir / TRACE_JSONL)
        events = self.drawn_events()
        drawn = drawn_records(run.trace.records(), events) if events else None  # one decoding for both
        if self.traces.perfetto != "none":
            assert drawn is not None
            self.write_perfetto(run_dir, run, drawn)
        intervals, warnings = None, ()
        if self.plots:
            assert drawn is not None
            try:
                intervals = timeline_intervals(drawn.records, actors=drawn.actors, end_ns=drawn.end_ns)
            except Exception as error:  # noqa: BLE001 - a broken plot must not cost the run
                warnings = (f"timeline of {run.policy} failed: {type(error).__name__}: {error}",)
        return WrittenRun(run=attrs.evolve(run, trace=None), intervals=intervals, warnings=warnings)

    def drawn_events(self) -> frozenset[str]:
        """The events the decoding pass keeps: those the Perfetto file and the timeline draw (if written)."""
        perfetto = DRAWN if self.traces.perfetto != "none" else frozenset()
        return perfetto | (TIMELINE_EVENTS if self.plots else frozenset())

    def write_perfetto(self, run_dir: pathlib.Path, run: RunResult, drawn: DrawnRecords) -> None:
        """*run*'s Perfetto timeline into *run_dir*, gzipped or plain as ``traces`` says, from its drawn records."""
        metadata = {
            "emulator": "faultpath",
            "experiment": self.experiment,
            "policy": run.policy,
            "seed": run.results.get("seed"),
            "tie_seed": run.results.get("tie_seed"),
            "config_sha256": self.config_sha256,
            "trace_digest": run.results.get("trace_digest"),
            "virtual_ns": run.results.get("virtual_ns"),
            "window_ns": list(self.traces.window) if self.traces.window else None,
        }
        name = TRACE_PERFETTO_GZ if self.traces.perfetto == "gz" else TRACE_PERFETTO
        with open(run_dir / name, "wb") as raw, _maybe_gzip(raw, self.traces.perfetto == "gz") as stream:
            trace = PerfettoTrace(stream, metadata=metadata, window=self.traces.window)
            to_perfetto(drawn.records, depth_cap=self.depth_cap, out=trace, tasks=run.tasks, end_ns=drawn.end_ns).close()


@contextlib.contextmanager
def _maybe_gzip(raw: Any, compress: bool) -> Iterator[Any]:
    """*raw*, or a gzip stream over it: level 3 (a fast level; JSON shrinks ~10x), no name or time in the header (same run, same bytes)."""
    if not compress:
        yield raw
        return
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0) as stream:
        yield stream
