"""The trace: every event of a run, stamped with virtual time, and its digest.

Actors log through structlog bound loggers built per engine with
``structlog.wrap_logger`` (never ``structlog.configure``, which is
process-global). One processor turns the event dict into a record::

    {"seq": 17, "ts": 2500000, "actor": "batch0.t0", "event": "mmap_lock_start_locking", ...}

``seq`` is the record's index, ``ts`` virtual nanoseconds, then the actor, the
event name and the fields in the order the call site gave them. The record is
encoded once with orjson; the encoded line feeds a running BLAKE2b digest (the
run's identity) and is kept for export. ``trace.jsonl`` is exactly these lines,
so the file's own BLAKE2b-128 equals ``trace_digest``.

Logging is synchronous (structlog's ``a*`` methods need asyncio), is never a
schedule point, and stamps no wall-clock time.

The fast path: the loggers are ``TraceLogger``, structlog's generic
``BoundLogger`` with its own ``info``. ``info`` (nearly every record, several
per fault) builds the record itself and appends it to the trace, skipping the
generic chain (``_proxy_to_logger``, ``_process_event``, the stamp processor
and the sink), which costs more than encoding and hashing the record. It is
the exact record the chain would build: same keys, order and values, so the
same bytes and digest (``tests/emu/test_trace.py`` checks the two agree).
Everything else (``bind``, ``unbind``, ``new``, ``warning``, ``msg``, ...) is
plain structlog and goes through the chain.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Iterator
from typing import Any, Protocol

import orjson
import structlog


class Clock(Protocol):
    """Anything with a virtual ``now_ns``: the engine."""

    now_ns: int


class Trace:
    """The run's records, encoded, with a running digest.

    Kept lines live in one ``bytearray``, newline-terminated, exactly as
    ``trace.jsonl`` holds them: a list of ``orjson.dumps`` results would keep
    orjson's over-allocated buffers (about a kilobyte a record, whatever its
    length).

    Args:
        keep: keep the encoded lines for export (``False`` keeps only the
            digest and count, for very long runs).
    """

    __slots__ = ("keep", "count", "_hash", "_text")

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.count = 0
        self._hash = hashlib.blake2b(digest_size=16)
        self._text = bytearray()

    def append(self, record: dict[str, Any]) -> None:
        """Encode *record* canonically and add it."""
        line = orjson.dumps(record) + b"\n"
        self._hash.update(line)
        self.count += 1
        if self.keep:
            self._text += line

    def __reduce__(self) -> tuple[Any, tuple[bytearray, int]]:
        """Pickle a kept trace as its lines; unpickling re-hashes them (the digest is the same).

        A trace that keeps no lines cannot travel: its digest's running
        state is not picklable and could not be rebuilt.
        """
        if not self.keep:
            raise TypeError("a Trace(keep=False) cannot be pickled: only its running digest exists")
        return (_restored_trace, (self._text, self.count))

    def digest(self) -> str:
        """Hex BLAKE2b-128 of every line so far, newline-terminated."""
        return self._hash.hexdigest()

    @property
    def lines(self) -> list[bytes]:
        """The kept lines, without their newlines."""
        return list(self.iter_lines())

    def iter_lines(self) -> Iterator[bytes]:
        """The kept lines, without their newlines, one at a time."""
        text, start = self._text, 0
        while (end := text.find(b"\n", start)) >= 0:
            yield bytes(text[start:end])
            start = end + 1

    def records(self) -> Iterator[dict[str, Any]]:
        """The kept records, decoded, in order (one at a time)."""
        for line in self.iter_lines():
            yield orjson.loads(line)

    def write_jsonl(self, path: pathlib.Path) -> None:
        """Write the kept records as JSON lines."""
        with open(path, "wb") as out:
            out.write(self._text)


def _restored_trace(text: bytearray, count: int) -> Trace:
    trace = Trace(keep=True)
    trace._text = text
    trace._hash.update(text)
    trace.count = count
    return trace


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    """Records of a ``trace.jsonl`` file, decoded."""
    with open(path, "rb") as src:
        return [orjson.loads(line) for line in src if line.strip()]


class _TraceSink:
    """The wrapped 'logger' at the end of the structlog chain; ``TraceLogger.info`` reads its clock and trace."""

    __slots__ = ("clock", "trace")

    def __init__(self, clock: Clock, trace: Trace) -> None:
        self.clock = clock
        self.trace = trace

    def info(self, record: dict[str, Any]) -> None:
        self.trace.append(record)

    debug = warning = error = critical = msg = info


def _stamp(clock: Clock, trace: Trace):
    def stamp_virtual_time(_logger: object, method: str, event_dict: dict[str, Any]) -> Any:
        record = {
            "seq": trace.count,
            "ts": clock.now_ns,
            "actor": event_dict.pop("actor", None),
            "event": event_dict.pop("event"),
        }
        if method not in ("info", "msg"):
            record["level"] = method
        record.update(event_dict)
        return (record,), {}

    return stamp_virtual_time


class TraceLogger(structlog.BoundLogger):
    """structlog's generic ``BoundLogger`` whose ``info`` writes the record directly.

    ``info`` gives the record ``stamp_virtual_time`` would: seq, ts, the
    actor (a call-site ``actor=`` wins over the bound one, as in structlog's
    event dict), the event, then the bound context and the call-site fields
    in structlog's merge order. No processor runs for ``info``; every other
    method goes through the chain.
    """

    def info(self, event: str, **kw: Any) -> None:
        sink = self._logger
        trace = sink.trace
        record = {"seq": trace.count, "ts": sink.clock.now_ns, "actor": None, "event": None, **self._context, **kw}
        record["event"] = event  # after the context, as structlog sets it
        trace.append(record)


def bind_logger(clock: Clock, trace: Trace, **context: Any) -> TraceLogger:
    """A structlog bound logger that writes records to *trace*.

    Args:
        clock: supplies ``now_ns`` for each record.
        trace: where the records go.
        context: fields bound into every record (``actor=...`` first).
    """
    # .bind() resolves wrap_logger's lazy proxy into a concrete TraceLogger,
    # so each call skips the proxy's attribute lookup.
    return structlog.wrap_logger(
        _TraceSink(clock, trace),
        processors=[_stamp(clock, trace)],
        wrapper_class=TraceLogger,
        context_class=dict,
    ).bind(**context)
