"""Tests for actors/arch/fault.py: the x86 user fault entry and its VM_FAULT_RETRY loop.

docs/DESIGN.md B5, B9, B10, B17 and B21 (per-VMA locks), through
a real ``Kernel`` built from small configs (``run_policy`` or a hand-run
engine when a test needs to reach into the machine).
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.kernel import Kernel
from actors.kernel_types import FaultFlag, VmFaultResult, vm_fault_t
from actors.lab.config import ExperimentConfig, config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from actors.mm.filemap_fault import filemap_fault
from actors.mm.memory import VmFault, VmOperations, handle_mm_fault, lock_vma_under_rcu, vm_fault_init, vmf_anon_prepare
from actors.mm.mmap import VmFlag, down_read, up_read, vma_end_read
from actors.sched.task import TaskStruct
from emu import Engine, Trace

MS = 1_000_000


def _thread(name: str, program: list[dict[str, Any]], start: str | int = 0) -> dict[str, Any]:
    return {"name": name, "iterations": 1, "start": start, "program": program}


def _touch(write: bool = False) -> dict[str, Any]:
    return {"op": "touch", "mapping": "m", "pattern": "sequential", "write": write}  # page 0


def _config(processes: list[dict[str, Any]], *, horizon: str = "100ms", cached: float = 0.0) -> ExperimentConfig:
    for process in processes:
        process.setdefault("mappings", [{"name": "m", "file": "f"}])
    return config_from_dict(
        {
            "name": "x86-fault",
            "horizon": horizon,
            "device": {"latency": "2ms", "jitter_pct": 0},
            "costs": {"scale": 0},  # these tests time the retry logic's waits, not CPU work
            "files": [{"name": "f", "size": "4MiB", "cached": cached}],
            "processes": processes,
        }
    )


def _machine(config: ExperimentConfig, policy: str) -> Kernel:
    engine = Engine(seed=config.seed, horizon_ns=config.horizon, trace=Trace())
    return Kernel(engine, config, resolve_policy(config, policy))


def _task(kernel: Kernel, comm: str) -> TaskStruct:
    return next(task for task in kernel.tasks if task.comm == comm)


def _of(records: list[dict[str, Any]], actor: str, event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["actor"] == actor and r["event"] == event]


# -- behaviour 5 ---------------------------------------------------------------------------


def test_behaviour_05_page_lock_wait_drops_sem_and_retry_queues_behind_writer() -> None:
    """4.19: a fault finding the page locked under IO drops the sem to wait, then re-takes it with a blocking down_read behind the writer and retries once without ALLOW_RETRY."""
    config = _config(
        [
            {"name": "p0", "threads": [_thread("reader", [_touch()])]},  # starts the page-0 read at 0
            {
                "name": "p1",
                "threads": [
                    _thread("faulter", [_touch()], "500us"),
                    _thread("w", [{"op": "mprotect", "hold": "3ms"}], "1ms"),
                ],
            },
        ]
    )
    result = run_policy(config, "v4.19")
    records = list(result.trace.records())
    complete = next(r["ts"] for r in records if r["event"] == "block_rq_complete")
    released = _of(records, "p1.faulter", "mmap_lock_released")
    relock = _of(records, "p1.faulter", "mmap_lock_start_locking")
    acquired = _of(records, "p1.faulter", "mmap_lock_acquire_returned")
    w_acquired = _of(records, "p1.w", "mmap_lock_acquire_returned")[0]["ts"]
    w_released = _of(records, "p1.w", "mmap_lock_released")[0]["ts"]
    assert released[0]["ts"] < w_acquired < complete  # the writer got in while the fault waited
    assert [r["ts"] for r in relock] == [complete]  # blocking down_read at the wake-up
    assert acquired[-1]["ts"] == w_released  # ... queued behind the writer
    (done,) = _of(records, "p1.faulter", "fault_done")
    assert done["attempts"] == 2
    flags = done["flags"].split("|")
    assert "TRIED" in flags and "ALLOW_RETRY" not in flags
    assert done["mmap_sem_wait_ns"] == w_released - complete
    assert result.results["counters"]["mmap_sem_held_across_io"] == 0


# -- behaviour 9 ---------------------------------------------------------------------------


def _killable_config() -> ExperimentConfig:
    return _config(
        [
            {"name": "p0", "threads": [_thread("reader", [_touch()])]},
            {"name": "p1", "threads": [_thread("faulter", [_touch(), {"op": "think", "time": "1ms"}], "500us")]},
        ]
    )


@pytest.mark.parametrize("policy", ["v2.6.36", "v4.19", "v3", "v5.1", "v5.7"])
def test_behaviour_09_sigkill_ends_page_lock_wait_releases_sem_and_stops_retry(policy: str) -> None:
    """KILLABLE: SIGKILL during the page-lock wait ends it at once, the sem is released and x86 does not retry."""
    kernel = _machine(_killable_config(), policy)
    victim = _task(kernel, "p1.faulter")
    kernel.engine.call_at(MS, victim.send_sigkill)
    kernel.engine.run()
    records = list(kernel.engine.trace.records())
    (done,) = _of(records, "p1.faulter", "fault_done")
    assert done["ts"] == MS  # woken by the signal, not by the IO (which ends after 2 ms)
    assert done["attempts"] == 1
    assert not [r for r in _of(records, "p1.faulter", "mmap_lock_start_locking") if r["ts"] >= MS]
    assert victim.mmap_sem_held == []
    assert kernel.mms["p1"].mmap_sem.statistics().readers == ()
    assert victim.actor.finished and not kernel.mms["p1"].ptes


def test_behaviour_09_without_sigkill_the_same_fault_waits_for_the_io() -> None:
    """Control for behaviour 9: without the signal the fault ends after the IO, having retried."""
    kernel = _machine(_killable_config(), "v4.19")
    kernel.engine.run()
    records = list(kernel.engine.trace.records())
    (done,) = _of(records, "p1.faulter", "fault_done")
    complete = next(r["ts"] for r in records if r["event"] == "block_rq_complete")
    assert done["ts"] == complete > MS and done["attempts"] == 2
    assert kernel.mms["p1"].ptes


# -- behaviour 10 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("v4.19", ["ALLOW_RETRY", "TRIED"]),
        ("v5.7", ["ALLOW_RETRY", "ALLOW_RETRY|TRIED", "ALLOW_RETRY|TRIED", "ALLOW_RETRY|TRIED"]),
    ],
)
def test_behaviour_10_x86_retries_once_in_4_19_and_until_done_in_5_7(policy: str, expected: list[str]) -> None:
    """4.19 x86 retries at most once (ALLOW_RETRY cleared); 5.7 keeps ALLOW_RETRY, sets TRIED and retries until the fault completes."""
    config = _config([{"name": "p", "threads": [_thread("t", [_touch()])]}])
    kernel = _machine(config, policy)
    vma = kernel.vmas[("p", "m")]
    seen: list[str] = []

    async def fault(current: TaskStruct, vmf) -> vm_fault_t:
        """->fault that drops the sem and asks for a retry three times whenever allowed."""
        seen.append("|".join(n for n in ("ALLOW_RETRY", "TRIED") if vmf.flags & getattr(FaultFlag, n)))
        if vmf.flags & FaultFlag.ALLOW_RETRY and len(seen) <= 3:
            up_read(current, vmf.vma.vm_mm)
            return VmFaultResult.RETRY
        return await filemap_fault(current, vmf)

    vma.vm_ops = VmOperations(fault=fault, page_mkwrite=vma.vm_ops.page_mkwrite)
    kernel.engine.run()
    assert seen == expected
    (done,) = [r for r in kernel.engine.trace.records() if r["event"] == "fault_done"]
    assert done["attempts"] == len(expected)
    assert kernel.counters["fault_retries"] == len(expected) - 1
    assert vma.vm_start in kernel.mms["p"].ptes


@pytest.mark.parametrize(("policy", "drops"), [("v5.1", True), ("v5.7", False)])
def test_behaviour_10_5_7_later_attempts_wait_holding_the_sem(policy: str, drops: bool) -> None:
    """A later attempt (ALLOW_RETRY|TRIED) finding the page locked: 5.7 waits holding the sem (first-attempt-only drop); the 4.19-5.6 rule drops it."""
    config = _config(
        [
            {"name": "p0", "threads": [_thread("reader", [_touch()])]},
            {"name": "p1", "threads": [_thread("idle", [{"op": "think", "time": "1us"}])]},
        ]
    )
    kernel = _machine(config, policy)
    mm = kernel.mms["p1"]
    vma = kernel.vmas[("p1", "m")]
    seen: dict[str, Any] = {}

    async def later_attempt(current: TaskStruct) -> None:
        await current.actor.sleep(MS // 2)  # p0's read of page 0 is in flight
        await down_read(current, mm)
        flags = FaultFlag.ALLOW_RETRY | FaultFlag.TRIED | FaultFlag.KILLABLE | FaultFlag.USER
        seen["ret"] = await handle_mm_fault(current, vma, vma.vm_start, flags)
        seen["held"] = list(current.mmap_sem_held)
        if seen["held"]:
            up_read(current, mm)

    kernel.spawn_task(TaskStruct(kernel, "p1.retry", "retry", 999, mm.pid, mm, ""), later_attempt)
    kernel.engine.run()
    assert bool(seen["ret"] & VmFaultResult.RETRY) is drops
    assert (seen["held"] == []) is drops
    assert (kernel.counters["mmap_sem_held_across_io"] > 0) is not drops
    assert (vma.vm_start in mm.ptes) is not drops


# -- behaviour 17 --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["v2.6.36", "v4.19", "v3", "v3-no-cached-page", "v5.1", "v5.7"])
def test_behaviour_17_pgmajfault_counted_once_per_fault_even_when_retried(policy: str) -> None:
    """PGMAJFAULT and maj_flt count a retried major fault once, not once per attempt."""
    config = _config(
        [
            {
                "name": "p",
                "threads": [{"name": "t", "iterations": 10, "program": [{"op": "touch", "mapping": "m", "pattern": "random"}]}],
            }
        ],
        horizon="1s",
    )
    result = run_policy(config, policy)
    counters = result.results["counters"]
    done = [r for r in result.trace.records() if r["event"] == "fault_done"]
    major = [r for r in done if r["major"]]
    assert counters["pgmajfault"] == counters["major_faults"] == len(major) > 0
    if policy != "v2.6.36":
        assert any(r["attempts"] == 2 for r in major)
        assert counters["fault_retries"] >= len([r for r in major if r["attempts"] == 2])


# -- per-VMA locks (behaviour 21, docs/KERNELS-6x.md) ------------------------------------


def _batch(threads: list[dict[str, Any]]) -> ExperimentConfig:
    return _config([{"name": "p", "threads": threads}])


def _read_acquires(result, process: str = "p") -> int:
    return result.results["mmap_sem"][process]["read_acquires"]


@pytest.mark.parametrize(
    ("policy", "mmap_lock_reads", "vma_counters"),
    [
        ("v6.1", 2, {}),
        ("v6.4", 2, {"vma_lock_abort": 1}),  # a file VMA: 6.4 takes anonymous ones only
        ("v6.12", 1, {"vma_lock_retry": 1}),  # the IO under the VMA lock, mmap_lock only for the retry
    ],
)
def test_behaviour_21_major_file_fault_and_the_vma_lock(policy: str, mmap_lock_reads: int, vma_counters: dict[str, int]) -> None:
    """A cold-page read fault: 6.12 does its IO holding only the VMA lock, drops it, and retries under mmap_lock once."""
    result = run_policy(_batch([_thread("faulter", [_touch()])]), policy)
    counters = result.results["counters"]
    assert _read_acquires(result) == mmap_lock_reads
    assert {k: v for k, v in counters.items() if k.startswith("vma_lock_") and not k.endswith("_ns")} == vma_counters
    assert counters["major_faults"] == 1 and counters.get("mmap_sem_held_across_io", 0) == 0
    (done,) = _of(list(result.trace.records()), "p.faulter", "fault_done")
    assert done["attempts"] == 2
    if policy == "v6.12":
        assert "TRIED" in done["flags"].split("|")  # 46e714c729c8: the mmap_lock retry of a major fault
        assert done["vma_lock"] == "retry"
        assert counters.get("vma_lock_held_across_io", 0) == 0  # release_fault_lock dropped it before the read


def test_behaviour_21_cached_file_fault_takes_no_mmap_lock_under_v6_12() -> None:
    """With the file cached, fault-around maps the page under the VMA lock: VMA_LOCK_SUCCESS and no mmap_lock at all."""
    config = _config([{"name": "p", "threads": [_thread("faulter", [_touch()])]}], cached=1.0)
    v612, v64 = run_policy(config, "v6.12"), run_policy(config, "v6.4")
    assert _read_acquires(v612) == 0 and v612.results["counters"]["vma_lock_success"] == 1
    assert _read_acquires(v64) == 1 and v64.results["counters"]["vma_lock_abort"] == 1


def test_behaviour_21_a_write_locked_vma_sends_the_fault_to_mmap_lock() -> None:
    """While mprotect holds mmap_lock for write it has write-locked the VMA: the fault aborts the VMA-lock try and queues for mmap_lock."""
    config = _batch(
        [
            _thread("w", [{"op": "mprotect", "mapping": "m", "prot": "r", "hold": "3ms"}]),
            _thread("faulter", [_touch()], "500us"),
        ]
    )
    result = run_policy(config, "v6.12")
    records = list(result.trace.records())
    (done,) = _of(records, "p.faulter", "fault_done")
    w_released = _of(records, "p.w", "mmap_lock_released")[0]["ts"]
    assert done["vma_lock"] == "abort" and result.results["counters"]["vma_lock_abort"] == 1
    assert _of(records, "p.faulter", "mmap_lock_acquire_returned")[0]["ts"] == w_released
    assert result.results["invariants"]["violations"] == []


def test_behaviour_21_proc_pid_mem_still_faults_under_mmap_lock() -> None:
    """GUP from /proc/<pid>/mem never tries the VMA lock: its fault waits for the IO holding mmap_lock, under 6.12 too."""
    mem = {"op": "proc_read", "target": "self", "file": "mem", "target_mapping": "m", "pages": 1, "pattern": "sequential"}
    result = run_policy(_batch([_thread("memreader", [mem])]), "v6.12")
    counters = result.results["counters"]
    assert counters["proc_mem_faults"] == 1 and counters["mmap_sem_held_across_io"] >= 1
    assert not [k for k in counters if k.startswith("vma_lock_")]


def test_behaviour_21_anonymous_vmas_under_v6_4_and_v6_12() -> None:
    """6.4 locks an anonymous VMA only once it has an anon_vma; 6.12 locks it and vmf_anon_prepare retries under mmap_lock."""
    for policy, first in (("v6.4", None), ("v6.12", "retry")):
        kernel = _machine(_batch([_thread("t", [_touch()])]), policy)
        current = _task(kernel, "p.t")
        mm = current.mm
        anon = mm.insert_vma(4, VmFlag.READ | VmFlag.WRITE, None, "anon")
        assert anon.vma_is_anonymous() and not kernel.mapping_vma(mm, "m").vma_is_anonymous()
        locked = lock_vma_under_rcu(current, mm, anon.vm_start)
        if first is None:
            assert locked is None and kernel.counters["vma_lock_abort"] == 1  # no anon_vma yet
        else:
            assert locked is anon
            vmf = VmFault()
            vm_fault_init(vmf, anon, anon.vm_start, FaultFlag.VMA_LOCK | FaultFlag.ALLOW_RETRY)
            assert vmf_anon_prepare(current, vmf) == VmFaultResult.RETRY  # and the VMA lock is dropped
            assert current.vma_locks_held == []
        vmf = VmFault()
        vm_fault_init(vmf, anon, anon.vm_start, FaultFlag.ALLOW_RETRY)
        assert vmf_anon_prepare(current, vmf) == 0 and anon.anon_vma  # under mmap_lock: __anon_vma_prepare
        assert lock_vma_under_rcu(current, mm, anon.vm_start) is anon
        vma_end_read(current, anon)
        assert policy != "v6.4" or lock_vma_under_rcu(current, mm, kernel.mapping_vma(mm, "m").vm_start) is None


def test_behaviour_21_detached_vma_counts_a_miss_and_walks_again() -> None:
    """lock_vma_under_rcu finding a VMA detached after the walk counts VMA_LOCK_MISS and looks again."""
    kernel = _machine(_batch([_thread("t", [_touch()])]), "v6.12")
    current = _task(kernel, "p.t")
    vma = kernel.mapping_vma(current.mm, "m")
    vma.vm_lock.start_write("unmapper", 0)
    vma.vm_lock.mark_detached(True)  # unmapped while the walk found it (the kernel's RCU window)
    current.mm.mm_lock_seq.vma_end_write_all()
    calls = iter([vma, None])
    current.mm.find_vma = lambda address: next(calls)
    assert lock_vma_under_rcu(current, current.mm, vma.vm_start) is None
    assert kernel.counters["vma_lock_miss"] == 1 and kernel.counters["vma_lock_abort"] == 1
    assert current.vma_locks_held == []
