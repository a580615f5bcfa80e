"""Tests for actors/fs/btrfs_space.py: reservation, ticketed flushing, transaction commit, ``reserve_fail``.

Driven through ``btrfs_page_mkwrite``, as the machine reserves, on the
``FakeBtrfsKernel`` of test_btrfs.py.
"""

from __future__ import annotations

from actors.fs.btrfs_space import COMMIT_META_BYTES, BtrfsSpaceInfo
from actors.kernel_types import PAGE_SIZE, PageFlag, VmFaultResult
from actors.lab.config import BtrfsConfig
from actors.mm.page import unlock_page
from emu.testing import run_strict
from tests.actors.fakes import FakeTask
from tests.actors.fs.test_btrfs import MS, US, FakeBtrfsKernel


def test_reservation_flushes_delalloc_then_commits_when_space_short():
    """Short of space: FLUSH_DELALLOC, FLUSH_DELALLOC_WAIT (freed extents stay pinned), then COMMIT_TRANS unpins."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(space=16 * PAGE_SIZE, flush_threshold=0.25, commit_cost=2 * MS))
    seen = {}

    async def program(current: FakeTask) -> None:
        for index in range(12):  # leaves exactly the 4-page threshold free
            vmf = kernel.vmf(index)
            assert await kernel.btrfs.btrfs_page_mkwrite(current, vmf) == VmFaultResult.LOCKED
            unlock_page(current, vmf.page)
        seen["before"] = (kernel.btrfs.statistics(), current.actor.now_ns, dict(current.sleep_ns))
        vmf = kernel.vmf(12)
        seen["ret"] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
        unlock_page(current, vmf.page)
        seen["after"] = kernel.btrfs.statistics()
        seen["sleeps"] = dict(current.sleep_ns)

    kernel.spawn("writer", program)
    run_strict(kernel.engine)
    assert seen["before"][0].bytes_may_use == 12 * PAGE_SIZE
    assert seen["ret"] == VmFaultResult.LOCKED
    states = [e["state"] for e in kernel.events("btrfs_flush_space")]  # all from the 13th mkwrite
    assert states == ["FLUSH_DELALLOC", "FLUSH_DELALLOC_WAIT", "COMMIT_TRANS"]
    assert kernel.counters["btrfs_flush_delalloc"] == 2 and kernel.counters["btrfs_commit_transaction"] == 1
    assert not kernel.counters["btrfs_enospc"]
    (commit,) = kernel.events("btrfs_transaction_commit")
    assert commit["unpinned"] == 12 * PAGE_SIZE  # every delalloc page was written (one 256 KiB item) and finished
    after = seen["after"]
    assert (after.bytes_may_use, after.bytes_pinned) == (PAGE_SIZE, 0)
    meta_writes = [r for r in kernel.events("block_bio_queue") if r["op"] == "WRITE" and r["comm"] == "writer"]
    assert len(meta_writes) == 1  # the commit's REQ_META write, issued by the reserving task
    fs_before = seen["before"][2]["fs"]
    assert seen["sleeps"]["fs"] - fs_before >= 2 * MS and seen["sleeps"]["io"] > 0
    (ticket,) = kernel.events("btrfs_reserve_ticket")
    assert (ticket["flush_states"], ticket["error"]) == (3, 0)


def test_enospc_gives_sigbus():
    """When even a commit cannot make room, the reservation fails with -ENOSPC and mkwrite returns SIGBUS."""
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
    assert kernel.counters["btrfs_enospc"] == 1 and kernel.counters["btrfs_commit_transaction"] == 1
    assert kernel.btrfs.statistics().bytes_may_use == 0
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
    assert calls == [("writer", PAGE_SIZE, PAGE_SIZE)]
    assert seen["now"] == 30 * US and task.sleep_ns["fs"] == 30 * US  # the normal cost was paid
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
    assert seen["ok"] == VmFaultResult.LOCKED and asked == [PAGE_SIZE]
    assert ok.btrfs.statistics().bytes_may_use == PAGE_SIZE


def test_set_extent_delalloc_replaces_and_finished_reservations_are_pinned():
    """Re-marking a page delalloc releases its earlier reservation; ``take_delalloc`` clears it and
    ``pin_reserved`` moves bytes from ``bytes_may_use`` to ``bytes_pinned`` (free space unchanged)."""
    space = FakeBtrfsKernel().btrfs.space
    assert isinstance(space, BtrfsSpaceInfo)
    for _ in range(2):
        assert space._try_reserve(PAGE_SIZE)
        space.btrfs_set_extent_delalloc(1, 5, PAGE_SIZE)
    assert (space.bytes_may_use, space.delalloc) == (PAGE_SIZE, {(1, 5): PAGE_SIZE})
    free = space.free_bytes()
    assert space.take_delalloc(1, 5) == PAGE_SIZE and space.take_delalloc(1, 5) == 0
    space.pin_reserved(PAGE_SIZE)
    assert (space.bytes_may_use, space.bytes_pinned, space.free_bytes()) == (0, PAGE_SIZE, free)


def test_commit_transaction_unpins_and_writes_metadata():
    """``btrfs_commit_transaction`` costs ``commit_cost`` (``fs``) plus a waited REQ_META write and unpins what was pinned."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(commit_cost=2 * MS), service_ns=MS)
    space = kernel.btrfs.space
    space.bytes_pinned = 3 * PAGE_SIZE
    seen = {}

    async def program(current: FakeTask) -> None:
        seen["unpinned"] = await space.btrfs_commit_transaction(current)
        seen["now"] = current.actor.now_ns

    task = kernel.spawn("committer", program)
    run_strict(kernel.engine)
    assert seen == {"unpinned": 3 * PAGE_SIZE, "now": 3 * MS}
    assert space.bytes_pinned == 0 and task.sleep_ns["fs"] == 2 * MS and task.sleep_ns["io"] == MS
    (bio,) = kernel.events("block_bio_queue")
    assert bio["op"] == "WRITE" and bio["nr_sector"] == COMMIT_META_BYTES // 512
