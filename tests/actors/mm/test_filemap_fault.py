"""Tests for actors/mm/filemap_fault.py: filemap_fault at v4.19, V3 as posted and v5.1.

docs/DESIGN.md B4, B6, B7, B8, B16 and B18.
Scenario behaviours run whole configs through ``run_policy``; function-level
ones build a real ``Kernel`` from a tiny config and drive the fault path
from an extra task spawned into its engine (``Kernel.spawn_task``).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from actors.arch.fault import do_page_fault
from actors.kernel import Kernel
from actors.kernel_types import FaultFlag, PageFlag, VmFaultResult
from actors.lab.config import ExperimentConfig, config_from_dict, resolve_policy
from actors.lab.experiment import run_policy
from actors.mm.filemap import delete_from_page_cache
from actors.mm.memory import (
    VmFault,
    handle_mm_fault,
    handle_mm_fault_cacheable,
    vm_fault_cleanup,
    vm_fault_init,
)
from actors.mm.mmap import down_read, up_read
from actors.mm.page import Page, page_mapcount
from actors.sched.task import TaskStruct
from emu import Engine, Trace

MS = 1_000_000
US = 1_000


# -- a real kernel with an extra, hand-driven task ------------------------------------------


def _kernel(policy: str, *, mapping: dict[str, Any] | None = None, file_size: str = "16MiB", latency: str = "2ms", **extra: Any) -> Kernel:
    """A machine with processes ``p`` and ``q`` mapping file ``f`` (mapping ``m``); their own threads only idle.

    CPU costs are off (``scale = 0``): these tests time the fault path's waits, not its CPU work.
    """
    config = config_from_dict(
        {
            "name": "filemap-fault",
            "horizon": "1s",
            "device": {"latency": latency, "jitter_pct": 0},
            "costs": {"scale": 0},
            "files": [{"name": "f", "size": file_size}],
            "processes": [
                {
                    "name": name,
                    "mappings": [{"name": "m", "file": "f", **(mapping or {})}],
                    "threads": [{"name": "idle", "iterations": 1, "program": [{"op": "think", "time": "1us"}]}],
                }
                for name in ("p", "q")
            ],
            **extra,
        }
    )
    engine = Engine(seed=config.seed, horizon_ns=config.horizon, trace=Trace())
    return Kernel(engine, config, resolve_policy(config, policy))


def _spawn(
    kernel: Kernel, comm: str, fn: Callable[[TaskStruct], Coroutine[Any, Any, None]], *, blkcg: str = "", process: str = "p"
) -> TaskStruct:
    mm = kernel.mms[process]
    task = TaskStruct(kernel, comm, comm, 900 + len(kernel.tasks), mm.pid, mm, blkcg)
    return kernel.spawn_task(task, fn)


def _records(kernel: Kernel, event: str, actor: str | None = None) -> list[dict[str, Any]]:
    return [r for r in kernel.engine.trace.records() if r["event"] == event and (actor is None or r["actor"] == actor)]


def _while_holding(records, events: tuple[str, ...]) -> collections.Counter:
    """How many of *events* each actor emitted while holding some mmap_sem (from the lock tracepoints)."""
    held: dict[str, list[str]] = collections.defaultdict(list)
    seen: collections.Counter = collections.Counter()
    for r in records:
        event = r["event"]
        if event == "mmap_lock_acquire_returned" and r["success"]:
            held[r["actor"]].append(r["mm"])
        elif event == "mmap_lock_released":
            held[r["actor"]].remove(r["mm"])
        elif event in events and held[r["actor"]]:
            seen[(r["actor"], event)] += 1
    return seen


# -- behaviours 4 and 6: the seed's inversion scenario ----------------------------------------


@functools.cache
def _inversion(policy: str, throttled: bool):
    """Scenario 1 in small: batch faulters (L) throttled by io.latency, a mapper (W), a /proc monitor (H).

    The protected reader's 4 KiB IOs take over 1 ms on this device, so they
    always miss the 1 ms target: the batch group is scaled down to depth 1.
    The device has 4 slots as well as 4 tags: 4.19 io.latency scales by the
    driver's queue depth (``blk_queue_depth``), 5.4 by ``nr_requests``.
    """
    protected = {"path": "w/prot", "io.latency": "target=1000"} if throttled else {"path": "w/prot"}
    config = config_from_dict(
        {
            "name": "inversion",
            "seed": 1,
            "horizon": "1s",
            "device": {"nr_requests": 4, "queue_depth": 4, "parallelism": 1, "latency": "1ms", "jitter_pct": 0},
            "cgroups": [{"path": "w"}, protected, {"path": "w/batch"}],
            "files": [{"name": "data", "size": "1GiB"}],
            "processes": [
                {
                    "name": "service",
                    "cgroup": "w/prot",
                    "threads": [
                        {"name": "reader", "program": [{"op": "io", "size": "4KiB"}, {"op": "think", "time": "1ms"}]},
                        {"name": "monitor", "every": "20ms", "program": [{"op": "proc_read", "target": "batch*"}]},
                    ],
                },
                {
                    "name": "batch",
                    "count": 2,
                    "cgroup": "w/batch",
                    "mappings": [{"name": "data", "file": "data"}],
                    "threads": [
                        {"name": "faulter", "program": [{"op": "touch", "mapping": "data", "pattern": "random"}]},
                        {
                            "name": "mapper",
                            "program": [
                                {"op": "mmap", "length": "64KiB", "hold": "20us"},
                                {"op": "munmap", "hold": "20us"},
                                {"op": "think", "time": "5ms"},
                            ],
                        },
                    ],
                },
            ],
        }
    )
    return run_policy(config, policy)


def _held_across_kinds(result) -> collections.Counter:
    return collections.Counter(r["kind"] for r in result.trace.records() if r["event"].startswith("mmap_sem_held_across_"))


def _monitor_max(result) -> int:
    return result.results["latency"]["monitor/proc_read"]["max_ns"]


def test_behaviour_04_baseline_fault_sleeps_in_io_latency_throttle_holding_mmap_sem() -> None:
    """4.19: the faulter is throttled inside submit_bio with its mmap_sem read-held, and the /proc reader's latency grows with that throttling."""
    throttled, free = _inversion("v4.19", True), _inversion("v4.19", False)
    assert throttled.results["counters"]["throttled_bios"] > 0
    assert _held_across_kinds(throttled)["throttle"] > 0
    under_sem = _while_holding(throttled.trace.records(), ("rq_qos_throttle",))
    assert {actor for actor, _ in under_sem} <= {"batch0.faulter", "batch1.faulter"} and under_sem
    longest_throttle = max(r["ns"] for r in throttled.trace.records() if r["event"] == "mmap_sem_held_across_throttle")
    assert max(m["hold_max_ns"] for name, m in throttled.results["mmap_sem"].items() if name.startswith("batch")) >= longest_throttle
    assert _held_across_kinds(free)["throttle"] == 0
    assert _monitor_max(throttled) > _monitor_max(free)


def test_behaviour_06_v3_submits_readahead_after_up_read_so_throttling_misses_mmap_sem() -> None:
    """V3: every fault IO is submitted after up_read and the fault returns RETRY, so the monitor never waits for L's throttle."""
    throttled, free = _inversion("v3", True), _inversion("v3", False)
    records = list(throttled.trace.records())
    assert throttled.results["counters"]["throttled_bios"] > 0
    assert _held_across_kinds(throttled)["throttle"] == 0
    assert not _while_holding(records, ("block_bio_queue", "rq_qos_throttle", "mm_readahead"))
    faulter_retries = [r for r in records if r["event"] == "fault_done" and r["attempts"] > 1]
    assert faulter_retries and _records_of(records, "maybe_unlock_mmap_for_io")
    assert _monitor_max(throttled) <= _monitor_max(free)


def _records_of(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == event]


# -- behaviour 7: V3's second attempt --------------------------------------------------------


def _cold_faults_config() -> ExperimentConfig:
    return config_from_dict(
        {
            "name": "cold-faults",
            "horizon": "200ms",
            "device": {"latency": "2ms", "jitter_pct": 0},
            "files": [{"name": "f", "size": "64MiB"}],
            "processes": [
                {
                    "name": "p",
                    "mappings": [{"name": "m", "file": "f"}],
                    "threads": [
                        {
                            "name": "t",
                            "iterations": 20,
                            "program": [{"op": "touch", "mapping": "m", "pattern": "random"}, {"op": "think", "time": "1ms"}],
                        }
                    ],
                }
            ],
        }
    )


def test_behaviour_07_v3_second_attempt_waits_for_io_under_mmap_sem() -> None:
    """V3 returns RETRY before the readahead completes, so the retry (no ALLOW_RETRY) waits for the locked page holding the sem; v5.1 does not."""
    v3 = run_policy(_cold_faults_config(), "v3")
    v51 = run_policy(_cold_faults_config(), "v5.1")
    v3_held = [r for r in v3.trace.records() if r["event"] == "mmap_sem_held_across_io"]
    assert v3_held and {r["kind"] for r in v3_held} == {"io"}
    assert v3.results["counters"]["mmap_sem_held_across_io"] == len(v3_held)
    retried = [r for r in v3.trace.records() if r["event"] == "fault_done" and r["attempts"] == 2]
    assert retried and all("ALLOW_RETRY" not in r["flags"] for r in retried)
    assert v51.results["counters"]["mmap_sem_held_across_io"] == 0
    assert v51.results["counters"]["fault_retries"] > 0


@pytest.mark.parametrize(("policy", "reads_under_sem"), [("v3", True), ("v5.1", False)])
def test_behaviour_07_v3_second_attempt_reads_skipped_readahead_page_under_mmap_sem(policy: str, reads_under_sem: bool) -> None:
    """Readahead skipped (cgroup congested): V3's retry finds no page and reads it holding the sem; v5.1 reads it on the first attempt without the sem."""
    kernel = _kernel(policy, mapping={"madvise": "sequential"}, cgroups=[{"path": "batch"}])
    kernel.bdev.hierarchy.lookup_create("batch").congestion_count += 1  # what blkcg_use_delay() sets
    address = kernel.vmas[("p", "m")].vm_start + 40
    outcomes = []

    async def fault(current: TaskStruct) -> None:
        outcomes.append(await do_page_fault(current, address, False))

    _spawn(kernel, "p.scanner", fault, blkcg="batch")
    kernel.engine.run()
    records = list(kernel.engine.trace.records())
    assert _records_of(records, "mm_readahead_skipped")
    assert outcomes[0].attempts == 2 and outcomes[0].signal is None
    under_sem = _while_holding(records, ("block_bio_queue", "mm_filemap_add_to_page_cache"))
    assert bool(under_sem) is reads_under_sem
    assert (kernel.counters["mmap_sem_held_across_io"] > 0) is reads_under_sem
    assert address in kernel.mms["p"].ptes


# -- behaviour 8: RETRY_NOWAIT ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["v4.19", "v3", "v5.1", "v5.7"])
def test_behaviour_08_retry_nowait_returns_retry_at_once_with_mmap_sem_held(policy: str) -> None:
    """ALLOW_RETRY|RETRY_NOWAIT on a page under IO: VM_FAULT_RETRY immediately, the sem never released."""
    kernel = _kernel(policy)
    vma = kernel.vmas[("p", "m")]
    mm = kernel.mms["p"]
    seen: dict[str, Any] = {}

    async def fault(current: TaskStruct) -> None:
        await down_read(current, mm)
        start = current.actor.now_ns
        flags = FaultFlag.ALLOW_RETRY | FaultFlag.RETRY_NOWAIT | FaultFlag.KILLABLE | FaultFlag.USER
        seen["ret"] = await handle_mm_fault(current, vma, vma.vm_start + 100, flags)
        seen["elapsed"] = current.actor.now_ns - start
        seen["held"] = list(current.mmap_sem_held)
        up_read(current, mm)

    _spawn(kernel, "p.kvm", fault)
    kernel.engine.run()
    assert seen["ret"] & VmFaultResult.RETRY
    assert seen["held"] == [(mm, "read")]
    assert seen["elapsed"] == 0
    assert len(_records(kernel, "mmap_lock_released", "p.kvm")) == 1  # only the test's own up_read
    assert not _records(kernel, "maybe_unlock_mmap_for_io")
    assert vma.vm_start + 100 not in mm.ptes


# -- behaviour 16: read-around geometry through the fault path -----------------------------------


@pytest.mark.parametrize(("policy", "drops"), [("v4.19", False), ("v5.1", True), ("v5.7", True)])
def test_behaviour_16_read_around_window_and_async_readahead_on_marker(policy: str, drops: bool) -> None:
    """A cold fault at off reads [off-16, off+15] and marks off+8; a later fault on off+8 starts async readahead (dropping the sem in 5.1+)."""
    kernel = _kernel(policy)
    vma = kernel.vmas[("p", "m")]
    mapping = vma.vm_file.f_mapping
    off = 100
    outcomes = []

    async def faults(current: TaskStruct) -> None:
        outcomes.append(await do_page_fault(current, vma.vm_start + off, False))
        await current.actor.sleep(10 * MS)  # the read-around IO completes
        assert mapping.pages[off + 8].test(PageFlag.READAHEAD)
        outcomes.append(await do_page_fault(current, vma.vm_start + off + 8, False))

    _spawn(kernel, "p.reader", faults)
    kernel.engine.run()
    readahead = _records(kernel, "mm_readahead", "p.reader")
    assert (readahead[0]["start"], readahead[0]["size"], readahead[0]["nr"]) == (off - 16, 32, 32)
    marked = [index for index, page in mapping.pages.items() if page.test(PageFlag.READAHEAD)]
    assert (off + 8) not in marked  # cleared by the async readahead
    assert readahead[1]["start"] == off + 16  # the next window, from the marker
    assert [o.major for o in outcomes] == [True, False]
    under_sem = _while_holding(kernel.engine.trace.records(), ("mm_readahead",))[("p.reader", "mm_readahead")]
    unlocks = _records(kernel, "maybe_unlock_mmap_for_io", "p.reader")
    if drops:
        assert outcomes[1].attempts == 2 and unlocks[-1]["seq"] < readahead[1]["seq"]
        assert under_sem == 0
    else:
        assert outcomes[1].attempts == 1 and not unlocks
        assert under_sem == 2


@pytest.mark.parametrize(("mmap_miss", "read_around"), [(99, True), (100, False)])
def test_behaviour_16_mmap_miss_over_100_turns_read_around_off(mmap_miss: int, read_around: bool) -> None:
    """Once a miss takes mmap_miss above MMAP_LOTSAMISS (100), a cold fault reads only its own page."""
    kernel = _kernel("v4.19")
    vma = kernel.vmas[("p", "m")]
    vma.vm_file.f_ra.mmap_miss = mmap_miss

    async def fault(current: TaskStruct) -> None:
        await do_page_fault(current, vma.vm_start + 100, False)

    _spawn(kernel, "p.reader", fault)
    kernel.engine.run()
    added = [r["index"] for r in _records(kernel, "mm_filemap_add_to_page_cache", "p.reader")]
    assert bool(_records(kernel, "mm_readahead")) is read_around
    assert added == (list(range(84, 116)) if read_around else [100])
    assert vma.vm_start + 100 in vma.vm_mm.ptes


def test_behaviour_16_madv_random_reads_only_the_faulting_page() -> None:
    """MADV_RANDOM: no readahead, the fault reads one page."""
    kernel = _kernel("v4.19", mapping={"madvise": "random"})
    vma = kernel.vmas[("p", "m")]

    async def fault(current: TaskStruct) -> None:
        await do_page_fault(current, vma.vm_start + 100, False)

    _spawn(kernel, "p.reader", fault)
    kernel.engine.run()
    assert not _records(kernel, "mm_readahead")
    assert [r["index"] for r in _records(kernel, "mm_filemap_add_to_page_cache")] == [100]


# -- behaviour 18: V3's cached_page ---------------------------------------------------------------


def _two_faulters(kernel: Kernel, index: int) -> tuple[TaskStruct, TaskStruct]:
    """p.first read-faults *index* cold at 0; q.second (another mm) write-faults it at 0.5 ms, while it is locked under IO.

    A write fault on a shared mapping goes straight to ``__do_fault`` (no
    fault-around, which would map the page on the retry before
    ``filemap_fault`` could look at the cached page).
    """

    async def first(current: TaskStruct) -> None:
        await do_page_fault(current, kernel.vmas[("p", "m")].vm_start + index, False)

    async def second(current: TaskStruct) -> None:
        await current.actor.sleep(MS // 2)
        await do_page_fault(current, kernel.vmas[("q", "m")].vm_start + index, True)

    return _spawn(kernel, "p.first", first), _spawn(kernel, "q.second", second, process="q")


@pytest.mark.parametrize(("policy", "reused"), [("v3", 1), ("v3-no-cached-page", 0)])
def test_behaviour_18_v3_retry_reuses_cached_page_when_mapping_and_index_match(policy: str, reused: int) -> None:
    """V3: the page waited for on attempt 1 is stashed in vmf->cached_page and reused by the retry; nothing leaks."""
    kernel = _kernel(policy, mapping={"writable": True})
    _two_faulters(kernel, 100)
    kernel.engine.run()
    assert kernel.counters["v3_cached_page_reused"] == reused
    page = kernel.inodes["f"].i_mapping.pages[100]
    assert page.refcount == 1 + page_mapcount(page)  # the cache's reference plus one per PTE
    # V3's first attempt returns RETRY before its readahead completed, so its retry waits on the IO
    # under the sem (io_under_mmap_sem_on_retry, defect 2); what this test is about is that nothing leaks.
    assert page_mapcount(page) == 2 and not [v for v in kernel.violations if v["invariant"] != "io_under_mmap_sem_on_retry"]


def test_behaviour_18_v3_drops_cached_page_truncated_while_sem_was_dropped() -> None:
    """V3: a stashed page whose mapping changed (truncated) is not reused: it is put and the page is looked up again."""
    kernel = _kernel("v3", mapping={"writable": True})
    mapping = kernel.inodes["f"].i_mapping
    _two_faulters(kernel, 100)
    stale: list[Page] = []

    def truncate() -> None:
        stale.append(mapping.pages[100])
        delete_from_page_cache(stale[0])

    kernel.engine.call_at(MS, truncate)  # while q.second waits on the page without the sem
    kernel.engine.run()
    assert kernel.counters["v3_cached_page_reused"] == 0
    assert stale[0].refcount == 0  # every reference, the stashed one included, was put
    fresh = mapping.pages[100]
    assert fresh is not stale[0] and fresh.test(PageFlag.UPTODATE)
    assert not kernel.violations


def test_behaviour_18_v3_cached_page_with_other_index_is_put_not_used() -> None:
    """V3: a cached page for another index is dropped by filemap_fault and the right page is faulted in."""
    kernel = _kernel("v3")
    vma = kernel.vmas[("p", "m")]
    mapping = vma.vm_file.f_mapping
    seen: dict[str, Any] = {}

    async def fault(current: TaskStruct) -> None:
        await do_page_fault(current, vma.vm_start + 7, False)  # make page 7 (and pages 0-31) cached
        other = mapping.pages[7]
        refs = other.refcount
        other.refcount += 1  # the reference the stash holds
        vmf = VmFault()
        vmf.cached_page = other
        await down_read(current, vma.vm_mm)
        vm_fault_init(vmf, vma, vma.vm_start + 200, FaultFlag.KILLABLE | FaultFlag.USER)  # a cold page
        seen["ret"] = await handle_mm_fault_cacheable(current, vmf)
        seen["page"] = vmf.page
        seen["stash"] = vmf.cached_page
        vm_fault_cleanup(vmf)
        up_read(current, vma.vm_mm)
        seen["refs"] = (refs, other.refcount)

    _spawn(kernel, "p.reader", fault)
    kernel.engine.run()
    assert kernel.counters["v3_cached_page_reused"] == 0
    assert seen["stash"] is None
    assert seen["refs"][0] == seen["refs"][1]
    assert seen["ret"] & VmFaultResult.MAJOR
    assert vma.vm_mm.ptes.get(vma.vm_start + 200).index == 200
