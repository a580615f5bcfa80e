"""Tests for actors/fs/btrfs_ordered_data.py: ordered extents made by writepages, finished after the bio.

Run on the ``FakeBtrfsKernel`` of test_btrfs.py with a real ``Writeback`` flusher.
"""

from __future__ import annotations

from actors.fs.btrfs_ordered_data import FINISH_ORDERED_IO_NS, BtrfsOrderedTree
from actors.kernel_types import PAGE_SIZE, BlkStatus, PageFlag, ReqOp
from actors.lab.config import WritebackConfig
from actors.mm.page import unlock_page
from emu.testing import run_strict
from tests.actors.fakes import FakeTask
from tests.actors.fs.test_btrfs import MS, ONE_PAGE_META, FakeBtrfsKernel


async def _dirty_page_2(kernel: FakeBtrfsKernel, current: FakeTask):
    """Write-fault page 2 through ``btrfs_page_mkwrite``; its vmf and when it was dirtied.

    The flusher's periodic pass (10 ms in these tests) writes it; the IO takes 1 ms.
    """
    vmf = kernel.vmf(2)
    await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
    unlock_page(current, vmf.page)
    return vmf, current.actor.now_ns

def test_write_error_from_the_device_hook_returns_the_reservation_to_the_page():
    """A WRITE bio failed by the device's ``bio_error`` hook: the page is re-dirtied, and when the
    ordered extent finishes its reservation goes back to the page's delalloc instead of being pinned."""
    kernel = FakeBtrfsKernel(
        writeback=WritebackConfig(interval=10 * MS), service_ns=MS, bio_error=lambda bio: bio.op == ReqOp.WRITE
    )
    seen = {}

    async def program(current: FakeTask) -> None:
        vmf, dirtied = await _dirty_page_2(kernel, current)
        await current.actor.sleep_until(dirtied + 11 * MS + 2 * FINISH_ORDERED_IO_NS)
        page = vmf.page
        seen["flags"] = (page.test(PageFlag.DIRTY), page.test(PageFlag.WRITEBACK), page.test(PageFlag.ERROR))
        seen["ordered"] = kernel.btrfs.ordered_extent(1, 2)
        seen["space"] = kernel.btrfs.statistics()

    kernel.spawn("writer", program)
    run_strict(kernel.engine)
    assert seen["flags"] == (True, False, True)
    assert seen["ordered"] is None
    space = seen["space"]
    assert (space.bytes_may_use - space.metadata_reserved, space.bytes_pinned, space.delalloc_pages) == (PAGE_SIZE, 0, 1)
    assert space.metadata_reserved == ONE_PAGE_META  # the page is one outstanding extent again
    first_write = next(r for r in kernel.events("block_rq_complete") if r["op"] == "WRITE")
    assert first_write["error"] == int(BlkStatus.IOERR)
    assert kernel.bdev.statistics().nr_errors >= 1 and kernel.counters["writeback_errors"] >= 1


def test_flusher_write_creates_ordered_extent_until_finish_ordered_io():
    """The flusher's write makes an ordered extent that outlives PG_writeback by FINISH_ORDERED_IO_NS."""
    kernel = FakeBtrfsKernel(writeback=WritebackConfig(interval=10 * MS), service_ns=MS)
    seen = {}

    async def program(current: FakeTask) -> None:
        vmf, dirtied = await _dirty_page_2(kernel, current)
        await current.actor.sleep_until(dirtied + 11 * MS + FINISH_ORDERED_IO_NS // 2)
        seen["mid"] = (vmf.page.test(PageFlag.WRITEBACK), kernel.btrfs.ordered_extent(1, 2) is not None)
        await current.actor.sleep(FINISH_ORDERED_IO_NS)
        seen["end"] = kernel.btrfs.ordered_extent(1, 2)
        seen["space"] = kernel.btrfs.statistics()

    kernel.spawn("writer", program)
    run_strict(kernel.engine)
    assert seen["mid"] == (False, True)
    assert seen["end"] is None
    assert (seen["space"].bytes_may_use, seen["space"].bytes_pinned) == (0, PAGE_SIZE)


def test_wait_ordered_roots_waits_for_every_extent_in_creation_order():
    """``btrfs_wait_ordered_roots`` waits for each ordered extent existing now, oldest first, as ``io``."""
    kernel = FakeBtrfsKernel()
    ordered = kernel.btrfs.ordered
    assert isinstance(ordered, BtrfsOrderedTree)
    seen = {}

    async def program(current: FakeTask) -> None:
        first = ordered.btrfs_add_ordered_extent(current, [kernel.page(1), kernel.page(2)])
        second = ordered.btrfs_add_ordered_extent(current, [kernel.page(7)])
        kernel.engine.call_later(2 * MS, ordered.btrfs_finish_ordered_io, second)
        kernel.engine.call_later(3 * MS, ordered.btrfs_finish_ordered_io, first)
        seen["count"] = ordered.nr_ordered_extents()
        await ordered.btrfs_wait_ordered_roots(current)
        seen["now"] = current.actor.now_ns

    task = kernel.spawn("flusher", program)
    run_strict(kernel.engine)
    assert seen == {"count": 2, "now": 3 * MS}
    assert task.sleep_ns["io"] == 3 * MS
    assert [e["oe"] for e in kernel.events("btrfs_ordered_extent_start")] == [1, 2]
    assert ordered.nr_ordered_extents() == 0 and kernel.btrfs.statistics().bytes_pinned == 0
