"""Invariant checks: what must hold in any correct kernel, checked on every run.

Checks run during the run (recorded with ``Kernel.violation``, which stamps
the virtual time and the trace position ``event``) and at the end
(``check_invariants``). A violation is a dict with the invariant's name, the
virtual time, the event index and what was seen; results.json lists them
under ``invariants`` (``checked`` counts the checks made) and ``emu run
--strict`` fails on any. ``INVARIANTS`` names every check.

During the run (each costs a few attribute reads where it sits):
    ``rwsem_reader_with_writer``: at every mmap_sem acquire, never a reader
    together with a writer.
    ``rwsem_reader_passed_queued_writer``: at every read acquire, a reader
    that took the fast path found no queued writer; under 4.19 rules a
    reader granted from the queue had no writer queued before it.
    ``rwsem_release_by_non_holder``: ``up_read``/``up_write`` by a task that
    holds no such lock (an unbalanced release in emulated kernel code,
    e.g. docs/DESIGN.md D8); the release is then ignored.
    ``page_double_lock``: a task sleeps on a page lock it holds itself (a
    lock handed to a read bio belongs to the IO, whose completion unlocks it).
    ``page_unlock_by_non_holder``: PG_locked is released (``unlock_page``,
    ``page_endio``) or handed to a read bio (``page_lock_handoff``) by
    someone other than its holder: the task that locked it, or the bio it
    was handed to. Recorded, then the unlock goes ahead as in the kernel.
    ``page_ref_leak``: a ``vm_fault`` went out of scope still holding a
    page reference (V3's ``cached_page`` on a ``bad_area`` exit, docs/DESIGN.md
    D5).
    ``dropped_means_dropped``: after dropping mmap_sem a path never uses
    the VMA it looked up before the drop (``current.dropped_vma``, reset
    when the retry re-finds the VMA), nor a VMA that was unmapped; checked
    where the fault path installs PTEs (``finish_fault``,
    ``finish_mkwrite_fault``).
    ``vma_modified_under_reader``: with per-VMA locks (6.4+), when
    ``munmap`` or ``mprotect`` changes a VMA, no task holds that VMA's lock
    for read and the VMA is write-locked (``vm_lock_seq == mm_lock_seq``:
    the writer called ``vma_start_write``).
    ``vma_lock_seq_not_monotonic``: ``mm_lock_seq`` (bumped by
    ``mmap_write_unlock``) and each ``vm_lock_seq`` (set by
    ``vma_start_write``) only ever grow.
    ``vma_write_without_mmap_write_lock``: ``vma_start_write`` by a task not
    holding the mm's mmap_lock for write (``mmap_assert_write_locked``).
    ``io_under_mmap_sem_on_retry``: for policies whose ``->fault`` (v3,
    v5.1) or ``->page_mkwrite`` (V3's btrfs) drops the sem for IO, the
    retried attempt (TRIED) sleeps on IO or io.latency throttling holding
    the sem because the first attempt returned RETRY before its page was
    uptodate (defect 2: ``cause = "retry_before_uptodate"``) or because V3's
    mkwrite must be redone (defects 7/19: ``"mkwrite_redone_under_sem"``).
    A retry whose page was truncated or failed its read meanwhile is not a
    violation (counter ``retry_io_after_truncate_or_error``): then the
    re-read under the sem is what every kernel does.

At the end:
    ``page_refcount_balanced``: each cached page's ``_refcount`` is 1 (the
    page cache) plus one per PTE mapping it, when every task has finished.
    A run cut by the horizon may have faults holding references, so there
    only a count *below* that is a violation (an extra put).
    ``page_unlocked_at_rest``: when every task has finished and no IO is in
    flight, no cached page is still locked.
    ``dirty_data_lost``: every page dirtied (``set_page_dirty``) and not
    written back since is still dirty or under writeback, unless it was
    truncated; and every dirty cached page is on the flusher's lists.
    ``memcg_usage_accounted``: each memcg's page counter equals the pages
    charged in its subtree: on its LRU lists or isolated by a reclaimer.
    ``memcg_usage_within_max``: no memcg is above ``memory.max`` by more
    than the pages forced past it (a dying task's charges).
    ``swap_slots_accounted``: each swap slot's count equals the swap PTEs
    that hold it, ``SWAP_HAS_CACHE`` is set exactly for slots in the swap
    cache, and the in-use total matches (no slot leaks when its last
    holder goes: swap-in, munmap, reclaim of a clean swap-cache page).
    ``liveness``: no op of a live task has been in flight longer than
    ``[checks] liveness`` (default 1 s) when the run ends (a livelock such
    as the 5.1-5.6 ``mm_populate`` spin, or a wait nobody ends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.kernel_types import PageFlag
from actors.locking.rwsem import RwsemSemantics
from actors.mm.page import page_mapcount
from actors.mm.swap import SWAP_HAS_CACHE

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.locking.rwsem import RwSemaphore
    from actors.locking.vma_lock import VmaLock

#: Every invariant, by the name violations carry.
INVARIANTS = (
    "rwsem_reader_with_writer",
    "rwsem_reader_passed_queued_writer",
    "rwsem_release_by_non_holder",
    "page_double_lock",
    "page_unlock_by_non_holder",
    "page_ref_leak",
    "dropped_means_dropped",
    "io_under_mmap_sem_on_retry",
    "vma_modified_under_reader",
    "vma_lock_seq_not_monotonic",
    "vma_write_without_mmap_write_lock",
    "page_refcount_balanced",
    "page_unlocked_at_rest",
    "dirty_data_lost",
    "liveness",
    "memcg_usage_accounted",
    "memcg_usage_within_max",
    "swap_slots_accounted",
)


def check_rwsem_acquire(sem: RwSemaphore, owner: str, mode: str, queued_ns: int | None) -> list[tuple[str, dict[str, Any]]]:
    """The rwsem invariants right after *owner* acquired *sem* in *mode*.

    *queued_ns* is when it queued, ``None`` if it took the lock without
    waiting. Reads the semaphore's holder and waiter lists directly: O(1).
    """
    problems: list[tuple[str, dict[str, Any]]] = []
    writer = sem._writer
    readers = sem._readers
    if writer is not None and readers:
        problems.append(("rwsem_reader_with_writer", {"writer": writer, "readers": sorted(readers)}))
    # Writers queue in time order, so the first waiting writer is the earliest queued.
    first = sem.first_waiting_writer() if mode == "read" else None
    if first is not None:
        # v5.3+: a reader may take a free lock ahead of the woken head writer when HANDOFF is clear
        stole = sem.semantics is RwsemSemantics.V5_3 and first.woken and not sem._handoff and list(readers) == [owner] and len(readers[owner]) == 1
        if queued_ns is None and not stole:
            problems.append(("rwsem_reader_passed_queued_writer", {"writer": first.owner, "fast_path": True}))
        elif queued_ns is not None and sem.semantics is RwsemSemantics.V4_19 and first.queued_ns < queued_ns:
            problems.append(("rwsem_reader_passed_queued_writer", {"writer": first.owner, "fast_path": False}))
    return problems


def check_vma_modify(lock: VmaLock) -> list[tuple[str, dict[str, Any]]]:
    """The per-VMA lock invariants right before a writer changes the VMA *lock* guards."""
    problems: list[tuple[str, dict[str, Any]]] = []
    readers = lock.readers()
    if readers or not lock.write_locked():
        problems.append(
            ("vma_modified_under_reader", {"readers": sorted(readers), "vm_lock_seq": lock.vm_lock_seq, "mm_lock_seq": lock.mm_lock_seq.value})
        )
    return problems


def check_lock_seq_advanced(which: str, before: int, after: int) -> list[tuple[str, dict[str, Any]]]:
    """A sequence number (``mm_lock_seq`` or ``vm_lock_seq``) went from *before* to *after*: it must grow."""
    if after > before:
        return []
    return [("vma_lock_seq_not_monotonic", {"seq": which, "before": before, "after": after})]


def check_invariants(kernel: Kernel) -> dict[str, Any]:
    """End-of-run checks, merged with the violations recorded during the run."""
    violations = list(kernel.violations)
    checked = kernel.invariant_checks
    now = kernel.engine.now_ns
    end_event = kernel.engine.trace.count

    def report(invariant: str, **seen: Any) -> None:
        violations.append({"invariant": invariant, "ts": now, "event": end_event, **seen})

    finished = all(task.actor.finished or task.actor.daemon for task in kernel.tasks)
    idle = kernel.bdev.statistics().in_flight == 0
    for inode in kernel.inodes.values():
        checked += inode.i_mapping.pages.untouched  # filled and never looked up: nothing to check
        for page in inode.i_mapping.pages.touched():
            checked += 1
            expected = 1 + page_mapcount(page)
            if page.refcount < expected or (finished and page.refcount != expected):
                report("page_refcount_balanced", page=page.name, refcount=page.refcount, expected=expected)
            if finished and idle and page.flags & PageFlag.LOCKED:
                report("page_unlocked_at_rest", page=page.name, locker=page.locker)

    flusher = {(p.mapping.host.ino, p.index) for p in kernel.writeback.dirty_pages() if p.mapping is not None}
    for page in kernel.dirtied.values():
        checked += 1
        if page.mapping is None:
            continue  # truncated: its data was thrown away on purpose
        if not page.flags & (PageFlag.DIRTY | PageFlag.WRITEBACK):
            report("dirty_data_lost", page=page.name, cause="clean_but_never_written")
        elif page.flags & PageFlag.DIRTY and (page.mapping.host.ino, page.index) not in flusher:
            report("dirty_data_lost", page=page.name, cause="dirty_but_not_queued")

    if kernel.memcg.limited or kernel.swap is not None:
        checked += _check_memory(kernel, report)

    bound = kernel.config.checks.liveness
    end = now if finished else max(now, kernel.config.horizon)  # a cut run ran to the horizon
    for task in kernel.tasks:
        checked += 1
        if task.op_start is None or task.actor.finished:
            continue
        op, start = task.op_start
        if end - start > bound:
            report("liveness", task=task.comm, op=op, running_ns=end - start, bound_ns=bound)
    return {"checked": checked, "violations": violations}


def _check_memory(kernel: Kernel, report: Any) -> int:
    """``memcg_usage_accounted``, ``memcg_usage_within_max`` and ``swap_slots_accounted``; the checks made."""
    checked = 0
    for memcg in kernel.memcg.groups.values():
        checked += 1
        pages = sum(len(m.lru_file) + len(m.lru_anon) + m.nr_isolated for m in memcg.subtree())
        if memcg.usage != pages:
            report("memcg_usage_accounted", memcg=memcg.path or "/", usage=memcg.usage, charged=pages)
        forced = sum(m.nr_forced for m in memcg.subtree())
        if memcg.max is not None and memcg.usage > memcg.max + forced:
            report("memcg_usage_within_max", memcg=memcg.path or "/", usage=memcg.usage, max=memcg.max, forced=forced)
    swap = kernel.swap
    if swap is None:
        return checked
    holders = [0] * swap.max
    for mm in kernel.mms.values():
        for slot in mm.swap_ptes.values():
            holders[slot] += 1
    holders[0] = 1  # the header
    for slot, count in enumerate(swap.swap_map):
        checked += 1
        cached = bool(count & SWAP_HAS_CACHE)
        if count & ~SWAP_HAS_CACHE != holders[slot] or cached != (slot in swap.cache):
            report("swap_slots_accounted", slot=slot, swap_map=count, ptes=holders[slot], cached=slot in swap.cache)
    inuse = sum(1 for count in swap.swap_map if count)
    if inuse != swap.inuse_pages:
        report("swap_slots_accounted", inuse_pages=swap.inuse_pages, counted=inuse)
    return checked
