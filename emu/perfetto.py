"""A Chrome trace-event writer (JSON), as ui.perfetto.dev opens it.

Domain-free: callers name processes, threads, slices, async slices, flows and
counters; this module only keeps the format right. Timestamps go in as
virtual nanoseconds and come out in microseconds (``ns / 1000``), as the
format requires.

Format reference: the "Trace Event Format" document (phases ``M`` metadata,
``X`` complete, ``b``/``e`` async nestable, ``s``/``f`` flow, ``C`` counter).

Events are kept in order and rendered at the end (``to_json``/``write``),
or, given a binary file, written as they come (``PerfettoTrace(out)`` then
``close()``), so a trace of millions of events never sits in memory: a
streamed trace encodes and writes them ``STREAM_BATCH`` at a time (one
``orjson.dumps`` of the batch, one ``write``: per event, both cost more
than the encoding itself). Both give the same bytes. A gzip stream works as the file: ui.perfetto.dev opens
``.json.gz`` as it is.

``metadata`` goes into the format's ``otherData`` object (what the trace is
of); ``window=(start_ns, end_ns)`` keeps only the slices, flows and counter
samples that overlap it (names of processes and threads are always kept).
"""

from __future__ import annotations

import pathlib
from typing import Any, BinaryIO

import orjson


_HEAD = b'{"traceEvents":['
#: Events a streamed trace holds before encoding and writing them together.
STREAM_BATCH = 4096


class PerfettoTrace:
    """Trace events in order, as one JSON object.

    Args:
        out: a binary file to stream the events to (finish with ``close``;
            ``events`` holds the batch not yet written); without it they
            are all kept in ``events``.
        metadata: what the trace is of, as ``otherData`` (JSON values).
        window: ``(start_ns, end_ns)``: drop what lies wholly outside it.
    """

    __slots__ = ("events", "_named", "_out", "_count", "_tail", "_window")

    def __init__(self, out: BinaryIO | None = None, *, metadata: dict[str, Any] | None = None, window: tuple[int, int] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self._named: dict[tuple[int, int | None], str] = {}
        self._out = out
        self._count = 0
        self._tail: dict[str, Any] = {"displayTimeUnit": "ns", **({"otherData": metadata} if metadata else {})}
        self._window = window
        if out is not None:
            out.write(_HEAD)

    def _inside(self, ts_ns: int, end_ns: int) -> bool:
        window = self._window
        return window is None or (end_ns >= window[0] and ts_ns <= window[1])

    def _add(self, *events: dict[str, Any]) -> None:
        self.events += events
        if len(self.events) >= STREAM_BATCH and self._out is not None:
            self._flush()

    def _flush(self) -> None:
        """Write the held events of a streamed trace: ``[a,b]`` of the batch without its brackets, after a comma if events came before."""
        if not self.events:
            return
        assert self._out is not None
        body = orjson.dumps(self.events)[1:-1]
        self._out.write(b"," + body if self._count else body)
        self._count += len(self.events)
        self.events.clear()

    def close(self) -> None:
        """End a streamed trace (the file itself stays open)."""
        if self._out is None:
            raise ValueError("close() ends a streamed trace; this one keeps its events (use write)")
        self._flush()
        self._out.write(b"]," + orjson.dumps(self._tail)[1:])
        self._out = None

    def process(self, pid: int, name: str) -> None:
        """Name process *pid* (once)."""
        if (pid, None) not in self._named:
            self._named[(pid, None)] = name
            self._add({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})

    def thread(self, pid: int, tid: int, name: str) -> None:
        """Name thread *tid* of process *pid* (once)."""
        if (pid, tid) not in self._named:
            self._named[(pid, tid)] = name
            self._add({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})

    def complete(self, name: str, pid: int, tid: int, ts_ns: int, dur_ns: int, *, cat: str = "", args: dict | None = None) -> None:
        """A slice on one thread; slices on a thread must nest."""
        if self._window is not None and not self._inside(ts_ns, ts_ns + dur_ns):
            return
        event = {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": ts_ns / 1000, "dur": dur_ns / 1000}
        if args:
            event["args"] = args
        self._add(event)

    def async_slice(self, name: str, pid: int, tid: int, ts_ns: int, dur_ns: int, *, id: str, cat: str, args: dict | None = None) -> None:
        """A begin/end pair that may overlap others (its own track in the UI)."""
        if self._window is not None and not self._inside(ts_ns, ts_ns + dur_ns):
            return
        begin = {"ph": "b", "name": name, "cat": cat, "id": id, "pid": pid, "tid": tid, "ts": ts_ns / 1000}
        if args:
            begin["args"] = args
        self._add(begin, {"ph": "e", "name": name, "cat": cat, "id": id, "pid": pid, "tid": tid, "ts": (ts_ns + dur_ns) / 1000})

    def flow(self, name: str, id: str, start: tuple[int, int, int], end: tuple[int, int, int], *, cat: str = "flow") -> None:
        """An arrow from (pid, tid, ts_ns) *start* to *end*; each end binds to the enclosing slice."""
        (spid, stid, sts), (epid, etid, ets) = start, end
        if self._window is not None and not self._inside(sts, ets):
            return
        self._add(
            {"ph": "s", "name": name, "cat": cat, "id": id, "pid": spid, "tid": stid, "ts": sts / 1000},
            {"ph": "f", "bp": "e", "name": name, "cat": cat, "id": id, "pid": epid, "tid": etid, "ts": ets / 1000},
        )

    def counter(self, name: str, pid: int, ts_ns: int, values: dict[str, int | float]) -> None:
        """A sample of a counter track."""
        if self._window is not None and not self._inside(ts_ns, ts_ns):
            return
        self._add({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": ts_ns / 1000, "args": values})

    def to_json(self) -> bytes:
        return orjson.dumps({"traceEvents": self.events, **self._tail})

    def write(self, path: pathlib.Path) -> None:
        pathlib.Path(path).write_bytes(self.to_json())
