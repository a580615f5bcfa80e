"""Fault injection (actors/inject.py) and the racing ops (truncate, mmap of a mapping, mprotect prot).

What fault injection must show: injected EIO gives SIGBUS for the faulting task and
leaves every other task running; injected ENOSPC gives SIGBUS on the write
fault; nothing else is lost (invariants clean). Each behaviour test runs a
small config to completion (iterations bounded) under every policy it
concerns. The hook tests build a machine without running it and call the
callables the injector supplies to the modules' injection points
(``BlockDevice.bio_error``, ``BtrfsSpaceInfo.reserve_fail``) directly; the points
themselves are tested in tests/actors/block/test_blkdev.py and
tests/actors/fs/test_btrfs.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.block.bio import Bio
from actors.kernel import Kernel
from actors.kernel_types import ReqFlag, ReqOp
from actors.lab.config import ExperimentConfig, config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from emu import Engine, Trace
from emu.testing import records

POLICIES = ["v4.19", "v3", "v5.1"]


def _config(processes: list[dict[str, Any]], *, files: list[dict[str, Any]], inject: dict[str, Any] | None = None, **top: Any) -> ExperimentConfig:
    data = {
        "name": "inject",
        "horizon": top.pop("horizon", "2s"),
        "device": {"latency": "200us", "jitter_pct": 0},
        "writeback": top.pop("writeback", {"interval": "5ms"}),
        "files": files,
        "processes": processes,
        **top,
    }
    if inject is not None:
        data["inject"] = inject
    return config_from_dict(data)


def _touch(mapping: str, *, pages: int = 8, write: bool = False, pattern: str = "sequential") -> dict[str, Any]:
    return {"op": "touch", "mapping": mapping, "pattern": pattern, "pages": pages, "write": write}


def _thread(name: str, program: list[dict[str, Any]], iterations: int = 4, start: str | int = 0) -> dict[str, Any]:
    return {"name": name, "iterations": iterations, "start": start, "program": program}


def _violations(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results["invariants"]["violations"]


def _unexpected(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Violations other than V3's own retry defect (docs/DESIGN.md D2, B19), which V3 shows with or
    without injection; every other policy must have none at all."""
    allowed = {"io_under_mmap_sem_on_retry"} if results["policy"] == "v3" else set()
    return [v for v in _violations(results) if v["invariant"] not in allowed]


def _latency_count(results: dict[str, Any], key: str) -> int:
    return results["latency"].get(key, {}).get("count", 0)


def _killed(kernel: Kernel) -> dict[str, str | None]:
    return {task.comm: task.killed_by for task in kernel.tasks if task.mm is not None}


def _run_machine(config: ExperimentConfig, policy: str) -> tuple[Kernel, Any]:
    engine = Engine(seed=config.seed, horizon_ns=config.horizon, trace=Trace(keep=False))
    kernel = Kernel(engine, config, resolve_policy(config, policy))
    stats = engine.run()
    return kernel, stats


# -- the hooks the injector supplies ---------------------------------------------------------


def _hooks_config(**inject: Any) -> ExperimentConfig:
    return _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "data", "writable": True}],
          "threads": [_thread("t", [_touch("m", pages=1)], iterations=1)]}],
        files=[{"name": "data", "size": "1MiB", "cached": 1.0}, {"name": "db", "size": "1MiB", "fs": "btrfs", "cached": 1.0}],
        inject=inject or None,
    )  # fmt: skip


def _machine(config: ExperimentConfig, policy: str = "v5.1") -> Kernel:
    engine = Engine(seed=config.seed, horizon_ns=config.horizon)
    return Kernel(engine, config, resolve_policy(config, policy))


def _bio(kernel: Kernel, op: ReqOp, file: str = "data", flags: int = 0, submitter: str = "app.t") -> Bio:
    page = kernel.inodes[file].i_mapping.pages[0]
    return Bio(bio_id=kernel.next_bio_id(), op=op, flags=flags, pages=[page], submitter=submitter)


@pytest.mark.parametrize(
    ("inject", "bio_error", "reserve_fail"),
    [
        ({}, False, False),
        ({"read_error": 0.0, "enospc": 0.0}, False, False),
        ({"read_error": 0.5}, True, False),
        ({"write_error": 0.5}, True, False),
        ({"enospc": 0.5}, False, True),
        ({"sigkill_every": "1s"}, False, False),
    ],
)
def test_kernel_wires_the_injection_points_only_for_families_that_are_on(
    inject: dict[str, Any], bio_error: bool, reserve_fail: bool
) -> None:
    """``BlockDevice.bio_error`` and ``BtrfsSpaceInfo.reserve_fail`` get the injector's callables only when a
    family that uses them has a non-zero probability; otherwise they stay ``None``."""
    kernel = _machine(_hooks_config(**inject))
    assert (kernel.bdev.bio_error is not None, kernel.filesystems["btrfs"].space.reserve_fail is not None) == (bio_error, reserve_fail)
    if bio_error:
        assert kernel.bdev.bio_error == kernel.inject.bio_error
    if reserve_fail:
        assert kernel.filesystems["btrfs"].space.reserve_fail == kernel.inject.reserve_fail


def test_bio_error_fails_each_direction_by_its_own_family_and_stream() -> None:
    """With only ``write_error`` on, a WRITE bio of a matching file fails (counted) and a READ bio
    neither fails nor draws from the ``read_error`` stream; REQ_META bios and other files never fail."""
    kernel = _machine(_hooks_config(write_error=1.0, files="data"))
    inject = kernel.inject
    streams = kernel.engine.streams
    read_state = streams.get("inject", "read_error").getstate()
    assert inject.bio_error(_bio(kernel, ReqOp.READ)) is False
    assert streams.get("inject", "read_error").getstate() == read_state
    assert inject.bio_error(_bio(kernel, ReqOp.WRITE)) is True
    assert kernel.counters["inject_write_errors"] == 1
    write_state = streams.get("inject", "write_error").getstate()
    assert inject.bio_error(_bio(kernel, ReqOp.WRITE, flags=ReqFlag.META)) is False
    assert inject.bio_error(_bio(kernel, ReqOp.WRITE, file="db")) is False
    assert streams.get("inject", "write_error").getstate() == write_state  # filtered before the draw
    assert kernel.counters["inject_write_errors"] == 1


def test_bio_error_fails_reads_of_matching_tasks_and_marks_the_file() -> None:
    """``read_error`` applies to READ bios submitted by a task matching ``tasks``; a hit bumps the
    inode's ``error_seq`` (the invariants see the error) and counts ``inject_read_errors``."""
    kernel = _machine(_hooks_config(read_error=1.0, tasks="app.*"))
    inode = kernel.inodes["data"]
    before = inode.error_seq
    assert kernel.inject.bio_error(_bio(kernel, ReqOp.READ, submitter="other.t")) is False
    assert kernel.inject.bio_error(_bio(kernel, ReqOp.WRITE)) is False  # write_error is off
    assert kernel.inject.bio_error(_bio(kernel, ReqOp.READ)) is True
    assert inode.error_seq == before + 1 and kernel.counters["inject_read_errors"] == 1


def test_reserve_fail_matches_tasks_and_traces_the_injection() -> None:
    """``reserve_fail`` fails the reservations of matching tasks only, counting and tracing each."""
    kernel = _machine(_hooks_config(enospc=1.0, tasks="app.t"))
    task = next(t for t in kernel.tasks if t.comm == "app.t")
    other = next(t for t in kernel.tasks if t.comm != "app.t")
    assert kernel.inject.reserve_fail(other, 4096) is False
    assert kernel.counters["inject_enospc"] == 0
    assert kernel.inject.reserve_fail(task, 4096) is True
    assert kernel.counters["inject_enospc"] == 1
    (event,) = [r for r in records(kernel.engine) if r["event"] == "inject_enospc"]
    assert (event["comm"], event["bytes"]) == ("app.t", 4096)


# -- EIO ---------------------------------------------------------------------------------


def _eio_config(read_error: float | None = 1.0) -> ExperimentConfig:
    return _config(
        [
            {
                "name": "app",
                "mappings": [{"name": "m", "file": "data"}, {"name": "o", "file": "other"}],
                "threads": [
                    _thread("victim", [_touch("m")]),
                    _thread("sibling", [_touch("o"), {"op": "think", "time": "1ms"}]),
                ],
            },
            {"name": "bystander", "mappings": [{"name": "m", "file": "data"}],
             "threads": [_thread("reader", [_touch("m", pages=4), {"op": "think", "time": "1ms"}], start="30ms")]},
        ],
        files=[{"name": "data", "size": "4MiB"}, {"name": "other", "size": "4MiB"}],
        inject=None if read_error is None else {"read_error": read_error, "tasks": "app.victim", "files": "data"},
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_injected_eio_gives_sigbus_to_the_faulting_task_only(policy: str) -> None:
    """Every read the victim submits fails: its fault re-reads the !uptodate page, then SIGBUS.
    Its sibling thread (same mm) and another process reading the same file run every iteration."""
    config = _eio_config()
    kernel, stats = _run_machine(config, policy)
    assert stats.reason == "finished"
    killed = _killed(kernel)
    assert killed == {"app.victim": "SIGBUS", "app.sibling": None, "bystander.reader": None}
    assert kernel.counters["sigbus_delivered"] == 1
    assert kernel.counters["inject_read_errors"] >= 1
    assert kernel.counters["eio_reread"] >= 1  # the page_not_uptodate re-read path ran
    results = run_policy(config, policy, keep_trace=False).results
    assert _latency_count(results, "sibling/touch") == 4
    assert _latency_count(results, "reader/touch") == 4
    assert _unexpected(results) == []


def test_eio_probability_zero_changes_nothing() -> None:
    """An [inject] table with all probabilities 0 gives the same trace as none at all."""
    with_table = _eio_config(read_error=0.0)
    without = _eio_config(read_error=None)
    a = run_policy(with_table, "v5.1").results
    b = run_policy(without, "v5.1").results
    assert a["trace_digest"] == b["trace_digest"]
    assert _violations(a) == []


# -- ENOSPC -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_injected_enospc_gives_sigbus_on_the_write_fault(policy: str) -> None:
    """btrfs's reservation fails for the writer: its write fault gets SIGBUS (V3 first re-takes
    the dropped sem, defect 9); a reader of the same btrfs file is untouched; invariants clean."""
    config = _config(
        [{
            "name": "db",
            "mappings": [{"name": "m", "file": "db", "writable": True}],
            "threads": [
                _thread("writer", [_touch("m", pages=2, write=True)]),
                _thread("reader", [_touch("m", pages=4), {"op": "think", "time": "1ms"}]),
            ],
        }],
        files=[{"name": "db", "size": "4MiB", "fs": "btrfs", "cached": 1.0}],
        inject={"enospc": 1.0, "tasks": "db.writer"},
    )  # fmt: skip
    kernel, stats = _run_machine(config, policy)
    assert stats.reason == "finished"
    assert _killed(kernel) == {"db.writer": "SIGBUS", "db.reader": None}
    assert kernel.counters["inject_enospc"] == 1
    assert kernel.counters["sigbus_delivered"] == 1
    if policy == "v3":
        assert kernel.counters["btrfs_mkwrite_retake_sem"] == 1
    results = run_policy(config, policy, keep_trace=False).results
    assert _latency_count(results, "reader/touch") == 4
    assert _unexpected(results) == []


# -- write errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fs", ["generic", "btrfs"])
def test_injected_write_errors_keep_the_data_dirty(fs: str) -> None:
    """Every writeback bio fails: the pages are re-dirtied, not lost (dirty_data_lost stays clean)."""
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f", "writable": True}],
          "threads": [_thread("writer", [_touch("m", pages=16, write=True), {"op": "think", "time": "10ms"}])]}],
        files=[{"name": "f", "size": "4MiB", "fs": fs, "cached": 1.0}],
        inject={"write_error": 1.0},
    )  # fmt: skip
    kernel, stats = _run_machine(config, "v5.1")
    assert kernel.counters["inject_write_errors"] >= 1 and kernel.counters["writeback_errors"] >= 1
    results = run_policy(config, "v5.1", keep_trace=False).results
    assert _violations(results) == []
    assert kernel.dirtied  # nothing could be written: every dirtied page is still tracked ...
    assert all(p.flags & 0x04 or p.flags & 0x08 for p in kernel.dirtied.values())  # ... and DIRTY or WRITEBACK


# -- SIGKILL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_injected_sigkill_ends_the_victim_only(policy: str) -> None:
    """A SIGKILL to a task faulting behind slow IO ends it (in its killable wait or on return to
    user); the other thread finishes; nothing leaks."""
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f"}],
          "threads": [_thread("victim", [_touch("m", pages=64, pattern="random")], iterations=50),
                      _thread("other", [{"op": "think", "time": "1ms"}], iterations=20)]}],
        files=[{"name": "f", "size": "64MiB"}],
        inject={"sigkill_every": "5ms", "tasks": "app.victim"},
        device={"latency": "2ms", "jitter_pct": 0},
    )  # fmt: skip
    kernel, stats = _run_machine(config, policy)
    assert stats.reason == "finished"
    assert kernel.counters["inject_sigkill"] == 1
    assert _killed(kernel) == {"app.victim": "SIGKILL", "app.other": None}
    assert _unexpected(run_policy(config, policy, keep_trace=False).results) == []


def test_sigkill_injection_is_seeded_and_reproducible() -> None:
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f"}],
          "threads": [_thread("a", [_touch("m", pattern="random")], iterations=30),
                      _thread("b", [_touch("m", pattern="random")], iterations=30)]}],
        files=[{"name": "f", "size": "16MiB"}],
        inject={"sigkill_every": "3ms", "sigkill_max": 2},
    )  # fmt: skip
    a = run_policy(config, "v5.1", seed=5).results
    b = run_policy(config, "v5.1", seed=5).results
    assert a["trace_digest"] == b["trace_digest"] and a["counters"]["inject_sigkill"] == 2


# -- racing ops: truncate, mmap of a named mapping, mprotect prot ---------------------------


def test_truncate_then_extend_drops_pages_and_ptes() -> None:
    """After truncate to 1 MiB and extend, the pages past 1 MiB are gone from the cache and from
    the page tables; a later touch reads them again."""
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f"}],
          "threads": [_thread("t", [_touch("m", pages=512),
                                    {"op": "truncate", "file": "f", "size": "1MiB", "extend": True}], iterations=1)]}],
        files=[{"name": "f", "size": "2MiB", "cached": 1.0}],
    )  # fmt: skip
    kernel, _stats = _run_machine(config, "v5.1")
    inode = kernel.inodes["f"]
    assert sorted(inode.i_mapping.pages) == list(range(256))
    assert inode.i_size == 2 * 1024 * 1024
    mm = kernel.mms["app"]
    vma = kernel.vmas[("app", "m")]
    assert sorted(a - vma.vm_start for a in mm.ptes) == list(range(256))
    assert inode.truncate_seq >= 2  # the invariants see that pages went away


@pytest.mark.parametrize("policy", POLICIES)
def test_racing_munmap_mmap_mprotect_truncate_keep_v51_clean(policy: str) -> None:
    """Faulters with signal handlers race munmap/mmap, mprotect r/rw and truncate-then-extend;
    the run ends and v4.19/v5.1 break no invariant."""
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f"}, {"name": "w", "file": "g", "writable": True}],
          "threads": [
              {**_thread("reader", [_touch("m", pages=8, pattern="random")], iterations=40), "handle_signals": True},
              {**_thread("writer", [_touch("w", pages=4, pattern="random", write=True)], iterations=40), "handle_signals": True},
              _thread("unmapper", [{"op": "think", "time": "1ms"}, {"op": "munmap", "mapping": "m"}, {"op": "mmap", "mapping": "m"}], iterations=20),
              _thread("protector", [{"op": "think", "time": "1ms"}, {"op": "mprotect", "mapping": "w", "prot": "r"},
                                    {"op": "mprotect", "mapping": "w", "prot": "rw"}], iterations=20),
              _thread("truncator", [{"op": "think", "time": "2ms"}, {"op": "truncate", "file": "f", "size": "1MiB", "hold": "100us"}], iterations=10),
          ]}],
        files=[{"name": "f", "size": "8MiB", "cached": 0.3}, {"name": "g", "size": "4MiB", "fs": "btrfs", "cached": 1.0}],
    )  # fmt: skip
    results = run_policy(config, policy, keep_trace=False).results
    assert results["end"] == "finished"
    assert results["counters"]["sigsegv_delivered"] + results["counters"].get("sigbus_delivered", 0) > 0  # the races happened
    if policy != "v3":
        assert _violations(results) == []


def test_mmap_op_recreates_an_unmapped_mapping_at_a_new_address() -> None:
    config = _config(
        [{"name": "app", "mappings": [{"name": "m", "file": "f"}],
          "threads": [_thread("t", [{"op": "munmap", "mapping": "m"}, {"op": "mmap", "mapping": "m"}, _touch("m", pages=1)], iterations=1)]}],
        files=[{"name": "f", "size": "1MiB", "cached": 1.0}],
    )  # fmt: skip
    engine = Engine(seed=1, horizon_ns=config.horizon, trace=Trace(keep=False))
    kernel = Kernel(engine, config, resolve_policy(config, "v5.1"))
    old = kernel.vmas[("app", "m")]
    engine.run()
    new = kernel.vmas[("app", "m")]
    assert old.freed and not new.freed and new.vm_start != old.vm_start
    assert new.vm_end - new.vm_start == 256 and len(kernel.mms["app"].ptes) >= 1


def test_mprotect_read_only_write_protects_ptes_and_write_faults_sigsegv() -> None:
    config = _config(
        [{"name": "app", "mappings": [{"name": "w", "file": "g", "writable": True}],
          "threads": [_thread("t", [_touch("w", pages=2, write=True), {"op": "mprotect", "mapping": "w", "prot": "r"},
                                    _touch("w", pages=1, write=True)], iterations=1)]}],
        files=[{"name": "g", "size": "1MiB", "cached": 1.0}],
    )  # fmt: skip
    kernel, _stats = _run_machine(config, "v5.1")
    assert _killed(kernel) == {"app.t": "SIGSEGV"}
    assert not any(kernel.mms["app"].ptes.pte_write(a) for a in kernel.mms["app"].ptes)
