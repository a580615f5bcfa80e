"""Plots (actors.lab.plots): timeline intervals from trace records, window choice, CDF data, deterministic PNGs."""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import orjson
import pytest

from actors.lab.plots import (
    CDF_BINS_PER_DECADE,
    PlotRun,
    _decimated,
    cdf_points,
    default_window,
    focus_task,
    latency_cdf_figure,
    timeline_intervals,
    worst_stall,
    write_plots,
    zoom_window,
)
from actors.lab.rundir import load_run_dir

ROOT = pathlib.Path(__file__).resolve().parents[3]
MS = 1_000_000


def small_inversion(tmp_path: pathlib.Path) -> pathlib.Path:
    """seed-inversion shrunk to 700 ms: two batch processes, a 4-deep queue and a monitor every 5 ms, so v4.19 throttles under mmap_sem."""
    text = (ROOT / "configs" / "seed-inversion.toml").read_text()
    for old, new in (
        ('horizon = "4s"', 'horizon = "700ms"'),
        ("nr_requests = 32", "nr_requests = 4\nqueue_depth = 4"),  # 4.19 io.latency scales by the device depth
        ("count = 4", "count = 2"),
        ('every = "50ms"', 'every = "5ms"'),
        ('policies = ["v4.19", "v3", "v5.1"]', 'policies = ["v4.19", "v5.1"]'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "small-inversion.toml"
    path.write_text(text)
    return path


def _records() -> list[dict[str, Any]]:
    """A hand-written trace: a fault holding mmap_sem across a throttle and its IO, a writer and a reader queued behind."""
    rows = [
        (1000, "app.t0", "page_fault_user", {"address": 42, "write": False}),
        (1000, "app.t0", "mmap_lock_start_locking", {"mm": "app", "write": False, "waiters": 0}),
        (1500, "app.t0", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True}),
        (2000, "app.t0", "block_bio_queue", {"dev": "8:0", "bio": 1, "op": "READ"}),
        (2000, "app.t0", "rq_qos_throttle", {"dev": "8:0", "bio": 1}),
        (2500, "app.t1", "mmap_lock_start_locking", {"mm": "app", "write": True, "waiters": 0}),
        (2600, "mon.m", "mmap_lock_start_locking", {"mm": "app", "write": False, "waiters": 1}),
        (3000, "app.t0", "rq_qos_throttle_done", {"dev": "8:0", "bio": 1, "waited_ns": 1000}),
        (3000, "app.t0", "mmap_sem_held_across_throttle", {"kind": "throttle", "ns": 1000, "held": ["app:read"]}),
        (3000, "sda", "block_rq_issue", {"dev": "8:0", "bio": 1}),
        (3100, "flush", "block_bio_queue", {"dev": "8:0", "bio": 2, "op": "WRITE"}),
        (5000, "sda", "block_rq_complete", {"dev": "8:0", "bio": 1}),
        (5200, "app.t0", "mmap_sem_held_across_io", {"kind": "io", "ns": 200, "held": ["app:read"]}),
        (5500, "app.t0", "mmap_lock_released", {"mm": "app", "write": False}),
        (5500, "app.t1", "mmap_lock_acquire_returned", {"mm": "app", "write": True, "success": True}),
        (6000, "app.t0", "fault_done", {"address": 42, "major": True, "latency_ns": 5000}),
        (6000, "app.t0", "blkcg_maybe_throttle_current", {"dev": "8:0", "delay_ns": 700}),
        (7000, "app.t1", "mmap_lock_released", {"mm": "app", "write": True}),
        (7000, "mon.m", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True}),
        (7100, "mon.m", "mmap_lock_released", {"mm": "app", "write": False}),
        (8000, "app.t0", "page_fault_user", {"address": 43, "write": False}),
        (8000, "app.t0", "mmap_lock_acquire_returned", {"mm": "app", "write": False, "success": True, "trylock": True}),
        (8100, "app.t0", "block_bio_queue", {"dev": "8:0", "bio": 3, "op": "READ"}),
        (9000, "app.t0", "fault_done", {"address": 43, "major": False, "latency_ns": 1000}),
        (9500, "app.t2", "mmap_lock_start_locking", {"mm": "app", "write": True, "waiters": 1}),
    ]
    return [{"seq": i, "ts": ts, "actor": actor, "event": event, **fields} for i, (ts, actor, event, fields) in enumerate(rows)]


def test_timeline_intervals_from_tracepoints() -> None:
    """Holds, waits, throttles, the induced delay and IO waits come out of the records, per task actor."""
    iv = timeline_intervals(_records())
    assert list(iv) == ["app.t0", "app.t1", "app.t2", "mon.m"]  # kernel actors (sda, flush) are left out
    t0 = iv["app.t0"]
    assert t0["hold_read"] == [(1500, 5500), (8000, 9500)]  # the trylock hold at 8000 is closed by the end of the trace
    assert t0["mmap_sem_wait"] == [(1000, 1500)]
    assert t0["throttle"] == [(2000, 3000)]
    assert t0["delay"] == [(6000, 6700)]
    # bio 1 from queue to completion, minus the throttle, joined with the traced IO sleep under the sem;
    # bio 3 was never completed: its IO ends with its fault.
    assert t0["io"] == [(3000, 5200), (8100, 9000)]
    assert t0["fault"] == [(1000, 6000), (8000, 9000)]
    assert iv["app.t1"]["mmap_sem_wait"] == [(2500, 5500)] and iv["app.t1"]["hold_write"] == [(5500, 7000)]
    assert iv["mon.m"]["mmap_sem_wait"] == [(2600, 7000)] and iv["mon.m"]["hold_read"] == [(7000, 7100)]
    assert iv["app.t2"] == {}  # its wait began at the last record: a row, nothing drawn


def test_open_holds_close_at_the_last_record() -> None:
    """A hold still open when the trace ends is drawn up to the last record's time."""
    iv = timeline_intervals(_records())
    assert iv["app.t0"]["hold_read"] == [(1500, 5500), (8000, 9500)]


def test_worst_stall_merges_a_tasks_close_waits() -> None:
    """Waits of one task less than 100 us apart are one stall; the focus task's longest stall wins."""
    intervals = {
        "mon.m": {"mmap_sem_wait": [(0, 1 * MS), (1 * MS + 50_000, 3 * MS), (10 * MS, 11 * MS)]},
        "app.t0": {"throttle": [(20 * MS, 40 * MS)]},
    }
    assert worst_stall(intervals, "m") == (0, 3 * MS)
    assert worst_stall(intervals, "t0") == (20 * MS, 40 * MS)
    assert worst_stall(intervals, "nobody") == (20 * MS, 40 * MS)  # falls back to every task
    assert worst_stall({}, "m") is None


def test_worst_stall_does_not_merge_back_to_back_ops() -> None:
    """A loop's waits on the same mm (mmap, then munmap) and one fault after another are separate stalls."""
    records = []
    for i in range(20):  # a looper: wait 9 ms for write, hold 3 us, release, again
        t = i * (9 * MS + 3_000)
        records += [
            {"ts": t, "actor": "p.looper", "event": "mmap_lock_start_locking", "mm": "p", "write": True},
            {"ts": t + 9 * MS, "actor": "p.looper", "event": "mmap_lock_acquire_returned", "mm": "p", "write": True, "success": True},
            {"ts": t + 9 * MS + 3_000, "actor": "p.looper", "event": "mmap_lock_released", "mm": "p", "write": True},
        ]
    for i in range(20):  # a reader: one 9 ms fault after another
        t = i * (9 * MS + 1_000)
        records += [
            {"ts": t, "actor": "p.reader", "event": "page_fault_user"},
            {"ts": t + 9 * MS, "actor": "p.reader", "event": "fault_done", "latency_ns": 9 * MS},
        ]
    for j, mm in enumerate(("a", "b", "c", "d")):  # one /proc read walking four mms: one stall
        t = 500 * MS + j * (2 * MS + 5_000)
        records += [
            {"ts": t, "actor": "s.mon", "event": "mmap_lock_start_locking", "mm": mm, "write": False},
            {"ts": t + 2 * MS, "actor": "s.mon", "event": "mmap_lock_acquire_returned", "mm": mm, "write": False, "success": True},
            {"ts": t + 2 * MS + 5_000, "actor": "s.mon", "event": "mmap_lock_released", "mm": mm, "write": False},
        ]
    records.sort(key=lambda r: r["ts"])
    intervals = timeline_intervals(records)
    looper = worst_stall(intervals, "looper")
    assert looper is not None and looper[1] - looper[0] == 9 * MS
    reader = worst_stall(intervals, "reader")
    assert reader is not None and reader[1] - reader[0] == 9 * MS
    assert worst_stall(intervals, "mon") == (500 * MS, 500 * MS + 4 * 2 * MS + 3 * 5_000)


def test_default_window_is_200ms_around_the_stall_inside_the_run() -> None:
    """The window is 200 ms centred on the worst stall, shifted to stay inside the run, widened for a longer stall."""
    mid = {"mon.m": {"mmap_sem_wait": [(500 * MS, 504 * MS)]}}
    assert default_window(mid, "m", 4000 * MS) == (402 * MS, 602 * MS)
    early = {"mon.m": {"mmap_sem_wait": [(10 * MS, 14 * MS)]}}
    assert default_window(early, "m", 4000 * MS) == (0, 200 * MS)
    late = {"mon.m": {"mmap_sem_wait": [(3990 * MS, 3995 * MS)]}}
    assert default_window(late, "m", 4000 * MS) == (3800 * MS, 4000 * MS)
    long = {"mon.m": {"mmap_sem_wait": [(1000 * MS, 1400 * MS)]}}
    assert default_window(long, "m", 4000 * MS) == (980 * MS, 1420 * MS)
    assert default_window({}, None, 50 * MS) == (0, 50 * MS)
    assert zoom_window((100 * MS, 104 * MS), (0, 200 * MS)) == (98 * MS, 106 * MS)


def test_focus_is_the_proc_reader_if_it_stalls_else_the_worst_op() -> None:
    """The timeline centres on the task reading /proc when a read stalled (1 ms or more); else on the task with the worst op latency."""
    lat = {"count": 1, "min_ns": 1, "p50_ns": 1, "p90_ns": 1, "p99_ns": 1, "p999_ns": 1}
    runs = [{"latency": {"a/touch": {**lat, "max_ns": 9 * MS}, "mon/proc_read": {**lat, "max_ns": 2 * MS}}}]
    assert focus_task(runs) == "mon"
    runs = [{"latency": {"a/touch": {**lat, "max_ns": 9 * MS}, "mon/proc_read": {**lat, "max_ns": 10_000}}}]
    assert focus_task(runs) == "a"  # the monitor never stalls: show who does
    runs = [{"latency": {"a/touch": {**lat, "max_ns": 9}, "b/mmap": {**lat, "max_ns": 20}, "b/think": {**lat, "max_ns": 99}}}]
    assert focus_task(runs) == "b"


def test_cdf_points_exact_from_samples_or_stepped_from_percentiles() -> None:
    """With samples the CDF is exact; without, it steps through results.json's percentiles and says so."""
    lat = {"count": 4, "min_ns": 0, "p50_ns": 20, "p90_ns": 30, "p99_ns": 40, "p999_ns": 40, "max_ns": 40, "mean_ns": 22}
    exact = PlotRun(policy="p", results={"latency": {"a/x": lat}}, samples={"a/x": [40, 0, 30, 20]}, records=list)
    x, y, is_exact = cdf_points(exact, "a/x")
    assert is_exact and x.tolist() == [1, 20, 30, 40] and y.tolist() == [0.25, 0.5, 0.75, 1.0]  # 0 ns drawn at 1 ns (log axis)
    coarse = PlotRun(policy="p", results={"latency": {"a/x": lat}}, samples=None, records=list)
    x, y, is_exact = cdf_points(coarse, "a/x")
    assert not is_exact and x.tolist() == [1, 20, 30, 40, 40, 40] and np.isclose(y[-1], 1.0)
    assert cdf_points(coarse, "a/other") is None


# -- with the real model -----------------------------------------------------------


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory):
    """The small inversion, run under v4.19 and v5.1, kept in memory."""
    from actors.lab.config import load_config
    from actors.lab.experiment import run_experiment

    return run_experiment(load_config(small_inversion(tmp_path_factory.mktemp("cfg"))))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, experiment) -> pathlib.Path:
    """The experiment's run directory, written by ``write_run_dir`` with plots on (do not modify: copy it)."""
    from actors.lab.output import write_run_dir

    out = tmp_path_factory.mktemp("runs") / "small"
    assert write_run_dir(out, experiment, plots=True) == []
    return out


def _pngs(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}


def test_write_plots_draws_a_cdf_per_op_and_a_timeline_per_policy(run_dir: pathlib.Path, experiment) -> None:
    """A CDF per reported op, a timeline per policy and the raw samples per policy, as PNG files without a Software stamp."""
    assert sorted(_pngs(run_dir)) == [
        "latency-cdf-faulter-touch.png", "latency-cdf-mapper-mmap.png", "latency-cdf-mapper-munmap.png",
        "latency-cdf-monitor-proc_read.png", "latency-cdf-reader-io.png", "timeline-v4.19.png", "timeline-v5.1.png",
    ]  # fmt: skip
    for data in _pngs(run_dir).values():
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"matplotlib" not in data
    for run in experiment.runs:
        saved = orjson.loads((run_dir / run.policy / "latency-samples.json").read_bytes())
        assert saved["policy"] == run.policy and saved["samples"] == run.samples
        assert {k: len(v) for k, v in saved["samples"].items()} == {k: v["count"] for k, v in run.results["latency"].items()}


def test_plots_from_disk_equal_plots_from_memory(tmp_path: pathlib.Path, run_dir: pathlib.Path) -> None:
    """Redrawing from the run directory (traces read back, samples file) gives byte-identical PNGs."""
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    for png in out.glob("*.png"):
        png.unlink()
    write_plots(out, load_run_dir(out))
    assert _pngs(out) == _pngs(run_dir)


def test_timeline_window_can_be_chosen(tmp_path: pathlib.Path, run_dir: pathlib.Path) -> None:
    """An explicit window changes the timelines and leaves the CDFs alone."""
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    write_plots(out, load_run_dir(out), window=(100 * MS, 150 * MS))
    before, after = _pngs(run_dir), _pngs(out)
    assert after["timeline-v4.19.png"] != before["timeline-v4.19.png"]
    assert after["latency-cdf-faulter-touch.png"] == before["latency-cdf-faulter-touch.png"]


def test_real_timeline_shows_the_inversion(experiment) -> None:
    """Under v4.19 a faulter is throttled while holding mmap_sem for read; under v5.1 never."""
    held_and_throttled = {}
    for run in experiment.runs:
        iv = timeline_intervals(run.trace.records())
        overlap = 0
        for kinds in iv.values():
            for hs, he in kinds.get("hold_read", ()):
                overlap += sum(max(0, min(he, te) - max(hs, ts)) for ts, te in kinds.get("throttle", ()))
        held_and_throttled[run.policy] = overlap
    assert held_and_throttled["v4.19"] > 0 and held_and_throttled["v5.1"] == 0


def test_identical_policies_are_told_apart_on_the_cdf() -> None:
    """Two policies with the same samples: the second is dashed and its legend says whose curve it repeats."""
    lat = {"count": 3, "min_ns": 1, "p50_ns": 2, "p90_ns": 3, "p99_ns": 3, "p999_ns": 3, "max_ns": 3, "mean_ns": 2}
    runs = [PlotRun(policy=p, results={"latency": {"a/x": lat}}, samples={"a/x": [1, 2, 3]}, records=list) for p in ("v5.1", "v5.7")]
    figure = latency_cdf_figure("a/x", runs)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels[1].endswith("(identical to v5.1)") and "identical" not in labels[0]
    first, second = figure.axes[0].get_lines()
    assert first.get_linestyle() == "-" and second.get_linestyle() != "-"


def test_cdf_points_are_decimated_to_the_same_steps() -> None:
    """Of samples closer than a bin (1/1000 of a decade) the first and last of each run are drawn; each dropped one lies between two kept ones of its bin."""
    rng = np.random.default_rng(7)
    x = np.sort(np.maximum(rng.lognormal(10, 2, 20_000).astype(np.int64), 1))
    kept = _decimated(x)
    assert kept[0] == 0 and kept[-1] == x.size - 1 and np.all(np.diff(kept) > 0) and kept.size < x.size // 2
    bins = np.floor(np.log10(x) * CDF_BINS_PER_DECADE)
    for i in np.setdiff1d(np.arange(x.size), kept):
        before, after = kept[np.searchsorted(kept, i) - 1], kept[np.searchsorted(kept, i)]
        assert bins[before] == bins[i] == bins[after]
    assert list(_decimated(np.asarray([5, 5]))) == [0, 1] and list(_decimated(np.asarray([], dtype=np.int64))) == []
    assert list(_decimated(np.asarray([1, 10, 100]))) == [0, 1, 2]
