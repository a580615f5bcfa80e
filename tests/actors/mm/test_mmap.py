"""Tests for actors/mm/mmap.py: mmap_sem's sleeping side through the full model.

docs/DESIGN.md B1-B3, driven by small
configs of /proc readers (``proc_read`` holds the target's mmap_sem for read
for ``cost``) and ``mprotect`` writers, run with ``run_policy``. The sans-IO
queue rules themselves are unit-tested in tests/actors/locking/test_rwsem.py,
the per-VMA lock's in tests/actors/locking/test_vma_lock.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.kernel import Kernel
from actors.lab.config import ExperimentConfig, config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from actors.locking.rwsem import RwsemSemantics
from actors.mm.mmap import MmStruct, VmAreaStruct, VmFlag, vma_end_read, vma_start_read
from actors.mm.page import Page
from actors.sched.task import TaskStruct
from emu import Engine, Trace

MS = 1_000_000
US = 1_000


def _thread(name: str, program: list[dict[str, Any]], start: str | int = 0) -> dict[str, Any]:
    return {"name": name, "iterations": 1, "start": start, "program": program}


def _reader(name: str, cost: str, start: str | int = 0) -> dict[str, Any]:
    """A process whose one thread reads /proc/a/cmdline once (read-holding a's mmap_sem)."""
    return {"name": name, "threads": [_thread(name, [{"op": "proc_read", "target": "a", "cost": cost}], start)]}


def _config(processes: list[dict[str, Any]]) -> ExperimentConfig:
    # CPU costs off: these tests time the rwsem rules, not CPU work.
    return config_from_dict({"name": "mmap-sem", "horizon": "100ms", "costs": {"scale": 0}, "processes": processes})


def _lock_events(result, event: str, *, write: bool | None = None) -> dict[str, int]:
    """actor -> ts of its first *event* on mm ``a`` (optionally only reads or writes)."""
    out: dict[str, int] = {}
    for record in result.trace.records():
        if record["event"] == event and record["mm"] == "a" and (write is None or record["write"] is write):
            out.setdefault(record["actor"], record["ts"])
    return out


def _behaviour_1_config(with_writer: bool) -> ExperimentConfig:
    # L holds a.mmap_sem(read) 0..10 ms; W (a thread of a) asks for write at 2 ms and
    # holds it 3 ms; H (the ps-like reader) arrives at 4 ms.
    a_threads = [_thread("w", [{"op": "mprotect", "hold": "3ms"}], "2ms")] if with_writer else [_thread("idle", [{"op": "think", "time": "1us"}])]
    return _config([_reader("l", "10ms"), {"name": "a", "threads": a_threads}, _reader("h", "5us", "4ms")])


@pytest.mark.parametrize("policy", ["v4.19", "v5.7"])
def test_behaviour_01_reader_queues_behind_waiting_writer(policy: str) -> None:
    """A reader arriving after a queued writer waits for L's remaining hold plus W's hold, though only readers hold the sem."""
    result = run_policy(_behaviour_1_config(with_writer=True), policy)
    acquired = _lock_events(result, "mmap_lock_acquire_returned")
    released = _lock_events(result, "mmap_lock_released")
    assert acquired["a.w"] == released["l.l"] == 10 * MS
    assert acquired["h.h"] == released["a.w"] == 13 * MS
    latency = result.results["latency"]["h/proc_read"]
    assert latency["max_ns"] >= (10 - 4) * MS + 3 * MS


@pytest.mark.parametrize("policy", ["v4.19", "v5.7"])
def test_behaviour_01_reader_shares_with_reader_when_no_writer_queued(policy: str) -> None:
    """With no writer queued, H is admitted at once alongside L's read hold."""
    result = run_policy(_behaviour_1_config(with_writer=False), policy)
    acquired = _lock_events(result, "mmap_lock_acquire_returned")
    assert acquired["h.h"] == 4 * MS
    assert result.results["latency"]["h/proc_read"]["max_ns"] == 5 * US


def _behaviour_2_config() -> ExperimentConfig:
    # W1 write-holds 0..5 ms; readers r1, r2 queue at 1 ms, writer w2 at 2 ms, reader r3 at 3 ms.
    a = {
        "name": "a",
        "threads": [
            _thread("w1", [{"op": "mprotect", "hold": "5ms"}]),
            _thread("w2", [{"op": "mprotect", "hold": "2ms"}], "2ms"),
        ],
    }
    return _config([a, _reader("r1", "1ms", "1ms"), _reader("r2", "1ms", "1ms"), _reader("r3", "1ms", "3ms")])


def test_behaviour_02_reader_batch_wake_stops_at_next_writer_in_4_19() -> None:
    """4.19: the writer's release grants the readers at the head together; r3, queued behind w2, waits for w2."""
    acquired = _lock_events(run_policy(_behaviour_2_config(), "v4.19"), "mmap_lock_acquire_returned")
    assert acquired["r1.r1"] == acquired["r2.r2"] == 5 * MS
    assert acquired["a.w2"] == 6 * MS
    assert acquired["r3.r3"] == 8 * MS


def test_behaviour_02_reader_batch_wake_skips_writers_in_5_3() -> None:
    """5.3+: the writer's release grants every queued reader together, even r3 behind the queued writer w2."""
    acquired = _lock_events(run_policy(_behaviour_2_config(), "v5.7"), "mmap_lock_acquire_returned")
    assert acquired["r1.r1"] == acquired["r2.r2"] == acquired["r3.r3"] == 5 * MS
    assert acquired["a.w2"] == 6 * MS


def _behaviour_3_config(w1_start: str) -> ExperimentConfig:
    # r0 read-holds a.mmap_sem 0..10 ms; w1 queues for write at w1_start; the thief's
    # mprotect arrives at 10 ms, right after r0's release woke w1 but before w1 retried.
    # (What HANDOFF then stops is in tests/actors/locking/test_rwsem.py.)
    threads = [
        _thread("w1", [{"op": "mprotect", "hold": "1ms"}], w1_start),
        _thread("thief", [{"op": "think", "time": "5ms"}, {"op": "mprotect", "hold": "1ms"}], "5ms"),
    ]
    return _config([_reader("r0", "10ms"), {"name": "a", "threads": threads}])


@pytest.mark.parametrize(
    ("policy", "w1_start", "first"),
    [
        ("v4.19", "1ms", "a.thief"),  # no handoff: the arriving writer steals the woken writer's lock
        ("v5.7", "7ms", "a.thief"),  # 5.3, head waited 3 ms < 4 ms: stealing allowed
        ("v5.7", "1ms", "a.thief"),  # 5.3, head waited 9 ms, but HANDOFF is set by the head's own failed retry
    ],
)
def test_behaviour_03_lock_stealing_before_the_woken_writer_retries(policy: str, w1_start: str, first: str) -> None:
    """An arriving writer takes the lock a release just freed, ahead of the woken head writer: 4.19 always; 5.3 too, since the head sets HANDOFF only when its retry fails."""
    result = run_policy(_behaviour_3_config(w1_start), policy)
    acquired = _lock_events(result, "mmap_lock_acquire_returned", write=True)
    assert min(acquired, key=acquired.__getitem__) == first
    assert acquired[first] == 10 * MS


# -- munmap / mprotect walk only what is mapped ---------------------------------------


def _mm_with_big_vma() -> tuple[MmStruct, VmAreaStruct, list[Page]]:
    """An mm with a 1M-page anonymous VMA (3 pages mapped) between two small ones (one page mapped each)."""
    mm = MmStruct(Engine(seed=0), "a", 1, RwsemSemantics.V4_19)
    flags = VmFlag.READ | VmFlag.WRITE | VmFlag.MAYWRITE
    before, big, after = (mm.insert_vma(n, flags, None, name) for n, name in ((4, "before"), (1 << 20, "big"), (4, "after")))
    pages = []
    for address in (before.vm_start, big.vm_end - 1, big.vm_start, big.vm_start + 7, after.vm_start):
        page = Page(None, address)
        page.refcount = 1
        mm.set_pte(address, page, True)
        pages.append(page)
    return mm, big, pages


def test_mprotect_read_only_write_protects_every_pte_of_the_vma_and_no_other() -> None:
    mm, big, _ = _mm_with_big_vma()
    mm.mprotect_vma(big, write=False)
    assert [a for a in mm.ptes if not mm.ptes.pte_write(a)] == [big.vm_start, big.vm_start + 7, big.vm_end - 1]


def test_remove_vma_zaps_its_ptes_only_and_drops_their_references() -> None:
    mm, big, pages = _mm_with_big_vma()
    assert mm.remove_vma(big) == 3
    assert sorted(mm.ptes) == [mm.vmas[0].vm_start, mm.vmas[1].vm_start] and big.freed
    assert [page.refcount for page in pages] == [1, 0, 0, 0, 1]
    # A VMA smaller than the mm's mapped set walks its own pages.
    assert mm.remove_vma(mm.vmas[0]) == 1 and len(mm.ptes) == 1


# -- per-VMA locks (docs/KERNELS-6x.md) ---------------------------------------------------


def _vma_config(program: list[dict[str, Any]]) -> ExperimentConfig:
    return config_from_dict(
        {
            "name": "vma-lock",
            "horizon": "100ms",
            "costs": {"scale": 0},
            "files": [{"name": "f", "size": "64KiB", "cached": 1.0}],
            "processes": [{"name": "a", "mappings": [{"name": "m", "file": "f"}], "threads": [_thread("w", program)]}],
        }
    )


def _machine(config: ExperimentConfig, policy: str) -> Kernel:
    return Kernel(Engine(seed=1, horizon_ns=config.horizon, trace=Trace()), config, resolve_policy(config, policy))


def test_munmap_waits_for_the_fault_holding_the_vma() -> None:
    """vma_start_write sleeps until the reader's vma_end_read; then the VMA is detached and freed, with no violation."""
    kernel = _machine(_vma_config([{"op": "munmap", "mapping": "m"}]), "v6.12")
    mapper = next(task for task in kernel.tasks if task.comm == "a.w")
    vma = kernel.mapping_vma(mapper.mm, "m")
    reader = TaskStruct(kernel, "a.fault", "fault", 999, mapper.tgid, mapper.mm, "")  # a fault parked under the VMA lock
    reader.actor = kernel.engine.spawn(reader.comm, lambda actor: actor.sleep(0))
    assert vma_start_read(reader, vma)
    kernel.engine.call_at(2 * MS, lambda: vma_end_read(reader, vma))
    kernel.engine.run()
    waits = [r for r in kernel.engine.trace.records() if r["event"] == "vma_start_write_wait"]
    assert [(r["actor"], r["ts"], r["waited_ns"]) for r in waits] == [("a.w", 2 * MS, 2 * MS)]
    assert kernel.counters["vma_start_write_waits"] == 1
    assert vma.freed and vma.vm_lock.detached and mapper.actor.finished
    assert kernel.violations == []


@pytest.mark.parametrize(("policy", "seq"), [("v6.1", None), ("v6.12", 3)])
def test_mmap_write_unlock_ends_every_vma_write_lock(policy: str, seq: int | None) -> None:
    """Each up_write bumps mm_lock_seq (vma_end_write_all) under per-VMA locks; a writer's VMA is unlocked after it."""
    program = [{"op": "mprotect", "mapping": "m", "prot": "r"}, {"op": "mmap", "length": "8KiB"}, {"op": "munmap"}]
    kernel = _machine(_vma_config(program), policy)
    kernel.engine.run()
    mm = kernel.mms["a"]
    vma = kernel.mapping_vma(mm, "m")
    if seq is None:
        assert vma.vm_lock is None and mm.mm_lock_seq.value == 0  # !CONFIG_PER_VMA_LOCK: empty stubs
        return
    assert mm.mm_lock_seq.value == seq
    assert vma.vm_lock.vm_lock_seq == 0 and not vma.vm_lock.write_locked()  # locked by the mprotect, unlocked since
    assert kernel.violations == []
