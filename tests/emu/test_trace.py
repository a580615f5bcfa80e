"""Tests for emu/trace.py: stamped records, the digest, JSONL export, no global config."""

from __future__ import annotations

import hashlib
import pathlib
import pickle

import orjson
import pytest
import structlog

from emu import Engine, Trace, bind_logger, read_jsonl
from emu.testing import records, run_strict
from emu.trace import TraceLogger, _stamp, _TraceSink


def _logging_scenario(engine: Engine) -> None:
    async def talker(actor, n):
        for i in range(n):
            actor.log.info("tick", i=i)
            await actor.sleep(10)
        actor.log.warning("done", n=n)

    engine.spawn("t1", talker, 2)
    engine.spawn("t2", talker, 1)


def test_records_are_stamped_with_seq_virtual_time_and_actor(engine: Engine) -> None:
    """Each record starts with seq, virtual ns, actor and event, then the call site's fields in order."""
    _logging_scenario(engine)
    run_strict(engine)
    got = records(engine)
    assert got == [
        {"seq": 0, "ts": 0, "actor": "t1", "event": "tick", "i": 0},
        {"seq": 1, "ts": 0, "actor": "t2", "event": "tick", "i": 0},
        {"seq": 2, "ts": 10, "actor": "t1", "event": "tick", "i": 1},
        {"seq": 3, "ts": 10, "actor": "t2", "event": "done", "level": "warning", "n": 1},
        {"seq": 4, "ts": 20, "actor": "t1", "event": "done", "level": "warning", "n": 2},
    ]
    assert list(got[0]) == ["seq", "ts", "actor", "event", "i"]


def test_digest_is_blake2b_128_of_the_jsonl_file(engine: Engine, tmp_path: pathlib.Path) -> None:
    """The run's digest equals the BLAKE2b-128 of the written trace.jsonl, which reads back the same."""
    _logging_scenario(engine)
    stats = run_strict(engine)
    path = tmp_path / "trace.jsonl"
    engine.trace.write_jsonl(path)
    assert hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest() == stats.trace_digest
    assert read_jsonl(path) == records(engine)
    assert stats.events == 5


def test_digest_without_keeping_lines() -> None:
    """``Trace(keep=False)`` still counts and digests, for long runs."""
    kept, lean = Trace(), Trace(keep=False)
    for trace in (kept, lean):
        trace.append({"seq": 0, "ts": 1, "actor": "a", "event": "e"})
    assert kept.digest() == lean.digest()
    assert lean.lines == [] and lean.count == 1


def test_no_wall_clock_field_in_any_record(engine: Engine) -> None:
    """Records carry virtual time only: no timestamp, time or wall-clock key from structlog."""
    _logging_scenario(engine)
    run_strict(engine)
    for record in records(engine):
        assert set(record) & {"timestamp", "time", "wall", "wall_ns", "datetime"} == set()
        assert isinstance(record["ts"], int)


def test_structlog_is_not_configured_by_the_engine(engine: Engine) -> None:
    """Importing emu and running an engine that logs never calls ``structlog.configure``."""
    import emu  # noqa: F401

    structlog.reset_defaults()
    assert not structlog.is_configured()
    _logging_scenario(engine)
    run_strict(engine)
    bind_logger(engine, Trace(), actor="x").info("e")
    assert not structlog.is_configured()


def test_logging_is_not_a_schedule_point(engine: Engine) -> None:
    """Logging between two same-instant steps does not let another actor run in between."""
    order: list[str] = []

    async def chatty(actor):
        order.append("c1")
        for i in range(5):
            actor.log.info("chat", i=i)
        order.append("c2")

    async def other(actor):
        order.append("o")

    engine.spawn("chatty", chatty)
    engine.spawn("other", other)
    run_strict(engine)
    assert order == ["c1", "c2", "o"]


def test_two_engines_do_not_share_traces(make_engine) -> None:
    """Loggers are bound per engine: two engines in one process keep separate traces."""
    e1, e2 = make_engine(), make_engine()
    _logging_scenario(e1)

    async def quiet(actor):
        actor.log.info("only")

    e2.spawn("q", quiet)
    run_strict(e1)
    run_strict(e2)
    assert [r["event"] for r in records(e2)] == ["only"]
    assert e1.trace.count == 5


class _Clock:
    now_ns = 2_500


def _chain_logger(clock: _Clock, trace: Trace, **context: object) -> structlog.BoundLogger:
    """The generic structlog path ``TraceLogger.info`` short-cuts: stamp processor, then sink."""
    return structlog.wrap_logger(
        _TraceSink(clock, trace),
        processors=[_stamp(clock, trace)],
        wrapper_class=structlog.BoundLogger,
        context_class=dict,
    ).bind(**context)


def test_direct_info_writes_the_bytes_of_the_processor_chain() -> None:
    """``TraceLogger.info`` gives the chain's exact record: key order, overrides, extra bound context."""
    clock = _Clock()
    fast_trace, chain_trace = Trace(), Trace()
    fast = bind_logger(clock, fast_trace, actor="blkdev", dev="8:0")
    chain = _chain_logger(clock, chain_trace, actor="blkdev", dev="8:0")
    assert isinstance(fast, TraceLogger) and isinstance(fast, structlog.BoundLogger)
    for log in (fast, chain):
        log.info("block_rq_complete", sector=8, nr_sector=8)
        log.info("override", dev="8:16", z=1, a=2)  # a bound key keeps its place, takes the new value
        log.info("other_actor", actor="irq", n=3)  # a call-site actor wins
        log.info("stamp_keys", ts=1, seq=2)  # as structlog merges them: the call site's values, in place
        log.bind(op="read").unbind("dev").info("rebound", n=4)
        log.bind(event="bound").info("event_wins")  # the event argument replaces a bound "event"
        log.new(only=True).info("new_context")
    assert fast_trace.lines == chain_trace.lines
    assert fast_trace.digest() == chain_trace.digest()
    assert orjson.loads(fast_trace.lines[0]) == {
        "seq": 0, "ts": 2_500, "actor": "blkdev", "event": "block_rq_complete", "dev": "8:0", "sector": 8, "nr_sector": 8,
    }


def test_info_format_writes_the_bytes_of_info() -> None:
    """``record_format`` + ``info_format`` give ``info``'s exact line: bound context, fixed fields, trailing ints, a ``%``."""
    clock = _Clock()
    fast_trace, info_trace = Trace(), Trace()
    fast = bind_logger(clock, fast_trace, actor="batch0.t0", dev="8:0")
    info = bind_logger(clock, info_trace, actor="batch0.t0", dev="8:0")
    started = fast.record_format("mmap_lock_start_locking", ("waiters",), mm="batch0", write=False)
    returned = fast.record_format("mmap_lock_acquire_returned", ("waited_ns", "n"), mm="100% é\n", write=True, success=True)
    released = fast.record_format("mmap_lock_released", mm="batch0", write=False)
    for waiters in (0, 3, 12_345):
        clock.now_ns += 7_000_000_000
        fast.info_format(started, waiters)
        info.info("mmap_lock_start_locking", mm="batch0", write=False, waiters=waiters)
        fast.info_format(returned, waiters * 1_000, -waiters)
        info.info("mmap_lock_acquire_returned", mm="100% é\n", write=True, success=True, waited_ns=waiters * 1_000, n=-waiters)
        fast.info_format(released)
        info.info("mmap_lock_released", mm="batch0", write=False)
    assert fast_trace.lines == info_trace.lines and fast_trace.count == info_trace.count == 9
    assert fast_trace.digest() == info_trace.digest()
    with pytest.raises(ValueError, match="in the record's order"):
        fast.record_format("e", ("n", "dev"))  # the bound "dev" comes first in the record
    with pytest.raises(ValueError, match="in the record's order"):
        fast.record_format("e", ("seq",))


def test_loggers_sharing_a_format_each_write_their_own_actor() -> None:
    """A line shape is built once per event and names and the values spliced in: each logger still writes
    ``info``'s line, its own actor included (quotes and ``%`` in the name too), with or without one bound,
    and a call-site ``actor=`` in the fields still wins."""
    clock = _Clock()
    for actor in ("a.t0", 'b"%d.t1', "a.t0"):
        for context in ({"actor": actor}, {"actor": actor, "dev": "8:0"}, {"dev": "8:0"}):
            fast_trace, info_trace = Trace(), Trace()
            fast, info = bind_logger(clock, fast_trace, **context), bind_logger(clock, info_trace, **context)
            fmt = fast.record_format("mmap_lock_released", ("n",), mm="batch0", write=False)
            other = fast.record_format("e", actor="override", k=[1, 2])  # a call-site actor, a list value
            fast.info_format(fmt, 5)
            fast.info_format(other)
            info.info("mmap_lock_released", mm="batch0", write=False, n=5)
            info.info("e", actor="override", k=[1, 2])
            assert fast_trace.lines == info_trace.lines


def test_other_methods_keep_the_processor_chain(engine: Engine) -> None:
    """Methods other than ``info`` still run the chain (``warning`` adds its level)."""
    trace = Trace()
    log = bind_logger(engine, trace, actor="x")
    log.warning("w", n=1)
    log.msg("m")
    assert list(trace.records()) == [
        {"seq": 0, "ts": 0, "actor": "x", "event": "w", "level": "warning", "n": 1},
        {"seq": 1, "ts": 0, "actor": "x", "event": "m"},
    ]


def test_a_kept_trace_pickles_with_its_lines_count_and_digest() -> None:
    """A process pool hands a run's trace back: same lines, count and digest; a trace without lines refuses."""
    trace = Trace()
    for i in range(50):
        trace.append({"seq": i, "event": "e", "n": i * i})
    copy = pickle.loads(pickle.dumps(trace))
    assert copy.lines == trace.lines and copy.count == 50 and copy.digest() == trace.digest()
    copy.append({"seq": 50, "event": "after"})
    trace.append({"seq": 50, "event": "after"})
    assert copy.digest() == trace.digest()
    with pytest.raises(TypeError, match="keep=False"):
        pickle.dumps(Trace(keep=False))
