"""Tests for actors/fs/btrfs_space.py: reservations, tickets, the async reclaim worker, ``reserve_fail``.

Driven through ``btrfs_page_mkwrite``, as the machine reserves, on the
``FakeBtrfsKernel`` of test_btrfs.py.
"""

from __future__ import annotations

from actors.fs.btrfs_space import BtrfsSpaceInfo
from actors.kernel_types import PAGE_SIZE, PageFlag, VmFaultResult
from actors.lab.config import BtrfsConfig
from actors.mm.page import unlock_page
from emu.testing import run_strict
from tests.actors.fakes import FakeTask
from tests.actors.fs.test_btrfs import MS, ONE_PAGE_META, US, FakeBtrfsKernel


def test_short_reservation_waits_on_a_ticket_served_by_the_reclaim_kworker():
    """Short of space, the faulting task queues a ticket and sleeps on it (``fs``) while the async
    reclaim kworker (no mm, root blkcg) runs the flush states; with nothing to write back, the commit
    frees the pinned space. The commit's metadata write is the kworker's, charged to root."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(space=8 * 1024 * 1024, flush_threshold=0.5, commit_cost=2 * MS))
    space = kernel.btrfs.space
    space.bytes_pinned = 4 * 1024 * 1024  # freed by the running transaction: nothing left above the threshold
    seen = {}

    async def program(current: FakeTask) -> None:
        vmf = kernel.vmf(0)
        seen["ret"] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
        unlock_page(current, vmf.page)
        seen["now"] = current.actor.now_ns

    task = kernel.spawn("writer", program)
    task.blkcg = "app"
    run_strict(kernel.engine)
    assert seen["ret"] == VmFaultResult.LOCKED
    (ticket,) = kernel.events("btrfs_reserve_ticket")
    assert (ticket["error"], ticket["comm"], ticket["bytes"]) == (0, "writer", PAGE_SIZE + ONE_PAGE_META)
    assert task.sleep_ns["fs"] == ticket["wait_ns"] == kernel.counters["btrfs_reserve_ticket_wait_ns"] >= 2 * MS
    assert not task.sleep_ns.get("io")  # the writer waited on its ticket, not on IO
    worker = space._worker
    assert worker is not None and worker.blkcg == "" and worker.mm is None
    flushes = kernel.events("btrfs_flush_space")
    assert [e["state"] for e in flushes] == ["FLUSH_DELALLOC", "FLUSH_DELALLOC_WAIT", "COMMIT_TRANS"]
    assert {e["actor"] for e in flushes} == {worker.comm}
    (commit,) = [r for r in kernel.events("block_bio_queue") if r["op"] == "WRITE"]
    assert (commit["comm"], commit["blkcg"]) == (worker.comm, "")
    assert worker.sleep_ns["io"] > 0 and kernel.counters["btrfs_commit_transaction"] == 1
    assert space.tickets == [] and not space.flush and space.bytes_pinned == 0


def test_tickets_are_granted_fifo_and_partially_from_released_space():
    """``space_info_add_old_bytes``: space returned to the pool goes to the head ticket first,
    partly if it does not cover it; a ticket is granted when its bytes reach 0."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(space=1024 * 1024, flush_threshold=0.0))
    space = kernel.btrfs.space
    seen = {}
    space.bytes_may_use = space.config.space  # full
    space.flush = True  # keep the worker out: this test hands space back by hand

    async def waiter(current: FakeTask, name: str, nbytes: int) -> None:
        seen[name] = await space._wait_reserve_ticket(current, nbytes)
        seen[name + "_at"] = current.actor.now_ns

    async def releaser(current: FakeTask) -> None:
        await current.actor.sleep(MS)
        space._return_bytes(3 * PAGE_SIZE)  # head wants 4 pages: partial
        seen["partial"] = [t.bytes for t in space.tickets]
        await current.actor.sleep(MS)
        space._return_bytes(3 * PAGE_SIZE)  # head done (1 page), second gets 2 of its 2

    kernel.spawn("a", lambda current: waiter(current, "a", 4 * PAGE_SIZE))
    kernel.spawn("b", lambda current: waiter(current, "b", 2 * PAGE_SIZE))
    kernel.spawn("releaser", releaser)
    run_strict(kernel.engine)
    assert seen["partial"] == [PAGE_SIZE, 2 * PAGE_SIZE]
    assert (seen["a"], seen["b"], seen["a_at"], seen["b_at"]) == (0, 0, 2 * MS, 2 * MS)
    assert space.tickets_id == 2 and space.bytes_may_use == space.config.space


def test_enospc_after_three_passes_without_progress_gives_sigbus():
    """When flushing frees nothing, the worker fails the ticket after three passes over the states
    (``commit_cycles > 2``); nothing is pinned, so it never commits; mkwrite returns SIGBUS."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(space=2048, flush_threshold=0.0))
    seen = {}

    async def program(current: FakeTask) -> None:
        vmf = kernel.vmf(0)
        seen["ret"] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
        seen["locked"] = vmf.page.test(PageFlag.LOCKED)

    kernel.spawn("writer", program)
    run_strict(kernel.engine)
    assert seen["ret"] == VmFaultResult.SIGBUS
    assert not seen["locked"]
    assert [e["state"] for e in kernel.events("btrfs_flush_space")] == ["FLUSH_DELALLOC", "FLUSH_DELALLOC_WAIT", "COMMIT_TRANS"] * 3
    assert kernel.counters["btrfs_enospc"] == 1 and not kernel.counters["btrfs_commit_transaction"]
    st = kernel.btrfs.statistics()
    assert (st.bytes_may_use, st.metadata_reserved, st.tickets) == (0, 0, 0)
    assert kernel.events("btrfs_reserve_ticket")[0]["error"] == -28


def test_reserve_fail_hook_gives_sigbus_and_gives_the_reservation_back():
    """The ``reserve_fail`` injection point turns a successful reservation into -ENOSPC after its cost:
    the reservation is released and mkwrite returns SIGBUS with the page unlocked and clean."""
    calls: list[tuple[str, int, int]] = []

    def reserve_fail(current: FakeTask, nbytes: int) -> bool:
        calls.append((current.comm, nbytes, kernel.btrfs.space.bytes_may_use))  # consulted holding the reservation
        return True

    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(reserve_cost=30 * US), reserve_fail=reserve_fail)
    seen = {}

    async def program(current: FakeTask) -> None:
        vmf = kernel.vmf(0)
        seen["ret"] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
        seen["now"] = current.actor.now_ns
        seen["flags"] = (vmf.page.test(PageFlag.LOCKED), vmf.page.test(PageFlag.DIRTY))

    task = kernel.spawn("writer", program)
    run_strict(kernel.engine)
    assert seen["ret"] == VmFaultResult.SIGBUS
    assert seen["flags"] == (False, False)
    assert calls == [("writer", PAGE_SIZE + ONE_PAGE_META, PAGE_SIZE + ONE_PAGE_META)]
    assert seen["now"] == 30 * US and task.sleep_ns["fs"] == 0  # the normal (CPU) cost was paid
    st = kernel.btrfs.statistics()
    assert (st.bytes_may_use, st.bytes_pinned, st.delalloc_pages) == (0, 0, 0)
    assert kernel.writeback.statistics().nr_dirty == 0
    assert not kernel.counters["btrfs_enospc"]  # the hook keeps its own counters
    assert not kernel.events("btrfs_reserve_ticket")  # no flushing: the fast path reserved, then failed


def test_reserve_fail_hook_is_consulted_only_for_successful_reservations():
    """A reservation that fails by itself (real ENOSPC) never reaches the hook; one that passes it is kept."""
    asked: list[int] = []

    def reserve_fail(current: FakeTask, nbytes: int) -> bool:
        asked.append(nbytes)
        return False

    short = FakeBtrfsKernel(btrfs=BtrfsConfig(space=2048, flush_threshold=0.0), reserve_fail=reserve_fail)
    ok = FakeBtrfsKernel(reserve_fail=reserve_fail)
    seen = {}

    def program(kernel: FakeBtrfsKernel, name: str):
        async def run(current: FakeTask) -> None:
            vmf = kernel.vmf(0)
            seen[name] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
            if seen[name] == VmFaultResult.LOCKED:
                unlock_page(current, vmf.page)

        return run

    short.spawn("writer", program(short, "short"))
    run_strict(short.engine)
    assert seen["short"] == VmFaultResult.SIGBUS and asked == []
    ok.spawn("writer", program(ok, "ok"))
    run_strict(ok.engine)
    assert seen["ok"] == VmFaultResult.LOCKED and asked == [PAGE_SIZE + ONE_PAGE_META]
    assert ok.btrfs.statistics().bytes_may_use == PAGE_SIZE + ONE_PAGE_META


def test_set_extent_delalloc_replaces_and_finished_reservations_are_pinned():
    """Re-marking a page delalloc releases its earlier data reservation; ``take_delalloc`` clears it, and
    removing its ordered extent pins the data and releases the extent's metadata."""
    space = FakeBtrfsKernel().btrfs.space
    assert isinstance(space, BtrfsSpaceInfo)
    for _ in range(2):
        space.bytes_may_use += PAGE_SIZE
        space.inode_rsv(1).csum_bytes += PAGE_SIZE
        space.btrfs_set_extent_delalloc(1, 5, PAGE_SIZE)
    rsv = space.inode_rsv(1)
    assert (space.bytes_may_use, space.delalloc, rsv.outstanding_extents, rsv.csum_bytes) == (PAGE_SIZE, {(1, 5): PAGE_SIZE}, 1, PAGE_SIZE)
    rsv.reserved = rsv.size()
    space.bytes_may_use += rsv.reserved
    assert space.take_delalloc(1, 5) == PAGE_SIZE and space.take_delalloc(1, 5) == 0
    space.btrfs_add_ordered_extent(1)
    assert rsv.outstanding_extents == 1
    space.btrfs_remove_ordered_extent(1, PAGE_SIZE, PAGE_SIZE, pin=True)
    assert (space.bytes_may_use, space.bytes_pinned, rsv.reserved, rsv.outstanding_extents) == (0, PAGE_SIZE, 0, 0)


def test_a_run_split_in_two_counts_two_outstanding_extents():
    """``btrfs_split_delalloc_extent``: taking the middle page of a run leaves two extents; merging rejoins them."""
    space = FakeBtrfsKernel().btrfs.space
    for index in (1, 2, 3):
        space.btrfs_set_extent_delalloc(1, index, PAGE_SIZE)
    rsv = space.inode_rsv(1)
    assert rsv.outstanding_extents == 1
    space.take_delalloc(1, 2)
    assert rsv.outstanding_extents == 2
    space.btrfs_set_extent_delalloc(1, 2, PAGE_SIZE)
    assert rsv.outstanding_extents == 1
    for index in (1, 2, 3):
        space.take_delalloc(1, index)
    assert rsv.outstanding_extents == 0 and rsv.size() == 0
