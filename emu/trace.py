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

Faster still, for the hottest call sites (the mmap_lock tracepoints, three
per mmap_sem acquisition): ``record_format`` encodes once the record ``info``
would build for fixed fields and a few trailing int fields, as a bytes
%-format of seq, ts and those ints; ``info_format`` fills it in and appends
the line. No dict is built and nothing is encoded per record, and the bytes
are the ones ``info`` writes (``tests/emu/test_trace.py`` checks that too).
"""

from __future__ import annotations

import hashlib
import io
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
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
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
        """The kept records, decoded, in order (one at a time; a copy of the lines is read, split in C)."""
        return map(orjson.loads, io.BytesIO(self._text))

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


#: ``record_format``'s placeholder for an int field.
_INT: Any = object()


def _escaped(value: Any) -> bytes:
    """*value* as orjson encodes it, with ``%`` doubled for a bytes %-format."""
    return orjson.dumps(value).replace(b"%", b"%%")


class TraceLogger(structlog.BoundLogger):
    """structlog's generic ``BoundLogger`` whose ``info`` writes the record directly.

    ``info`` gives the record ``stamp_virtual_time`` would: seq, ts, the
    actor (a call-site ``actor=`` wins over the bound one, as in structlog's
    event dict), the event, then the bound context and the call-site fields
    in structlog's merge order. No processor runs for ``info``; every other
    method goes through the chain.

    Attributes:
        formats: the ``record_format`` results its hot call sites keep, by
            their own keys (each logger has its own: a format holds its context).
    """

    def __init__(self, logger: Any, processors: Any, context: Any) -> None:
        super().__init__(logger, processors, context)
        self.formats: dict[Any, Any] = {}

    def info(self, event: str, **kw: Any) -> None:
        sink = self._logger
        trace = sink.trace
        record = {"seq": trace.count, "ts": sink.clock.now_ns, "actor": None, "event": None, **self._context, **kw}
        record["event"] = event  # after the context, as structlog sets it
        trace.append(record)

    def record_format(self, event: str, ints: tuple[str, ...] = (), **fields: Any) -> bytes:
        """The line ``info(event, **fields, <each of ints>=n)`` writes, as a bytes %-format of seq, ts and the ints.

        *fields* are fixed; the fields named in *ints* follow them, in that
        order, and take an ``int`` each at ``info_format`` (``%d`` writes an
        int as orjson does). The caller keeps the format (``formats`` is a
        place for it) and writes each record with ``info_format(fmt, *values)``.
        The line's shape (its keys, order and fixed parts) is built once per
        event, int fields and field and context names (``_format_shape``) and
        shared by every logger; a logger's values are spliced in.
        """
        context = self._context
        key = (event, ints, tuple(fields), tuple(context))
        shape = _FORMATS.get(key)
        if shape is None:
            shape = _FORMATS[key] = _format_shape(event, ints, key[2], key[3])
        chunks, slots = shape
        out = [chunks[0]]
        for name, chunk in zip(slots, chunks[1:], strict=True):
            out.append(_escaped(fields[name] if name in fields else context[name]))
            out.append(chunk)
        return b"".join(out)

    def info_format(self, fmt: bytes, *ints: int) -> None:
        """Write the record of *fmt* (from ``record_format``) with these int values: the bytes ``info`` would write."""
        sink = self._logger
        trace = sink.trace
        line = fmt % ((trace.count, sink.clock.now_ns) + ints)
        trace._hash.update(line)  # Trace.append's rest, inlined on this hottest path
        trace.count += 1
        if trace.keep:
            trace._text += line


#: ``record_format``'s line shapes by (event, int fields, field names, context names): the
#: literal chunks between the values, and which field or context value goes in each gap.
#: A cache of a pure function of its key; what a run writes does not depend on it.
_FORMATS: dict[tuple[Any, ...], tuple[tuple[bytes, ...], tuple[str, ...]]] = {}

#: ``_format_shape``'s placeholder for a value spliced in per logger.
_SLOT: Any = object()


def _format_shape(event: str, ints: tuple[str, ...], fields: tuple[str, ...], context: tuple[str, ...]) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    """The record ``info`` builds, as literal chunks and the names of the values between them."""
    record = {"seq": _INT, "ts": _INT, "actor": None, "event": None, **dict.fromkeys(context, _SLOT), **dict.fromkeys(fields, _SLOT), **dict.fromkeys(ints, _INT)}
    record["event"] = event
    if [key for key, value in record.items() if value is _INT] != ["seq", "ts", *ints]:
        raise ValueError(f"record_format({event!r}): seq, ts and the int fields {ints} are not in the record's order")
    chunks, slots, chunk = [], [], b"{"
    for i, (key, value) in enumerate(record.items()):
        chunk += (b"," if i else b"") + _escaped(key) + b":"
        if value is _SLOT:
            chunks.append(chunk)
            slots.append(key)
            chunk = b""
        else:
            chunk += b"%d" if value is _INT else _escaped(value)
    chunks.append(chunk + b"}\n")
    return tuple(chunks), tuple(slots)


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
