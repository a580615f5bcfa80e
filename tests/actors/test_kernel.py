"""Tests for actors/kernel.py: the machine a config and a policy build.

The behaviour tests (tests/actors/arch, mm, sched, test_experiment.py) rely
on this wiring: replicas and their names, one mm per process, per-mapping
readahead and madvise, the initially cached fraction, and extra tasks
spawned into a built kernel.
"""

from __future__ import annotations

from actors.kernel import Kernel
from actors.kernel_types import PageFlag
from actors.lab.config import config_from_dict, resolve_policy
from actors.mm.mmap import VmFlag
from actors.sched.task import TaskStruct
from emu import Engine, Trace


def _kernel(policy: str = "v4.19") -> Kernel:
    config = config_from_dict(
        {
            "name": "wiring",
            "horizon": "10ms",
            "cgroups": [{"path": "batch"}],
            "files": [{"name": "f", "size": "64KiB", "cached": 0.5}],
            "processes": [
                {
                    "name": "b",
                    "count": 2,
                    "cgroup": "batch",
                    "mappings": [
                        {"name": "seq", "file": "f", "madvise": "sequential", "read_ahead_kb": 0},
                        {"name": "rw", "file": "f", "writable": True, "madvise": "random"},
                    ],
                    "threads": [
                        {"name": "t0", "iterations": 1, "program": [{"op": "think", "time": "1us"}]},
                        {"name": "t1", "iterations": 1, "program": [{"op": "think", "time": "1us"}]},
                    ],
                }
            ],
        }
    )
    return Kernel(Engine(seed=config.seed, horizon_ns=config.horizon, trace=Trace()), config, resolve_policy(config, policy))


def test_replicas_get_numbered_names_one_mm_each_and_shared_threads() -> None:
    """count = 2 builds b0 and b1, each with its own mm shared by its threads, in its cgroup."""
    kernel = _kernel()
    assert list(kernel.mms) == ["b0", "b1"]
    tasks = {task.comm: task for task in kernel.tasks if task.mm is not None}  # not the flusher kthread
    assert list(tasks) == ["b0.t0", "b0.t1", "b1.t0", "b1.t1"]
    assert tasks["b0.t0"].mm is tasks["b0.t1"].mm is kernel.mms["b0"] is not kernel.mms["b1"]
    assert tasks["b0.t0"].pid == tasks["b0.t0"].tgid == tasks["b0.t1"].tgid != tasks["b0.t1"].pid
    assert {task.blkcg for task in tasks.values()} == {"batch"}


def test_mappings_carry_readahead_madvise_and_protection() -> None:
    """read_ahead_kb sets the file's ra_pages; madvise sets VM_SEQ_READ/VM_RAND_READ; writable shared maps get VM_WRITE|VM_SHARED."""
    kernel = _kernel()
    seq, rw = kernel.vmas[("b0", "seq")], kernel.vmas[("b0", "rw")]
    assert seq.vm_file.f_ra.ra_pages == 0 and rw.vm_file.f_ra.ra_pages == 32
    assert seq.vm_flags & VmFlag.SEQ_READ and not seq.vm_flags & VmFlag.WRITE
    assert rw.vm_flags & VmFlag.RAND_READ and rw.vm_flags & (VmFlag.WRITE | VmFlag.SHARED) == VmFlag.WRITE | VmFlag.SHARED
    assert seq.vm_end - seq.vm_start == 16 and seq.vm_file.f_mapping is rw.vm_file.f_mapping
    assert seq.vm_file is not kernel.vmas[("b1", "seq")].vm_file  # each open file has its own f_ra


def test_cached_fraction_fills_the_page_cache_with_uptodate_pages() -> None:
    """cached = 0.5 of a 16-page file puts 8 uptodate, unlocked pages in its cache at start."""
    mapping = _kernel().inodes["f"].i_mapping
    assert mapping.nrpages == len(mapping.pages) == 8
    assert all(page.flags == PageFlag.UPTODATE and page.refcount == 1 for page in mapping.pages.values())


def test_spawned_task_runs_in_the_kernel_engine() -> None:
    """spawn_task runs an extra task's coroutine in the same engine, alongside the config's threads."""
    kernel = _kernel()
    mm = kernel.mms["b1"]
    ran: list[int] = []

    async def body(current: TaskStruct) -> None:
        await current.actor.sleep(5)
        ran.append(current.actor.now_ns)

    task = kernel.spawn_task(TaskStruct(kernel, "b1.extra", "extra", 999, mm.pid, mm, "batch"), body)
    stats = kernel.engine.run()
    assert ran == [5] and task in kernel.tasks and task.actor.finished
    assert stats.reason == "finished"
