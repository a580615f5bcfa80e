"""Tests for actors/sched/task.py: the workload's return to user space, signals and accounting.

docs/DESIGN.md B15 (io.latency's
use_delay: readahead off for the group, induced delay paid on return to user
with no lock held) through the full model; ``send_sigkill`` and the
held-across-IO accounting on a hand-run kernel.
"""

from __future__ import annotations

import functools
from typing import Any

from actors.kernel import Kernel
from actors.lab.config import config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from actors.mm.mmap import down_read, up_read
from actors.sched.task import TaskStruct
from emu import Engine, Trace

MS = 1_000_000


@functools.cache
def _use_delay_run():
    """A protected reader always missing its 1 ms target; batch faulters on a MADV_SEQUENTIAL mapping."""
    config = config_from_dict(
        {
            "name": "use-delay",
            "seed": 1,
            "horizon": "2s",
            "device": {"nr_requests": 4, "latency": "1ms", "jitter_pct": 0},
            "cgroups": [{"path": "w"}, {"path": "w/prot", "io.latency": "target=1000"}, {"path": "w/batch"}],
            "files": [{"name": "data", "size": "1GiB"}],
            "processes": [
                {
                    "name": "service",
                    "cgroup": "w/prot",
                    "threads": [{"name": "reader", "program": [{"op": "io", "size": "4KiB"}, {"op": "think", "time": "1ms"}]}],
                },
                {
                    "name": "batch",
                    "count": 2,
                    "cgroup": "w/batch",
                    "mappings": [{"name": "data", "file": "data", "madvise": "sequential"}],
                    "threads": [{"name": "faulter", "program": [{"op": "touch", "mapping": "data", "pattern": "random"}]}],
                },
            ],
        }
    )
    return run_policy(config, "v5.1")


def test_behaviour_15_use_delay_disables_readahead_for_the_group() -> None:
    """Once io.latency sets use_delay on the batch group, its faults' readahead is skipped as blkcg-congested (and only then)."""
    records = list(_use_delay_run().trace.records())
    use_delay = [r for r in records if r["event"] == "iolatency_scale" and r["what"] == "use_delay" and r["blkcg"] == "w/batch"]
    assert use_delay and use_delay[0]["new"] == 1
    since = use_delay[0]["ts"]
    congested = [r for r in records if r["event"] == "mm_readahead_skipped" and r["why"] == "BLKCG_CONGESTED"]
    assert congested and min(r["ts"] for r in congested) >= since
    assert {r["actor"] for r in congested} <= {"batch0.faulter", "batch1.faulter"}
    batch_readahead = [r for r in records if r["event"] == "mm_readahead" and r["actor"].startswith("batch")]
    assert batch_readahead and max(r["ts"] for r in batch_readahead) <= since
    # The induced delay paid on return to user (min(delay, 250 ms), no lock held) needs
    # root-issued IO of the group; it is tested in tests/actors/block/test_blkdev.py
    # (test_return_to_user_pays_delay_capped_250ms) and return_to_user() asserts no mmap_sem is held.


def _idle_kernel(policy: str = "v4.19") -> Kernel:
    config = config_from_dict(
        {
            "name": "task",
            "horizon": "100ms",
            "processes": [{"name": "p", "threads": [{"name": "idle", "iterations": 1, "program": [{"op": "think", "time": "1us"}]}]}],
        }
    )
    return Kernel(Engine(seed=1, horizon_ns=config.horizon, trace=Trace()), config, resolve_policy(config, policy))


def test_send_sigkill_ends_a_killable_mmap_sem_wait() -> None:
    """send_sigkill wakes a task sleeping in down_read_killable with -EINTR, and the writer is unaffected."""
    kernel = _idle_kernel()
    mm = kernel.mms["p"]
    seen: dict[str, Any] = {}

    async def writer(current: TaskStruct) -> None:
        from actors.mm.mmap import down_write, up_write

        await down_write(current, mm)
        await current.actor.sleep(10 * MS)
        up_write(current, mm)
        seen["writer_done"] = current.actor.now_ns

    async def reader(current: TaskStruct) -> None:
        await current.actor.sleep(MS)
        seen["ret"] = await down_read(current, mm, killable=True)
        seen["at"] = current.actor.now_ns
        seen["held"] = list(current.mmap_sem_held)

    kernel.spawn_task(TaskStruct(kernel, "p.w", "w", 901, mm.pid, mm, ""), writer)
    victim = kernel.spawn_task(TaskStruct(kernel, "p.r", "r", 902, mm.pid, mm, ""), reader)
    kernel.engine.call_at(3 * MS, victim.send_sigkill)
    kernel.engine.run()
    assert seen["ret"] < 0 and seen["at"] == 3 * MS and seen["held"] == []
    assert seen["writer_done"] == 10 * MS
    assert victim.fatal_signal_pending()


def test_sleeps_while_holding_mmap_sem_are_counted_by_kind() -> None:
    """account_sleep counts io, throttle and fs sleeps each in its own held-across counter, only while an mmap_sem is held."""
    kernel = _idle_kernel()
    mm = kernel.mms["p"]

    async def body(current: TaskStruct) -> None:
        current.account_sleep("io", 5)  # no sem held
        current.account_sleep("fs", 3)
        await down_read(current, mm)
        current.account_sleep("io", 7)
        current.account_sleep("throttle", 11)
        current.account_sleep("fs", 13)
        current.account_sleep("fs", 2)
        current.account_sleep("mmap_sem", 17)  # waiting for a sem is not held across
        up_read(current, mm)

    kernel.spawn_task(TaskStruct(kernel, "p.t", "t", 901, mm.pid, mm, ""), body)
    kernel.engine.run()
    c = kernel.counters
    assert (c["mmap_sem_held_across_io"], c["mmap_sem_held_across_io_ns"]) == (1, 7)
    assert (c["mmap_sem_held_across_throttle"], c["mmap_sem_held_across_throttle_ns"]) == (1, 11)
    assert (c["mmap_sem_held_across_fs_sleep"], c["mmap_sem_held_across_fs_sleep_ns"]) == (2, 15)
    events = [r["event"] for r in kernel.engine.trace.records() if r["event"].startswith("mmap_sem_held_across")]
    assert events == ["mmap_sem_held_across_io", "mmap_sem_held_across_throttle"] + ["mmap_sem_held_across_fs_sleep"] * 2


def _iomax_config(mem_reader: bool) -> dict[str, Any]:
    """A batch process on an io.max-limited disk, faulting and mapping (a writer to queue); optionally a thread reading
    /proc/self/mem; a monitor reading its cmdline."""
    mapper = [{"op": "mmap", "length": "64KiB", "hold": "20us"}, {"op": "munmap", "hold": "20us"}, {"op": "think", "time": "5ms"}]
    batch_threads: list[dict[str, Any]] = [
        {"name": "faulter", "program": [{"op": "touch", "mapping": "data", "pattern": "random"}]},
        {"name": "mapper", "program": mapper},
    ]
    if mem_reader:
        read = {"op": "proc_read", "target": "self", "file": "mem", "target_mapping": "data", "pages": 1}
        batch_threads.append({"name": "memreader", "program": [read]})
    return {
        "name": "iomax-mem",
        "seed": 1,
        "horizon": "1s",
        "device": {"dev": "254:0", "jitter_pct": 0},
        "cgroups": [{"path": "batch", "io.max": "254:0 riops=50"}, {"path": "service"}],
        "files": [{"name": "data", "size": "1GiB"}],
        "processes": [
            {"name": "service", "cgroup": "service",
             "threads": [{"name": "monitor", "every": "5ms", "program": [{"op": "proc_read", "target": "batch", "file": "cmdline"}]}]},
            {"name": "batch", "cgroup": "batch", "mappings": [{"name": "data", "file": "data", "read_ahead_kb": 0}], "threads": batch_threads},
        ],
    }  # fmt: skip


def test_proc_pid_mem_faults_under_the_target_sem_and_io_max_never_sleeps_in_submit() -> None:
    """io.max holds the batch's bios without sleeping the submitter, so plain faults drop the sem for the wait;
    a /proc/self/mem reader's GUP fault has no ALLOW_RETRY and waits under the sem, which the monitor then waits for."""
    plain = run_policy(config_from_dict(_iomax_config(False)), "v6.1").results
    mem = run_policy(config_from_dict(_iomax_config(True)), "v6.1").results
    for run in (plain, mem):
        assert run["counters"]["throtl_queued_bios"] > 0
    assert plain["counters"]["mmap_sem_held_across_io"] == 0
    assert mem["counters"]["proc_mem_faults"] > 0
    assert mem["counters"]["mmap_sem_held_across_io"] >= mem["counters"]["proc_mem_faults"] // 2
    p99 = {name: run["latency"]["monitor/proc_read"]["p99_ns"] for name, run in (("plain", plain), ("mem", mem))}
    assert p99["mem"] >= 100 * p99["plain"]
