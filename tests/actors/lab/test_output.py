"""The run directory (actors.lab.output) and its Perfetto timeline (actors.lab.perfetto_export)."""

from __future__ import annotations

import gzip
import pathlib
from collections import defaultdict
from typing import Any

import orjson
import pytest

from actors.lab.output import OutDirClaim, OutputError, TraceFiles, check_out_dir, write_run_dir
from actors.lab.perfetto_export import to_perfetto
from actors.lab.rundir import INCOMPLETE, RunDirError, load_run_dir
from emu import PerfettoTrace

TINY = pathlib.Path(__file__).with_name("tiny.toml").read_text()


def _records() -> list[dict[str, Any]]:
    """A hand-written trace with every event kind the exporter draws."""
    rows = [
        (1000, "app.t0", "page_fault_user", {"address": 42, "write": False}),
        (1000, "app.t0", "mmap_lock_start_locking", {"mm": "app", "write": False, "waiters": 1}),
        (1500, "app.t0", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True, "waited_ns": 500}),
        (2000, "app.t0", "block_bio_queue", {"dev": "8:0", "bio": 1, "op": "READ", "nr_sector": 8, "blkcg": "batch", "comm": "app.t0", "pid": 101}),
        (2000, "app.t0", "rq_qos_throttle", {"dev": "8:0", "bio": 1, "blkcg": "batch", "inflight": 1, "max_depth": 1}),
        (2500, "app.t0", "iolatency_scale", {"dev": "8:0", "what": "max_depth", "blkcg": "batch", "by": "batch", "direction": -1,
                                          "old": 2, "new": 1, "max_depth": 1, "use_delay": 0, "scale_cookie": 99, "scale_grp": None}),
        (2500, "sda", "iolatency_scale", {"dev": "8:0", "what": "scale_cookie", "blkcg": "", "by": "batch", "direction": -1,
                                          "old": 100, "new": 99, "max_depth": None, "use_delay": None, "scale_cookie": 99, "scale_grp": "batch"}),
        (3000, "app.t0", "rq_qos_throttle_done", {"dev": "8:0", "bio": 1, "blkcg": "batch", "waited_ns": 1000}),
        (3000, "app.t0", "mmap_sem_held_across_throttle", {"kind": "throttle", "ns": 1000, "held": ["app:read"]}),
        (3000, "sda", "block_rq_issue", {"dev": "8:0", "bio": 1, "op": "READ", "nr_sector": 8, "blkcg": "batch"}),
        (3500, "app.t1", "mmap_lock_start_locking", {"mm": "app", "write": True, "waiters": 0}),
        (4000, "app.t2", "block_bio_queue", {"dev": "8:0", "bio": 3, "op": "WRITE", "nr_sector": 8, "blkcg": "", "comm": "app.t2", "pid": 103}),
        (4000, "sda", "block_rq_issue", {"dev": "8:0", "bio": 3, "op": "WRITE", "nr_sector": 8, "blkcg": ""}),
        (4500, "sda", "block_rq_complete", {"dev": "8:0", "bio": 3, "op": "WRITE", "nr_sector": 8, "blkcg": "", "error": 0, "lat_ns": 500}),
        (5000, "sda", "block_rq_complete", {"dev": "8:0", "bio": 1, "op": "READ", "nr_sector": 8, "blkcg": "batch", "error": 0, "lat_ns": 3000}),
        (5500, "app.t0", "mmap_lock_released", {"mm": "app", "write": False}),
        (5500, "app.t1", "mmap_lock_acquire_returned", {"mm": "app", "write": True, "success": True, "waited_ns": 2000}),
        (6000, "app.t0", "fault_done", {"address": 42, "major": True, "attempts": 1, "latency_ns": 5000}),
        (6000, "app.t0", "blkcg_maybe_throttle_current", {"dev": "8:0", "blkcg": "batch", "delay_ns": 1000}),
        (7000, "app.t1", "mmap_lock_released", {"mm": "app", "write": True}),
        (7000, "monitor.m", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True, "trylock": True}),
        (7100, "monitor.m", "mmap_lock_released", {"mm": "app", "write": False}),
        (7200, "sda", "iolatency_scale", {"dev": "8:0", "what": "unthrottle", "blkcg": "batch", "by": "timer", "direction": 1,
                                          "old": 1, "new": 0xFFFF_FFFF, "max_depth": 0xFFFF_FFFF, "use_delay": 0, "scale_cookie": 100, "scale_grp": None}),
        (8000, "app.t0", "page_fault_user", {"address": 43, "write": False}),
        (8000, "app.t0", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True, "trylock": True}),
        (8100, "app.t0", "block_bio_queue", {"dev": "8:0", "bio": 2, "op": "READ", "nr_sector": 8, "blkcg": "batch", "comm": "app.t0", "pid": 101}),
        (9000, "flush-8:0", "mmap_lock_start_locking", {"mm": "app", "write": False, "waiters": 0}),
    ]
    return [{"seq": i, "ts": ts, "actor": actor, "event": event, **fields} for i, (ts, actor, event, fields) in enumerate(rows)]


def check_perfetto_structure(doc: dict[str, Any]) -> dict[str, Any]:
    """Assert the timeline is well formed; return the events grouped for further checks."""
    events = doc["traceEvents"]
    named_threads = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    named_procs = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    for e in events:
        if e["ph"] == "M":
            assert e["args"]["name"]
            continue
        assert e["pid"] in named_procs, e
        if e["ph"] != "C":
            assert (e["pid"], e["tid"]) in named_threads, e
    # Async slices: every begin has exactly one end, later or at the same time.
    begins: dict[tuple, list[float]] = defaultdict(list)
    for e in events:
        key = (e.get("cat"), e.get("id"), e["pid"], e.get("name"))
        if e["ph"] == "b":
            begins[key].append(e["ts"])
        elif e["ph"] == "e":
            assert begins[key], f"end without begin: {e}"
            assert e["ts"] >= begins[key].pop(0)
    assert all(not v for v in begins.values()), {k: v for k, v in begins.items() if v}
    # Complete slices nest per thread (integer ns recovered from µs).
    by_thread: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
            start = round(e["ts"] * 1000)
            by_thread[(e["pid"], e["tid"])].append((start, start + round(e["dur"] * 1000)))
    for thread, slices in by_thread.items():
        stack: list[int] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], f"slice [{start}, {end}) crosses its parent on {thread}"
            stack.append(end)
    # Flows: each start has its finish.
    flows = defaultdict(list)
    for e in events:
        if e["ph"] in "sf":
            flows[e["id"]].append(e["ph"])
    assert all(sorted(v) == ["f", "s"] for v in flows.values()), flows
    return {"events": events, "threads": named_threads, "procs": named_procs}


def test_perfetto_async_begins_have_ends_and_slices_nest() -> None:
    """Every async begin has its end, complete slices nest per thread and every thread is named."""
    doc = orjson.loads(to_perfetto(_records(), depth_cap=32).to_json())
    check_perfetto_structure(doc)


def test_perfetto_timestamps_are_microseconds() -> None:
    """A fault from 1000 ns to 6000 ns becomes a slice at 1.0 µs lasting 5.0 µs."""
    events = orjson.loads(to_perfetto(_records()).to_json())["traceEvents"]
    (fault,) = [e for e in events if e["ph"] == "X" and e["cat"] == "fault" and not e.get("args", {}).get("unfinished")]
    assert (fault["ts"], fault["dur"]) == (1.0, 5.0)
    assert fault["name"] == "major fault"


def test_perfetto_names_processes_and_threads_after_actors() -> None:
    """``process.thread`` actors become named threads of their process; kernel actors get a process each."""
    events = orjson.loads(to_perfetto(_records()).to_json())["traceEvents"]
    procs = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
    threads = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"app", "sda", "monitor", "flush-8:0"} <= procs
    assert {"app.t0", "app.t1", "app.t2", "monitor.m", "sda"} <= threads
    tids = [e["tid"] for e in events if e.get("name") == "thread_name"]
    assert len(tids) == len(set(tids))


def test_perfetto_draws_holds_waits_bios_throttles_flows_and_counters() -> None:
    """Each kind of record becomes its kind of slice, arrow or counter."""
    events = orjson.loads(to_perfetto(_records(), depth_cap=32).to_json())["traceEvents"]
    pid_of = {e["args"]["name"]: e["pid"] for e in events if e.get("name") == "process_name"}
    holds = [e for e in events if e["ph"] == "b" and e["cat"] == "mmap_sem"]
    assert [h["args"]["holder"] for h in holds] == ["app.t0", "app.t1", "monitor.m", "app.t0"]
    assert {h["pid"] for h in holds} == {pid_of["app"]}  # drawn in the mm owner's process
    waits = [e for e in events if e["ph"] == "X" and e["name"].startswith("mmap_sem wait")]
    assert [(round(w["ts"] * 1000), round(w["dur"] * 1000)) for w in waits][:2] == [(1000, 500), (3500, 2000)]
    bios = {e["id"]: e for e in events if e["ph"] == "b" and e["cat"] == "block"}
    assert set(bios) == {"bio:1", "bio:2", "bio:3"}
    assert all(b["pid"] == pid_of["sda"] for b in bios.values())
    assert round(bios["bio:1"]["ts"] * 1000) == 2000  # from block_bio_queue, not the issue
    (throttle,) = [e for e in events if e["ph"] == "X" and e["name"] == "io.latency throttle"]
    assert (round(throttle["ts"] * 1000), round(throttle["dur"] * 1000)) == (2000, 1000)
    assert [e["name"] for e in events if e["ph"] == "X" and e["name"] == "io.latency delay"] == ["io.latency delay"]
    # One arrow: bio 1 was queued inside a fault, bio 3 outside any.
    assert sorted((e["ph"], e["id"]) for e in events if e["ph"] in "sf") == [("f", "bio:1"), ("s", "bio:1")]
    (inversion,) = [e for e in events if e["ph"] == "X" and e["cat"] == "inversion"]
    assert (round(inversion["ts"] * 1000), round(inversion["dur"] * 1000)) == (2000, 1000)
    assert inversion["name"] == "throttle under mmap_sem"
    counters = [(e["name"], e["args"]) for e in events if e["ph"] == "C"]
    assert {e["pid"] for e in events if e["ph"] == "C" and e["name"].startswith("io.latency")} == {pid_of["sda"]}
    assert ("io.latency batch", {"depth": 1, "use_delay": 0}) in counters
    assert ("io.latency batch", {"depth": 32, "use_delay": 0}) in counters  # UINT_MAX drawn as the queue depth
    assert ("mmap_sem waiters app", {"waiters": 1}) in counters


def test_perfetto_closes_unfinished_slices_at_the_end() -> None:
    """Slices the horizon cut off end at the last record and say so."""
    events = orjson.loads(to_perfetto(_records()).to_json())["traceEvents"]
    unfinished = [e for e in events if e.get("args", {}).get("unfinished")]
    assert {e["cat"] for e in unfinished} == {"fault", "mmap_sem", "block"}
    assert all(round((e["ts"] + e.get("dur", 0)) * 1000) <= 9000 for e in events if e["ph"] == "X")


def test_perfetto_is_a_pure_function_of_the_records() -> None:
    """The same records give the same bytes."""
    assert to_perfetto(_records()).to_json() == to_perfetto(_records()).to_json()


def test_streamed_timeline_has_the_same_bytes(tmp_path: pathlib.Path) -> None:
    """``emu run`` streams trace.perfetto.json to disk; it must equal the in-memory rendering."""
    path = tmp_path / "trace.perfetto.json"
    with open(path, "wb") as stream:
        streamed = to_perfetto(_records(), depth_cap=32, out=PerfettoTrace(stream))
        streamed.close()
    assert not streamed.events
    assert path.read_bytes() == to_perfetto(_records(), depth_cap=32).to_json()


# -- with the real model -----------------------------------------------------------


@pytest.fixture
def tiny_result(tmp_path: pathlib.Path):
    """The tiny experiment, run under two policies."""
    from actors.lab.config import load_config
    from actors.lab.experiment import run_experiment

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return run_experiment(load_config(path))


def test_write_run_dir_layout(tmp_path: pathlib.Path, tiny_result) -> None:
    """The run directory holds results, the config copy, replay info and both traces per policy."""
    out = tmp_path / "runs" / "tiny"
    assert write_run_dir(out, tiny_result, plots=False) == []
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [
        "config.toml", "replay.json", "results.json",
        "v4.19/trace.jsonl", "v4.19/trace.perfetto.json.gz", "v5.1/trace.jsonl", "v5.1/trace.perfetto.json.gz",
    ]  # fmt: skip
    assert (out / "config.toml").read_text() == TINY
    assert orjson.loads((out / "replay.json").read_bytes()) == {
        "config": str((tmp_path / "tiny.toml").resolve()), "config_copy": "config.toml", "policies": ["v4.19", "v5.1"], "seed": 3, "tie_seed": None,
    }  # fmt: skip
    assert orjson.loads((out / "results.json").read_bytes()) == tiny_result.to_json()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # no temporary left behind


def test_real_trace_perfetto_structure(tmp_path: pathlib.Path, tiny_result) -> None:
    """A real run's timeline is well formed and has faults, holds and bios."""
    out = tmp_path / "out"
    write_run_dir(out, tiny_result, plots=False)
    for run in tiny_result.runs:
        doc = orjson.loads(gzip.decompress((out / run.policy / "trace.perfetto.json.gz").read_bytes()))
        grouped = check_perfetto_structure(doc)
        cats = {e.get("cat") for e in grouped["events"]}
        assert {"fault", "mmap_sem", "block"} <= cats


def test_perfetto_file_carries_metadata_and_the_kernels_ids(tmp_path: pathlib.Path, tiny_result) -> None:
    """The Perfetto file names what it is of (policy, seed, config digest) and uses trace.jsonl's pids as tids."""
    out = tmp_path / "out"
    write_run_dir(out, tiny_result, plots=False)
    run = tiny_result.runs[0]
    doc = orjson.loads(gzip.decompress((out / run.policy / "trace.perfetto.json.gz").read_bytes()))
    meta = doc["otherData"]
    assert (meta["policy"], meta["seed"], meta["config_sha256"], meta["trace_digest"]) == (
        run.policy, 3, tiny_result.config_sha256, run.results["trace_digest"],
    )  # fmt: skip
    threads = {e["args"]["name"]: (e["pid"], e["tid"]) for e in doc["traceEvents"] if e["name"] == "thread_name"}
    for actor, (tgid, pid) in run.tasks.items():
        if actor in threads:
            assert threads[actor] == (tgid, pid), actor
    assert threads["app.toucher"] == run.tasks["app.toucher"]
    recorded = {r["comm"]: r["pid"] for r in run.trace.records() if "comm" in r and "pid" in r}
    assert recorded and all(threads[comm][1] == pid for comm, pid in recorded.items())


def test_perfetto_slice_names_carry_no_ids() -> None:
    """Slice names are a small fixed set (bio ids live in args), so Perfetto can group by name."""
    events = orjson.loads(to_perfetto(_records(), depth_cap=32).to_json())["traceEvents"]
    names = {e["name"] for e in events if e["ph"] in ("X", "b")}
    assert not any(any(ch.isdigit() for ch in name.replace("io.latency", "")) for name in names), names
    completions = [e for e in events if e["name"] == "bio complete"]
    assert completions and all("bio" in e["args"] for e in completions)


def test_trace_files_can_be_plain_windowed_or_left_out(tmp_path: pathlib.Path, tiny_result) -> None:
    """``perfetto="json"`` writes it plain, ``"none"`` not at all, ``jsonl=False`` no trace.jsonl; a window trims it; trace.jsonl never changes."""
    write_run_dir(tmp_path / "gz", tiny_result, plots=False)
    write_run_dir(tmp_path / "plain", tiny_result, plots=False, traces=TraceFiles(perfetto="json"))
    write_run_dir(tmp_path / "none", tiny_result, plots=False, traces=TraceFiles(jsonl=False, perfetto="none"))
    write_run_dir(tmp_path / "win", tiny_result, plots=False, traces=TraceFiles(perfetto="json", window=(0, 100_000)))
    plain = (tmp_path / "plain" / "v4.19" / "trace.perfetto.json").read_bytes()
    assert gzip.decompress((tmp_path / "gz" / "v4.19" / "trace.perfetto.json.gz").read_bytes()) == plain
    assert sorted(p.name for p in (tmp_path / "none" / "v4.19").iterdir()) == []
    assert (tmp_path / "win" / "v4.19" / "trace.jsonl").read_bytes() == (tmp_path / "gz" / "v4.19" / "trace.jsonl").read_bytes()
    windowed = orjson.loads((tmp_path / "win" / "v4.19" / "trace.perfetto.json").read_bytes())
    slices = [e for e in windowed["traceEvents"] if e["ph"] == "X"]
    assert slices and all(e["ts"] <= 100 for e in slices)  # microseconds
    assert len(windowed["traceEvents"]) < len(orjson.loads(plain)["traceEvents"])
    assert windowed["otherData"]["window_ns"] == [0, 100_000]
    again = tmp_path / "again"
    write_run_dir(again, tiny_result, plots=False)
    assert (again / "v4.19" / "trace.perfetto.json.gz").read_bytes() == (tmp_path / "gz" / "v4.19" / "trace.perfetto.json.gz").read_bytes()


def test_write_run_dir_refuses_non_empty_dir(tmp_path: pathlib.Path, tiny_result) -> None:
    """A non-empty directory that is not a run directory is kept, even when forced."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep")
    for force in (False, True):
        with pytest.raises(OutputError, match="not a run directory"):
            write_run_dir(out, tiny_result, plots=False, force=force)
        assert sorted(p.name for p in out.iterdir()) == ["precious"]


def test_write_run_dir_replaces_a_run_directory(tmp_path: pathlib.Path, tiny_result) -> None:
    """A previous run of the same experiment is replaced whole; another experiment's only when forced."""
    out = tmp_path / "out"
    write_run_dir(out, tiny_result, plots=False)
    (out / "v4.19" / "stale").write_text("from the old run")
    assert check_out_dir(out, force=False, experiment="tiny") == f"the previous tiny run in {out}"
    write_run_dir(out, tiny_result, plots=False)
    assert not (out / "v4.19" / "stale").exists() and (out / "results.json").exists()
    with pytest.raises(OutputError, match="holds a run of 'tiny', not of 'other'"):
        check_out_dir(out, force=False, experiment="other")
    assert check_out_dir(out, force=True, experiment="other") == f"the tiny run in {out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.toml"]


def test_incomplete_directory_is_not_a_run(tmp_path: pathlib.Path, tiny_result) -> None:
    """A directory still marked INCOMPLETE (a killed writer's temporary) is refused by report and replaced only with force."""
    out = tmp_path / "out"
    write_run_dir(out, tiny_result, plots=False)
    (out / INCOMPLETE).write_text("")
    with pytest.raises(RunDirError, match="incomplete run directory"):
        load_run_dir(out)
    with pytest.raises(OutputError, match="incomplete run .*--force"):
        check_out_dir(out, force=False, experiment="tiny")
    write_run_dir(out, tiny_result, plots=False, force=True)
    assert not (out / INCOMPLETE).exists()
    load_run_dir(out)


def test_two_claims_on_one_out_dir(tmp_path: pathlib.Path) -> None:
    """Only one ``OutDirClaim`` holds a directory at a time; it creates the parents and removes them (and its lock) if unused."""
    out = tmp_path / "a" / "b" / "out"
    with OutDirClaim(out, force=False, experiment="tiny") as claim:
        assert claim.lock_path.exists()
        with pytest.raises(OutputError, match="another emu run is writing it"):
            OutDirClaim(out, force=False, experiment="tiny").__enter__()
    assert list(tmp_path.iterdir()) == []
    with OutDirClaim(out, force=False, experiment="tiny"):
        pass  # released: a new claim succeeds


def test_write_failure_is_one_output_error(tmp_path: pathlib.Path, tiny_result, monkeypatch) -> None:
    """An OSError while writing (disk full) is an OutputError naming DIR, and nothing is left behind."""
    import errno

    import actors.lab.output

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(actors.lab.output, "_write_contents", full)
    with pytest.raises(OutputError, match="writing failed: No space left on device"):
        write_run_dir(tmp_path / "out", tiny_result, plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_write_run_dir_leaves_nothing_when_it_fails(tmp_path: pathlib.Path, tiny_result, monkeypatch) -> None:
    """A failure half way through leaves neither the directory nor a temporary."""
    import actors.lab.policy_files

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(actors.lab.policy_files, "to_perfetto", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_run_dir(tmp_path / "out", tiny_result, plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def _fake_plots(calls: list, *, broken: bool = False):
    """An ``actors.lab.plots`` stand-in recording what it was asked to draw (or raising, if *broken*)."""
    import types

    def write_plots(run_dir: pathlib.Path, result, *, timelines: bool = True) -> None:
        if broken:
            raise ValueError("no data to plot")
        calls.append(("cdfs", result, timelines))
        (pathlib.Path(run_dir) / "latency_cdf.png").write_bytes(b"png")

    def write_timeline(run_dir: pathlib.Path, runs: list, index: int, *, intervals=None) -> None:
        if broken:
            raise ValueError("no intervals")
        calls.append(("timeline", runs[index], index, intervals))
        (pathlib.Path(run_dir) / f"timeline-{index}.png").write_bytes(b"png")

    return types.SimpleNamespace(
        write_plots=write_plots,
        write_timeline=write_timeline,
        plot_runs=lambda result: list(result.runs),
    )


@pytest.mark.parametrize("jobs", [1, 2])
def test_plots_are_written_into_the_run_dir_when_available(tmp_path: pathlib.Path, tiny_result, monkeypatch, jobs: int) -> None:
    """The CDFs (``write_plots`` without timelines) and each policy's timeline are drawn inside the directory before it appears, in this process or in forked writers."""
    import sys

    calls: list = []
    monkeypatch.setitem(sys.modules, "actors.lab.plots", _fake_plots(calls))
    assert write_run_dir(tmp_path / "out", tiny_result, plots=True, jobs=jobs) == []
    assert ("cdfs", tiny_result, False) in calls and (tmp_path / "out" / "latency_cdf.png").exists()
    assert all((tmp_path / "out" / f"timeline-{i}.png").exists() for i in range(len(tiny_result.runs)))
    # The timeline draws from the intervals worked out from the records decoded once for it and the Perfetto file.
    assert all(call[3] and "app.toucher" in call[3] for call in calls if call[0] == "timeline")
    assert jobs > 1 or sum(call[0] == "timeline" for call in calls) == len(tiny_result.runs)


@pytest.mark.parametrize("jobs", [1, 2])
def test_broken_plots_cost_a_warning_not_the_run(tmp_path: pathlib.Path, tiny_result, monkeypatch, jobs: int) -> None:
    """A plot writer that raises leaves the results in place and returns a warning: one per timeline, one for the CDFs."""
    import sys

    monkeypatch.setitem(sys.modules, "actors.lab.plots", _fake_plots([], broken=True))
    warnings = write_run_dir(tmp_path / "out", tiny_result, plots=True, jobs=jobs)
    assert len(warnings) == len(tiny_result.runs) + 1 and "no data to plot" in warnings[-1]
    assert all("no intervals" in w for w in warnings[:-1]) and (tmp_path / "out" / "results.json").exists()


def test_outputs_are_written_inside_a_frozen_heap(tmp_path: pathlib.Path, tiny_result, monkeypatch) -> None:
    """The files are written with the set-up heap frozen and young collections rarer; the collector's settings come back after."""
    import gc

    import actors.lab.output
    from emu.gcheap import RUN_THRESHOLD

    seen = []
    write_files = actors.lab.output._write_files

    def spy(*args, **kwargs):
        seen.append((gc.get_freeze_count() > 0, gc.get_threshold()))
        return write_files(*args, **kwargs)

    monkeypatch.setattr(actors.lab.output, "_write_files", spy)
    before = gc.get_threshold()
    assert write_run_dir(tmp_path / "out", tiny_result, plots=False) == []
    assert seen == [(True, RUN_THRESHOLD)] and gc.get_threshold() == before
    assert (tmp_path / "out" / "results.json").is_file()
