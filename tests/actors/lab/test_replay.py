"""Replay (actors.lab.replay): rerun a run directory and compare its trace event by event."""

from __future__ import annotations

import pathlib

import orjson
import pytest

from actors.lab.config import load_config
from actors.lab.replay import (
    Divergence,
    compare_lines,
    config_matches,
    config_path,
    replay_run,
)
from actors.lab.rundir import load_run_dir

TINY = pathlib.Path(__file__).with_name("tiny.toml").read_text()


def _line(seq: int, ts: int, **fields: object) -> bytes:
    return orjson.dumps({"seq": seq, "ts": ts, "actor": "app.t0", "event": "x", **fields})


def test_compare_lines_counts_matching_events() -> None:
    """Equal traces compare every event and report no divergence."""
    lines = [_line(i, 10 * i) for i in range(5)]
    assert compare_lines(lines, list(lines)) == (5, None)
    assert compare_lines([], []) == (0, None)


def test_compare_lines_reports_the_first_difference() -> None:
    """The first differing line gives the index, both records, the differing fields and the virtual time."""
    recorded = [_line(0, 0), _line(1, 100, bio=7), _line(2, 200, bio=9)]
    replayed = [_line(0, 0), _line(1, 100, bio=8), _line(2, 250)]
    events, divergence = compare_lines(recorded, replayed)
    assert events == 1 and divergence is not None
    assert divergence.index == 1 and divergence.ts == 100
    assert divergence.recorded["bio"] == 7 and divergence.replayed["bio"] == 8
    assert divergence.fields() == ["bio"]


def test_compare_lines_reports_a_trace_that_ends_early() -> None:
    """When one trace ends first, the divergence is at its length and the missing side is None."""
    long = [_line(i, i) for i in range(3)]
    _events, divergence = compare_lines(long[:2], long)
    assert divergence == Divergence(index=2, recorded=None, replayed=orjson.loads(long[2]))
    _events, divergence = compare_lines(long, long[:1])
    assert divergence is not None and divergence.index == 1 and divergence.replayed is None and divergence.ts == 1


def test_compare_lines_shows_a_broken_line_as_text() -> None:
    """A recorded line that is not JSON any more is shown as text, not an exception."""
    _events, divergence = compare_lines([b"{broken"], [_line(0, 5)])
    assert divergence is not None and divergence.recorded == "{broken" and divergence.fields() == [] and divergence.ts == 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A fresh run directory of the tiny config under v4.19 and v5.1, tie seed 4."""
    from actors.lab.experiment import run_experiment
    from actors.lab.output import write_run_dir

    root = tmp_path_factory.mktemp("replay")
    (root / "tiny.toml").write_text(TINY)
    result = run_experiment(load_config(root / "tiny.toml"), tie_seed=4)
    write_run_dir(root / "out", result, plots=False)
    return root / "out"


def test_replay_run_matches_a_fresh_directory(run_dir: pathlib.Path) -> None:
    """Each policy replays from the copied config with the recorded seeds to the same events and digest."""

    loaded = load_run_dir(run_dir)
    path = config_path(loaded)
    assert path == run_dir / "config.toml" and config_matches(loaded, path)
    config = load_config(path)
    for run in loaded.runs:
        outcome = replay_run(loaded, run.policy, config)
        assert outcome.ok and outcome.divergence is None
        assert (outcome.seed, outcome.tie_seed) == (3, 4)
        assert outcome.digest == run.results["trace_digest"] and outcome.events == run.results["events"]


def test_replay_run_finds_an_edited_event(run_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A trace edited by hand diverges at the edited line."""
    import shutil


    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy)
    trace = copy / "v5.1" / "trace.jsonl"
    lines = trace.read_bytes().splitlines()
    record = orjson.loads(lines[10])
    record["ts"] += 1
    lines[10] = orjson.dumps(record)
    trace.write_bytes(b"\n".join(lines) + b"\n")
    loaded = load_run_dir(copy)
    outcome = replay_run(loaded, "v5.1", load_config(config_path(loaded)))
    assert not outcome.ok and outcome.events == 10
    assert outcome.divergence is not None and outcome.divergence.index == 10 and outcome.divergence.fields() == ["ts"]
