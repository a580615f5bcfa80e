"""Tests for actors/arch/fault.py: the x86 user fault entry and its VM_FAULT_RETRY loop.

docs/DESIGN.md B5, B9, B10 and B17, through
a real ``Kernel`` built from small configs (``run_policy`` or a hand-run
engine when a test needs to reach into the machine).
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.kernel import Kernel
from actors.kernel_types import FaultFlag, VmFaultResult
from actors.lab.config import ExperimentConfig, config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from actors.mm.filemap_fault import filemap_fault
from actors.mm.memory import VmOperations, handle_mm_fault
from actors.mm.mmap import down_read, up_read
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

    async def fault(current: TaskStruct, vmf) -> VmFaultResult:
        """->fault that drops the sem and asks for a retry three times whenever allowed."""
        seen.append("|".join(n for n in ("ALLOW_RETRY", "TRIED") if vmf.flags & FaultFlag[n]))
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
