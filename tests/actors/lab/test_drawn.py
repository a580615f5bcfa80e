"""One decoding pass for the timeline and the Perfetto file (actors.lab.drawn): each draws from it what it draws from every record."""

from __future__ import annotations

import pathlib

import pytest

from actors.lab.drawn import drawn_records
from actors.lab.perfetto_export import DRAWN, to_perfetto
from actors.lab.timeline_intervals import TIMELINE_EVENTS, timeline_intervals

TINY = pathlib.Path(__file__).with_name("tiny.toml").read_text()


def test_keeps_the_drawn_events_the_last_time_and_every_actor() -> None:
    """The drawn records in order; the end and the actors come from every record, drawn or not."""
    records = [
        {"seq": 0, "ts": 10, "actor": "a.t", "event": "page_fault_user"},
        {"seq": 1, "ts": 20, "actor": "b.t", "event": "mm_filemap_add_to_page_cache"},
        {"seq": 2, "ts": 30, "actor": None, "event": "engine_idle"},
        {"seq": 3, "ts": 25, "actor": "a.t", "event": "fault_done"},
    ]
    drawn = drawn_records(records, {"page_fault_user", "fault_done"})
    assert drawn.records == [records[0], records[3]]
    assert (drawn.end_ns, drawn.actors) == (30, ("a.t", "b.t", ""))
    empty = drawn_records([], DRAWN)
    assert (empty.records, empty.end_ns, empty.actors) == ([], 0, ())


def test_the_timeline_reads_only_events_the_perfetto_file_draws() -> None:
    """One pass with ``DRAWN | TIMELINE_EVENTS`` serves both; the timeline's events are all drawn in Perfetto too."""
    assert TIMELINE_EVENTS <= DRAWN


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory):
    """The tiny experiment's runs (two policies), kept in memory."""
    from actors.lab.config import load_config
    from actors.lab.experiment import run_experiment

    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return run_experiment(load_config(path)).runs


def test_drawn_records_draw_what_every_record_draws(tiny_runs) -> None:
    """The Perfetto file and the timeline intervals from the drawn records equal those from the whole trace."""
    for run in tiny_runs:
        records = list(run.trace.records())
        drawn = drawn_records(records, DRAWN | TIMELINE_EVENTS)
        assert 0 < len(drawn.records) < len(records)
        whole = to_perfetto(records, depth_cap=4, tasks=run.tasks).to_json()
        assert to_perfetto(drawn.records, depth_cap=4, tasks=run.tasks, end_ns=drawn.end_ns).to_json() == whole
        assert timeline_intervals(drawn.records, actors=drawn.actors, end_ns=drawn.end_ns) == timeline_intervals(records)


def test_the_end_and_the_rows_of_undrawn_records_count() -> None:
    """A hold still open at the end closes at the last record, drawn or not; a task that logged only undrawn events has a row."""
    records = [
        {"seq": 0, "ts": 100, "actor": "a.t", "event": "mmap_lock_acquire_returned", "mm": "a", "write": False, "success": True},
        {"seq": 1, "ts": 900, "actor": "b.t", "event": "mm_filemap_add_to_page_cache", "ino": 1, "index": 0},
    ]
    drawn = drawn_records(records, DRAWN | TIMELINE_EVENTS)
    intervals = timeline_intervals(drawn.records, actors=drawn.actors, end_ns=drawn.end_ns)
    assert intervals == timeline_intervals(records) == {"a.t": {"hold_read": [(100, 900)]}, "b.t": {}}
    assert to_perfetto(drawn.records, end_ns=drawn.end_ns).to_json() == to_perfetto(records).to_json()
