"""Tests for emu/trace.py: stamped records, the digest, JSONL export, no global config."""

from __future__ import annotations

import hashlib
import pathlib

import structlog

from emu import Engine, Trace, bind_logger, read_jsonl
from emu.testing import records, run_strict


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
