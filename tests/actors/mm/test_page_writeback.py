"""Tests for actors/mm/page_writeback.py through a real engine and block device.

The machine around the flusher is the small fake kernel of tests/actors/fakes.py,
with the generic filesystem on its device.
"""

from __future__ import annotations

from typing import Any

from actors.fs.generic import GenericFs
from actors.kernel_types import BlkStatus, PageFlag, ReqOp
from actors.lab.config import WritebackConfig
from actors.locking.rwsem import RwsemSemantics
from actors.mm.filemap import Inode, cached_fraction_fill
from actors.mm.mmap import MmStruct, VmFlag
from actors.mm.page import trylock_page, unlock_page
from actors.mm.page_writeback import MAX_PAUSE_NS, RATELIMIT_PAGES
from emu import NSEC_PER_MSEC
from emu.testing import run_strict
from tests.actors.fakes import FakeKernel, FakeTask

MS = NSEC_PER_MSEC


def _file(kernel: FakeKernel, nr_pages: int, fs: Any = None) -> Inode:
    """A fully cached file of *nr_pages* on *fs* (a ``GenericFs`` on the kernel's device by default)."""
    inode = Inode(1, "f", nr_pages * 4096, fs or GenericFs(kernel))
    cached_fraction_fill(inode, list(range(nr_pages)))
    return inode


def test_set_page_dirty_accounts_a_page_once():
    """``set_page_dirty`` dirties and accounts a clean page once; a second call is a no-op."""
    kernel = FakeKernel()
    inode = _file(kernel, 2)
    page = inode.i_mapping.pages[1]
    wb = kernel.writeback
    assert wb.set_page_dirty(page) is True
    assert wb.set_page_dirty(page) is False
    assert page.flags & PageFlag.DIRTY
    st = wb.statistics()
    assert (st.nr_dirty, st.nr_dirtied) == (1, 1)
    assert list(wb.dirty_pages()) == [page]


def test_flusher_sets_writeback_during_io_and_clears_on_completion():
    """Periodic writeback cleans the pages, write-protects their PTEs, holds PG_writeback during the IO only."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10 * MS), service_ns=2 * MS)
    inode = _file(kernel, 8)
    pages = [inode.i_mapping.pages[i] for i in (5, 1, 3)]
    mm = MmStruct(kernel.engine, "p", 1, RwsemSemantics.V4_19)
    vma = mm.insert_vma(8, VmFlag.READ | VmFlag.WRITE | VmFlag.SHARED, None, "m")
    for page in pages:
        mm.set_pte(vma.vm_start + page.index, page, True)
    seen: dict[str, Any] = {}

    async def program(current: FakeTask) -> None:
        wb = kernel.writeback
        for page in pages:
            wb.set_page_dirty(page)
        await current.actor.sleep(10 * MS + MS // 2)  # the periodic pass ran at 10 ms; the IO is in flight
        seen["during"] = [(p.test(PageFlag.DIRTY), p.test(PageFlag.WRITEBACK)) for p in pages]
        seen["ptes"] = [mm.ptes.pte_write(vma.vm_start + p.index) for p in pages]
        seen["stats_during"] = wb.statistics()
        await current.actor.sleep(5 * MS)
        seen["after"] = [(p.test(PageFlag.DIRTY), p.test(PageFlag.WRITEBACK)) for p in pages]
        seen["stats_after"] = wb.statistics()

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["during"] == [(False, True)] * 3
    assert seen["ptes"] == [False] * 3  # clear_page_dirty_for_io -> page_mkclean
    assert (seen["stats_during"].nr_dirty, seen["stats_during"].nr_writeback) == (0, 3)
    assert seen["after"] == [(False, False)] * 3
    assert (seen["stats_after"].nr_writeback, seen["stats_after"].nr_written) == (0, 3)
    writes = [r for r in kernel.events("block_bio_queue") if r["op"] == "WRITE"]
    assert len(writes) == 1 and writes[0]["blkcg"] == "" and writes[0]["comm"] == "flush-8:0"
    assert kernel.events("wbc_writepage")[0]["index"] == 1  # index order
    assert kernel.counters["writeback_pages"] == 3


def test_flusher_skips_locked_pages():
    """A locked page is skipped by the flusher (trylock) and stays dirty for a later pass."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10 * MS))
    inode = _file(kernel, 2)
    locked, free = inode.i_mapping.pages[0], inode.i_mapping.pages[1]
    seen = {}

    async def program(current: FakeTask) -> None:
        kernel.writeback.set_page_dirty(locked)
        kernel.writeback.set_page_dirty(free)
        assert trylock_page(locked, current.comm)
        await current.actor.sleep(15 * MS)
        seen["first"] = (locked.test(PageFlag.DIRTY), free.test(PageFlag.DIRTY))
        unlock_page(current, locked)
        await current.actor.sleep(20 * MS)
        seen["later"] = locked.test(PageFlag.DIRTY)

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen == {"first": (True, False), "later": False}


def test_balance_dirty_pages_pauses_over_limit():
    """Over ``dirty_limit_pages`` the dirtier wakes the flusher and sleeps MAX_PAUSE (an ``io`` sleep) until below."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, dirty_limit_pages=4, batch_pages=2), service_ns=MS)
    inode = _file(kernel, 10)
    seen = {}

    async def program(current: FakeTask) -> None:
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        start = current.actor.now_ns
        seen["paused"] = await kernel.writeback.balance_dirty_pages(current, inode.i_mapping)
        seen["elapsed"] = current.actor.now_ns - start
        seen["stats"] = kernel.writeback.statistics()

    task = kernel.spawn("dirtier", program)
    run_strict(kernel.engine)
    assert seen["paused"] == seen["elapsed"] == MAX_PAUSE_NS  # the flusher cleaned everything within one pause
    assert task.sleep_ns["io"] == MAX_PAUSE_NS
    assert seen["stats"].nr_dirty + seen["stats"].nr_writeback <= 4
    assert seen["stats"].bdp_pauses == 1
    (event,) = kernel.events("balance_dirty_pages")
    assert (event["dirty"], event["limit"], event["pause_ns"], event["comm"]) == (10, 4, MAX_PAUSE_NS, "dirtier")
    assert kernel.counters["balance_dirty_pages_pauses"] == 1


def test_balance_dirty_pages_does_not_pause_under_limit():
    """At or below the limit ``balance_dirty_pages`` returns at once."""
    kernel = FakeKernel(writeback=WritebackConfig(dirty_limit_pages=16))
    inode = _file(kernel, 4)
    seen = {}

    async def program(current: FakeTask) -> None:
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        seen["paused"] = await kernel.writeback.balance_dirty_pages(current, inode.i_mapping)

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["paused"] == 0 and not kernel.events("balance_dirty_pages")


def test_balance_dirty_pages_ratelimited_checks_every_32_pages():
    """The ratelimited entry checks only once a task has dirtied RATELIMIT_PAGES pages."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, dirty_limit_pages=1024))
    inode = _file(kernel, 4)
    seen = {}

    async def program(current: FakeTask) -> None:
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        kernel.writeback.config = WritebackConfig(dirty_limit_pages=1)  # now far over the limit
        for _ in range(RATELIMIT_PAGES - 1):
            await kernel.writeback.balance_dirty_pages_ratelimited(current, inode.i_mapping)
        seen["before"] = current.actor.now_ns
        await kernel.writeback.balance_dirty_pages_ratelimited(current, inode.i_mapping)
        seen["after"] = current.actor.now_ns

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["before"] == 0 and seen["after"] >= MAX_PAUSE_NS


def test_write_error_keeps_page_dirty():
    """A WRITE bio failed by the device's ``bio_error`` hook re-dirties the page (data kept), ends
    writeback and counts ``writeback_errors``; the device counts and traces the error."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=5 * MS), bio_error=lambda bio: bio.op == ReqOp.WRITE)
    inode = _file(kernel, 2)
    page = inode.i_mapping.pages[0]
    seen = {}

    async def program(current: FakeTask) -> None:
        kernel.writeback.set_page_dirty(page)
        await current.actor.sleep(7 * MS)  # one pass at 5 ms, the IO took 1 ms
        seen["flags"] = (page.test(PageFlag.DIRTY), page.test(PageFlag.WRITEBACK), page.test(PageFlag.ERROR))
        seen["stats"] = kernel.writeback.statistics()
        seen["dirty"] = list(kernel.writeback.dirty_pages())

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["flags"] == (True, False, True)
    st = seen["stats"]
    assert (st.nr_dirty, st.nr_writeback, st.nr_written, st.writeback_errors) == (1, 0, 0, 1)
    assert seen["dirty"] == [page]
    assert kernel.counters["writeback_errors"] == 1
    (complete,) = kernel.events("block_rq_complete")
    assert (complete["op"], complete["error"]) == ("WRITE", int(BlkStatus.IOERR))
    assert kernel.bdev.statistics().nr_errors == 1
    (error,) = kernel.events("writeback_error")
    assert (error["bio"], error["nr"], error["error"]) == (complete["bio"], 1, int(BlkStatus.IOERR))


def test_failed_write_is_written_again_by_a_later_pass():
    """Nothing is lost: once the device stops failing, the next pass writes the re-dirtied page."""
    failing = [True]
    kernel = FakeKernel(writeback=WritebackConfig(interval=5 * MS), bio_error=lambda bio: failing[0])
    inode = _file(kernel, 1)
    page = inode.i_mapping.pages[0]
    seen = {}

    async def program(current: FakeTask) -> None:
        kernel.writeback.set_page_dirty(page)
        await current.actor.sleep(7 * MS)  # first pass at 5 ms failed
        failing[0] = False
        await current.actor.sleep(15 * MS)  # the next periodic pass (at 11 ms) writes it
        seen["flags"] = (page.test(PageFlag.DIRTY), page.test(PageFlag.WRITEBACK))
        seen["stats"] = kernel.writeback.statistics()

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["flags"] == (False, False)
    st = seen["stats"]
    assert (st.nr_dirty, st.nr_written, st.writeback_errors) == (0, 1, 1)
    assert [r["error"] for r in kernel.events("block_rq_complete")] == [int(BlkStatus.IOERR), 0]
    assert kernel.bdev.statistics().nr_errors == 1


def test_writeback_and_wait_returns_after_the_io_completed():
    """``writeback_and_wait`` sleeps (``io``) until the flusher's bios for it complete."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, batch_pages=2), service_ns=3 * MS)
    inode = _file(kernel, 5)
    seen = {}

    async def program(current: FakeTask) -> None:
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        seen["written"] = await kernel.writeback.writeback_and_wait(current, 3)
        seen["now"] = current.actor.now_ns
        seen["stats"] = kernel.writeback.statistics()

    task = kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["written"] == 3
    assert seen["now"] == 6 * MS  # two bios (2 + 1 pages), one after the other
    assert (seen["stats"].nr_dirty, seen["stats"].nr_writeback, seen["stats"].nr_written) == (2, 0, 3)
    assert task.sleep_ns["io"] == 6 * MS
