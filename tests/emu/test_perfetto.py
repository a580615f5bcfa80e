"""Tests for emu/perfetto.py: Chrome trace-event structure as ui.perfetto.dev reads it."""

from __future__ import annotations

import pathlib

import orjson
import pytest

from emu import PerfettoTrace


def test_metadata_names_processes_and_threads_once() -> None:
    """``M`` events name processes and threads, each only once."""
    trace = PerfettoTrace()
    trace.process(1, "tasks")
    trace.process(1, "tasks again")
    trace.thread(1, 7, "pid 7")
    trace.thread(1, 7, "pid 7 again")
    assert trace.events == [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "tasks"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "pid 7"}},
    ]


def test_timestamps_are_microseconds() -> None:
    """Virtual nanoseconds go in; trace-event microseconds come out."""
    trace = PerfettoTrace()
    trace.complete("fault", 1, 7, ts_ns=2_500, dur_ns=1_000_000, cat="mm", args={"addr": 4096})
    trace.counter("depth", 1, ts_ns=3_000, values={"depth": 4})
    x, c = trace.events
    assert (x["ph"], x["ts"], x["dur"], x["args"]) == ("X", 2.5, 1000.0, {"addr": 4096})
    assert (c["ph"], c["ts"], c["args"]) == ("C", 3.0, {"depth": 4})


def test_async_slices_and_flows_come_in_pairs() -> None:
    """Async slices are b/e pairs with one id; flows are s/f pairs binding to enclosing slices."""
    trace = PerfettoTrace()
    trace.async_slice("bio", 2, 0, ts_ns=1_000, dur_ns=4_000, id="bio1", cat="block")
    trace.flow("wake", "f1", (1, 7, 2_000), (1, 8, 3_000))
    phases = [(e["ph"], e["ts"]) for e in trace.events]
    assert phases == [("b", 1.0), ("e", 5.0), ("s", 2.0), ("f", 3.0)]
    assert trace.events[0]["id"] == trace.events[1]["id"] == "bio1"
    assert trace.events[3]["bp"] == "e"


def test_written_file_is_a_trace_event_object(tmp_path: pathlib.Path) -> None:
    """The file is one JSON object with ``traceEvents`` and a display unit."""
    trace = PerfettoTrace()
    trace.process(1, "p")
    trace.complete("x", 1, 1, 0, 10)
    path = tmp_path / "trace.perfetto.json"
    trace.write(path)
    data = orjson.loads(path.read_bytes())
    assert set(data) == {"traceEvents", "displayTimeUnit"}
    assert len(data["traceEvents"]) == 2
    assert path.read_bytes() == trace.to_json()


def test_an_in_memory_trace_cannot_be_closed_as_a_stream() -> None:
    with pytest.raises(ValueError, match="streamed"):
        PerfettoTrace().close()


def test_an_empty_streamed_trace_is_valid_json(tmp_path) -> None:
    path = tmp_path / "t.json"
    with open(path, "wb") as stream:
        PerfettoTrace(stream).close()
    assert orjson.loads(path.read_bytes()) == {"traceEvents": [], "displayTimeUnit": "ns"}


def test_metadata_goes_into_other_data(tmp_path: pathlib.Path) -> None:
    """``metadata`` is the format's ``otherData``, in memory and streamed alike."""
    meta = {"policy": "v5.1", "seed": 2**64 - 1}
    memory = PerfettoTrace(metadata=meta)
    memory.complete("x", 1, 1, 0, 10)
    with open(tmp_path / "t.json", "wb") as stream:
        streamed = PerfettoTrace(stream, metadata=meta)
        streamed.complete("x", 1, 1, 0, 10)
        streamed.close()
    assert (tmp_path / "t.json").read_bytes() == memory.to_json()
    doc = orjson.loads(memory.to_json())
    assert doc["otherData"] == meta and doc["displayTimeUnit"] == "ns"


def test_window_keeps_only_what_overlaps_it() -> None:
    """A window drops slices, async slices, flows and counter samples wholly outside it, never the names."""
    trace = PerfettoTrace(window=(1_000, 2_000))
    trace.process(1, "p")
    trace.thread(1, 2, "t")
    trace.complete("before", 1, 2, 0, 999)
    trace.complete("across", 1, 2, 500, 1_000)
    trace.complete("after", 1, 2, 2_001, 5)
    trace.async_slice("a-in", 1, 2, 1_500, 10, id="a", cat="c")
    trace.async_slice("a-out", 1, 2, 3_000, 10, id="b", cat="c")
    trace.flow("f-in", "f", (1, 2, 900), (1, 2, 1_100))
    trace.flow("f-out", "g", (1, 2, 10), (1, 2, 20))
    trace.counter("n", 1, 1_000, {"v": 1})
    trace.counter("n", 1, 2_500, {"v": 2})
    names = [e["name"] for e in orjson.loads(trace.to_json())["traceEvents"]]
    assert names == ["process_name", "thread_name", "across", "a-in", "a-in", "f-in", "f-in", "n"]


def test_a_stream_written_in_batches_has_the_same_bytes(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events streamed a few at a time (``STREAM_BATCH``), with a partial last batch, are the bytes of the in-memory trace."""
    import emu.perfetto

    monkeypatch.setattr(emu.perfetto, "STREAM_BATCH", 3)

    def draw(trace: PerfettoTrace) -> PerfettoTrace:
        trace.process(1, "p")
        trace.thread(1, 2, "t")
        for i in range(4):
            trace.complete("x", 1, 2, 1_000 * i, 500, args={"i": i})
        trace.async_slice("bio", 1, 2, 0, 10_000, id="bio:1", cat="block")
        return trace

    path = tmp_path / "trace.json"
    with open(path, "wb") as out:
        streamed = draw(PerfettoTrace(out, metadata={"policy": "v4.19"}))
        assert len(streamed.events) < 3  # the full batches are written already
        streamed.close()
    assert path.read_bytes() == draw(PerfettoTrace(metadata={"policy": "v4.19"})).to_json()
