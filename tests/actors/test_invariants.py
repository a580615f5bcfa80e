"""The invariant checks (actors/invariants.py and the hooks that feed them).

Each invariant gets a test that breaks it on purpose (so the check can fail)
and, where a real scenario exercises it, one that shows which policies break
it and which do not: V3's defects found, v4.19/v5.1 silent.
"""

from __future__ import annotations

import pathlib
from typing import Any

import attrs
import pytest

from actors.block.bio import Bio
from actors.invariants import INVARIANTS, check_invariants, check_lock_seq_advanced, check_rwsem_acquire, check_vma_modify
from actors.kernel import Kernel
from actors.kernel_types import PageFlag, ReqOp
from actors.lab.config import (
    ExperimentConfig,
    config_from_dict,
    load_config,
    resolve_policy,
)
from actors.lab.experiment import run_policy
from actors.locking.rwsem import RwSemaphore, RwsemSemantics
from actors.locking.vma_lock import MmLockSeq, VmaLock
from actors.mm.mmap import up_read, up_write
from actors.mm.page import (
    Page,
    _check_not_own_lock,
    page_endio,
    page_mapcount,
    page_lock_handoff,
    trylock_page,
    unlock_page,
)
from emu import Engine, KernelBug, Trace

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(**top: Any) -> ExperimentConfig:
    data = {
        "name": "inv",
        "horizon": "200ms",
        "device": {"latency": "200us", "jitter_pct": 0},
        "files": [{"name": "f", "size": "1MiB", "cached": 1.0}],
        "processes": [{"name": "app", "mappings": [{"name": "m", "file": "f", "writable": True}],
                       "threads": [{"name": "t", "iterations": 2,
                                    "program": [{"op": "touch", "mapping": "m", "pages": 4, "pattern": "sequential", "write": True}]}]}],
    }  # fmt: skip
    data.update(top)
    return config_from_dict(data)


def _kernel(config: ExperimentConfig | None = None, policy: str = "v5.1") -> Kernel:
    config = config or _config()
    return Kernel(Engine(seed=1, horizon_ns=config.horizon, trace=Trace(keep=False)), config, resolve_policy(config, policy))


def _names(violations: list[dict[str, Any]]) -> list[str]:
    return [v["invariant"] for v in violations]


def test_every_recorded_name_is_a_declared_invariant() -> None:
    assert len(set(INVARIANTS)) == len(INVARIANTS) >= 11


# -- rwsem -------------------------------------------------------------------------------


def test_rwsem_check_flags_reader_with_writer() -> None:
    sem = RwSemaphore("mm.mmap_sem")
    assert sem.down_write("w", 0)
    assert check_rwsem_acquire(sem, "w", "write", None) == []
    sem._readers["r"] = [1]  # a grant the rules forbid
    assert [name for name, _ in check_rwsem_acquire(sem, "r", "read", None)][0] == "rwsem_reader_with_writer"


@pytest.mark.parametrize("semantics", [RwsemSemantics.V4_19, RwsemSemantics.V5_3])
def test_rwsem_check_flags_reader_passing_a_queued_writer(semantics: RwsemSemantics) -> None:
    """Fast path with a writer queued: wrong under both rules; a queued reader granted past an
    earlier-queued writer: wrong under 4.19 (5.3 may wake readers anywhere in the queue)."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    assert sem.down_read("r1", 0)
    assert not sem.down_write("w", 10)
    assert not sem.down_read("r2", 20)
    sem._readers["r3"] = [30]  # as if r3 had taken the fast path now
    assert _names_of(check_rwsem_acquire(sem, "r3", "read", None)) == ["rwsem_reader_passed_queued_writer"]
    expected = ["rwsem_reader_passed_queued_writer"] if semantics is RwsemSemantics.V4_19 else []
    assert _names_of(check_rwsem_acquire(sem, "r2", "read", 20)) == expected
    assert _names_of(check_rwsem_acquire(sem, "r0", "read", 5)) == []  # queued before the writer


def _names_of(problems: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in problems]


def test_unbalanced_up_read_is_a_violation_not_a_crash() -> None:
    kernel = _kernel()
    task = next(t for t in kernel.tasks if t.comm == "app.t")
    mm = kernel.mms["app"]
    kernel.engine.now_ns = 0
    task.actor.engine.current = task.actor
    up_read(task, mm)
    up_write(task, mm)
    assert [(v["invariant"], v["mode"]) for v in kernel.violations] == [
        ("rwsem_release_by_non_holder", "read"),
        ("rwsem_release_by_non_holder", "write"),
    ]


@pytest.mark.parametrize("policy", ["v4.19", "v5.1", "v5.7"])
def test_rwsem_checks_run_on_every_acquire_and_stay_silent_on_a_contended_scenario(policy: str) -> None:
    config = load_config(REPO / "configs/v3-second-attempt.toml")
    config = attrs.evolve(config, horizon=300_000_000)
    results = run_policy(config, policy, keep_trace=False).results
    acquires = sum(m["read_acquires"] + m["write_acquires"] for m in results["mmap_sem"].values())
    assert results["invariants"]["checked"] >= acquires > 100
    assert not [v for v in results["invariants"]["violations"] if v["invariant"].startswith("rwsem")]


# -- page lock ------------------------------------------------------------------------------


def test_page_double_lock_flags_sleeping_on_a_lock_the_task_holds_not_one_its_read_holds() -> None:
    kernel = _kernel()
    task = next(t for t in kernel.tasks if t.comm == "app.t")
    page = kernel.inodes["f"].i_mapping.pages[0]
    assert trylock_page(page, task.comm)
    _check_not_own_lock(task, page)
    assert _names(kernel.violations) == ["page_double_lock"]
    io_page = Page(kernel.inodes["f"].i_mapping, 999)
    assert trylock_page(io_page, task.comm)
    page_lock_handoff(task, io_page, _read_bio(kernel, io_page))  # now the read's lock
    _check_not_own_lock(task, io_page)
    assert _names(kernel.violations) == ["page_double_lock"]


def _read_bio(kernel: Kernel, page: Page) -> Bio:
    return Bio(bio_id=kernel.next_bio_id(), op=ReqOp.READ, pages=[page])


def _two_thread_kernel() -> tuple[Kernel, Any, Any]:
    thread = {"program": [{"op": "touch", "mapping": "m", "pages": 1}]}
    config = _config(processes=[{"name": "app", "mappings": [{"name": "m", "file": "f"}],
                                 "threads": [{"name": "a", **thread}, {"name": "b", **thread}]}])  # fmt: skip
    kernel = _kernel(config)
    by_comm = {t.comm: t for t in kernel.tasks}
    return kernel, by_comm["app.a"], by_comm["app.b"]


def test_unlock_by_the_holder_is_silent_and_by_anyone_else_is_a_violation_not_a_crash() -> None:
    kernel, a, b = _two_thread_kernel()
    page = kernel.inodes["f"].i_mapping.pages[0]
    checked = kernel.invariant_checks
    assert trylock_page(page, a.comm)
    unlock_page(a, page)
    assert kernel.violations == [] and kernel.invariant_checks == checked + 1
    assert trylock_page(page, a.comm)
    unlock_page(b, page)
    assert [(v["invariant"], v["by"], v["holder"], v["where"]) for v in kernel.violations] == [
        ("page_unlock_by_non_holder", "app.b", "app.a", "unlock_page")
    ]
    assert not page.flags & PageFlag.LOCKED  # released anyway, as the kernel would
    with pytest.raises(KernelBug, match="unlock_page on unlocked"):
        unlock_page(a, page)


def test_a_read_unlocks_what_it_was_handed_and_nothing_else() -> None:
    kernel, a, b = _two_thread_kernel()
    mapping = kernel.inodes["f"].i_mapping
    handed, kept = Page(mapping, 100), Page(mapping, 101)
    assert trylock_page(handed, a.comm) and trylock_page(kept, a.comm)
    bio = _read_bio(kernel, handed)
    page_lock_handoff(a, handed, bio)
    assert handed.locker == bio.lock_name
    page_endio(kernel, bio, handed)
    assert kernel.violations == [] and handed.flags & PageFlag.UPTODATE
    page_endio(kernel, bio, kept)  # a completion unlocking a page its task still holds
    other = Page(mapping, 102)
    assert trylock_page(other, a.comm)
    page_lock_handoff(b, other, bio)  # b gives away a's lock
    assert [(v["by"], v["holder"], v["where"]) for v in kernel.violations] == [
        (bio.lock_name, "app.a", "page_endio"),
        ("app.b", "app.a", "handoff"),
    ]


@pytest.mark.parametrize("policy", ["v4.19", "v3", "v5.1"])
def test_page_lock_checks_run_on_real_reads_and_stay_silent(policy: str) -> None:
    """v3-second-attempt reads through readahead and single-page reads, waits on locked pages and retries."""
    config = load_config(REPO / "configs/v3-second-attempt.toml")
    kernel = Kernel(Engine(seed=1, horizon_ns=100_000_000, trace=Trace(keep=False)), config, resolve_policy(config, policy))
    kernel.engine.run()
    assert kernel.bdev.statistics().nr_completed > 50
    assert not [v for v in kernel.violations if v["invariant"].startswith("page_")]
# -- references, dirty data, liveness (end of run) -------------------------------------------


def test_clean_run_has_no_end_of_run_violations() -> None:
    results = run_policy(_config(), "v5.1").results
    assert results["end"] == "finished"
    assert results["invariants"]["violations"] == []


def test_refcount_below_expected_is_caught_even_when_the_horizon_cuts_the_run() -> None:
    config = _config(processes=[{"name": "app", "mappings": [{"name": "m", "file": "f"}],
                                 "threads": [{"name": "t", "program": [{"op": "touch", "mapping": "m", "pages": 4}]}]}])  # fmt: skip
    kernel = _kernel(config)
    kernel.engine.run()
    assert not all(t.actor.finished or t.actor.daemon for t in kernel.tasks)  # cut by the horizon
    assert check_invariants(kernel)["violations"] == []
    page = kernel.inodes["f"].i_mapping.pages[3]
    page.refcount = page_mapcount(page)  # one put too many
    assert _names(check_invariants(kernel)["violations"]) == ["page_refcount_balanced"]


def test_dirty_data_lost_when_a_dirtied_page_is_cleaned_without_writeback() -> None:
    kernel = _kernel()
    kernel.engine.run()
    assert check_invariants(kernel)["violations"] == []
    assert kernel.dirtied, "the write faults dirtied pages that are not written yet"
    page = next(iter(kernel.dirtied.values()))
    page.flags &= ~PageFlag.DIRTY
    assert [(v["invariant"], v["cause"]) for v in check_invariants(kernel)["violations"]] == [("dirty_data_lost", "clean_but_never_written")]


def test_written_back_pages_leave_the_dirty_set() -> None:
    config = _config(
        writeback={"interval": "5ms"},
        processes=[{"name": "app", "mappings": [{"name": "m", "file": "f", "writable": True}],
                    "threads": [{"name": "t", "iterations": 2, "program": [
                        {"op": "touch", "mapping": "m", "pages": 4, "pattern": "sequential", "write": True},
                        {"op": "think", "time": "30ms"}]}]}],
    )  # fmt: skip
    kernel = _kernel(config)
    kernel.engine.run()
    assert kernel.counters["writeback_pages"] >= 1
    assert not kernel.dirtied


@pytest.mark.parametrize(("latency", "violated"), [("1500ms", True), ("100us", False)])
def test_liveness_reports_an_op_in_flight_longer_than_the_bound(latency: str, violated: bool) -> None:
    config = _config(
        horizon="1.8s",
        device={"latency": latency, "jitter_pct": 0},
        processes=[{"name": "app", "threads": [{"name": "t", "iterations": 0, "start": "400ms",
                                                "program": [{"op": "io"}, {"op": "think", "time": "1ms"}]}]}],
        checks={"liveness": "1s"},
    )  # fmt: skip
    results = run_policy(config, "v5.1", keep_trace=False).results
    found = [v for v in results["invariants"]["violations"] if v["invariant"] == "liveness"]
    assert bool(found) is violated
    if violated:
        assert found[0]["op"] == "io" and found[0]["running_ns"] > 1_000_000_000


# -- dropped means dropped -----------------------------------------------------------------------


def test_dropped_means_dropped_flags_use_of_the_vma_from_before_the_drop() -> None:
    kernel = _kernel()
    task = next(t for t in kernel.tasks if t.comm == "app.t")
    vma = kernel.vmas[("app", "m")]
    kernel.vma_use(task, vma, "finish_fault")
    assert kernel.violations == []
    task.dropped_vma = vma
    kernel.vma_use(task, vma, "finish_fault")
    task.dropped_vma = None
    vma.freed = True
    kernel.vma_use(task, vma, "finish_mkwrite_fault")
    assert [(v["invariant"], v["cause"]) for v in kernel.violations] == [
        ("dropped_means_dropped", "used_after_drop"),
        ("dropped_means_dropped", "used_after_unmap"),
    ]


# -- IO under mmap_sem on the retry (docs/DESIGN.md D2, B7; D7, B19) --------


def _retry_io(config_name: str, policy: str, horizon_ns: int) -> list[dict[str, Any]]:
    config = attrs.evolve(load_config(REPO / "configs" / f"{config_name}.toml"), horizon=horizon_ns)
    results = run_policy(config, policy, keep_trace=False).results
    return [v for v in results["invariants"]["violations"] if v["invariant"] == "io_under_mmap_sem_on_retry"]


@pytest.mark.parametrize("policy", ["v3", "v5.1", "v4.19"])
def test_io_under_mmap_sem_on_retry_finds_v3_defect_2_only(policy: str) -> None:
    """v3-second-attempt: readahead skipped, V3 returns RETRY at once and the retry reads under the
    sem. v5.1 waits for an uptodate page first. v4.19 never drops for IO (not a claim it makes)."""
    found = _retry_io("v3-second-attempt", policy, 500_000_000)
    if policy == "v3":
        assert found and {v["cause"] for v in found} == {"retry_before_uptodate"}
    else:
        assert found == []


@pytest.mark.parametrize("policy", ["v3", "v5.1"])
def test_io_under_mmap_sem_on_retry_finds_v3_mkwrite_redone(policy: str) -> None:
    """btrfs-mkwrite: V3's retry redoes the reservation (flushing, IO waits) under the sem."""
    found = _retry_io("btrfs-mkwrite", policy, 3_000_000_000)
    assert bool(found) is (policy == "v3")
    assert all(v["cause"] == "mkwrite_redone_under_sem" and v["scope"] == "mkwrite" for v in found)


# -- per-VMA locks -------------------------------------------------------------------------


def test_vma_modified_under_reader_is_caught() -> None:
    """A VMA changed while a fault holds its lock, or without vma_start_write, is a violation; after vma_start_write it is not."""
    lock = VmaLock("app.m.vm_lock", MmLockSeq())
    assert lock.start_read("app.t", 0)
    ((name, seen),) = check_vma_modify(lock)
    assert name == "vma_modified_under_reader" and seen["readers"] == ["app.t"]
    lock.end_read("app.t", 1)
    assert _names([{"invariant": n} for n, _ in check_vma_modify(lock)]) == ["vma_modified_under_reader"]  # not write-locked
    assert lock.start_write("app.w", 2)
    assert check_vma_modify(lock) == []


def test_vma_lock_seq_must_grow() -> None:
    """A sequence number that stays or goes back is vma_lock_seq_not_monotonic."""
    assert check_lock_seq_advanced("mm_lock_seq", 3, 4) == []
    assert [n for n, _ in check_lock_seq_advanced("vm_lock_seq", 4, 4)] == ["vma_lock_seq_not_monotonic"]
    assert check_lock_seq_advanced("vm_lock_seq", 5, 2)[0][1] == {"seq": "vm_lock_seq", "before": 5, "after": 2}


def test_per_vma_lock_hooks_check_every_writer_in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under v6.12 every mmap_write_unlock and vma_start_write is checked; mprotect/munmap of a mapping under faults stays clean."""
    config = _config(
        processes=[
            {"name": "app", "mappings": [{"name": "m", "file": "f", "writable": True}],
             "threads": [
                 {"name": "t", "iterations": 20, "program": [{"op": "touch", "mapping": "m", "pages": 4, "pattern": "random"}]},
                 {"name": "w", "iterations": 5, "program": [
                     {"op": "mprotect", "mapping": "m", "prot": "r"}, {"op": "mprotect", "mapping": "m", "prot": "rw"},
                     {"op": "munmap", "mapping": "m"}, {"op": "mmap", "mapping": "m"}, {"op": "think", "time": "1ms"}]},
             ]},
        ]
    )  # fmt: skip
    seen: list[str] = []
    checked = Kernel.lock_seq_advanced

    def counting(self: Kernel, current: Any, owner: str, which: str, before: int, after: int) -> None:
        seen.append(which)
        checked(self, current, owner, which, before, after)

    monkeypatch.setattr(Kernel, "lock_seq_advanced", counting)
    off = run_policy(config, "v6.1").results
    assert seen == []  # no per-VMA locks, no sequence checks
    on = run_policy(config, "v6.12").results
    assert on["invariants"]["violations"] == [] and off["invariants"]["violations"] == []
    writes = on["mmap_sem"]["app"]["write_acquires"]
    assert seen.count("mm_lock_seq") == writes  # a seq check per mmap_write_unlock
    assert "vm_lock_seq" in seen and on["counters"]["vma_lock_success"] > 0
