"""Tests for actors/mm/page_writeback.py through a real engine and block device, with a small fake kernel."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

from actors.block.bio import Bio
from actors.block.blkdev import BlockDevice, submit_bio
from actors.config import WritebackConfig
from actors.fs.generic import GenericFs
from actors.kernel_types import BlkStatus, PageFlag, ReqOp
from actors.locking.rwsem import RwsemSemantics
from actors.mm.filemap import Inode, cached_fraction_fill
from actors.mm.mmap import MmStruct, VmFlag
from actors.mm.page import trylock_page, unlock_page
from actors.mm.page_writeback import MAX_PAUSE_NS, RATELIMIT_PAGES, Writeback
from actors.policy import PRESETS
from emu import NSEC_PER_MSEC, Engine
from emu.testing import records, run_strict

MS = NSEC_PER_MSEC


class FakeTask:
    """The parts of ``TaskStruct`` the writeback paths use."""

    def __init__(self, kernel: FakeKernel, comm: str, blkcg: str = "") -> None:
        self.kernel = kernel
        self.comm = comm
        self.thread = comm
        self.pid = kernel.next_pid()
        self.blkcg = blkcg
        self.mm = None
        self.actor: Any = None
        self.mmap_sem_held: list = []
        self.killable_queue = None
        self.dropped_vma = None
        self.throttle_queue = None
        self.pending_sigkill = False
        self.sleep_ns: dict[str, int] = defaultdict(int)

    def fatal_signal_pending(self) -> bool:
        return self.pending_sigkill

    def account_sleep(self, kind: str, ns: int) -> None:
        self.sleep_ns[kind] += ns


class FakeKernel:
    """Engine, device, counters and kthreads: what ``Writeback`` needs of ``Kernel``."""

    def __init__(self, *, writeback: WritebackConfig | None = None, service_ns: int = MS) -> None:
        self.engine = Engine(seed=0, horizon_ns=60_000 * MS)
        self.policy = PRESETS["v4.19"]
        self.config = SimpleNamespace(writeback=writeback or WritebackConfig())
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.bdev = BlockDevice(self.engine, service_time=lambda bio: service_ns)
        self._pid = 100
        self._bio_id = 0
        self.writeback = Writeback(self, self.config.writeback)
        self.generic = GenericFs(self)

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def next_bio_id(self) -> int:
        self._bio_id += 1
        return self._bio_id

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def spawn_kthread(self, name: str, fn: Callable[[Any], Coroutine[Any, Any, None]]) -> FakeTask:
        task = FakeTask(self, name)

        async def main(actor: Any) -> None:
            await fn(task)

        task.actor = self.engine.spawn(name, main, daemon=True)
        return task

    def spawn(self, comm: str, fn: Callable[[FakeTask], Coroutine[Any, Any, None]]) -> FakeTask:
        task = FakeTask(self, comm)

        async def main(actor: Any) -> None:
            await fn(task)

        task.actor = self.engine.spawn(comm, main)
        return task

    def file(self, nr_pages: int, fs: Any = None) -> Inode:
        inode = Inode(1, "f", nr_pages * 4096, fs or self.generic)
        cached_fraction_fill(inode, list(range(nr_pages)))
        return inode


def _events(kernel: FakeKernel, name: str) -> list[dict[str, Any]]:
    return [r for r in records(kernel.engine) if r["event"] == name]


def test_set_page_dirty_accounts_a_page_once():
    """``set_page_dirty`` dirties and accounts a clean page once; a second call is a no-op."""
    kernel = FakeKernel()
    inode = kernel.file(2)
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
    inode = kernel.file(8)
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
        seen["ptes"] = [mm.ptes[vma.vm_start + p.index].write for p in pages]
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
    writes = [r for r in _events(kernel, "block_bio_queue") if r["op"] == "WRITE"]
    assert len(writes) == 1 and writes[0]["blkcg"] == "" and writes[0]["comm"] == "flush-8:0"
    assert _events(kernel, "wbc_writepage")[0]["index"] == 1  # index order
    assert kernel.counters["writeback_pages"] == 3


def test_flusher_skips_locked_pages():
    """A locked page is skipped by the flusher (trylock) and stays dirty for a later pass."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10 * MS))
    inode = kernel.file(2)
    locked, free = inode.i_mapping.pages[0], inode.i_mapping.pages[1]
    seen = {}

    async def program(current: FakeTask) -> None:
        kernel.writeback.set_page_dirty(locked)
        kernel.writeback.set_page_dirty(free)
        assert trylock_page(locked, current.comm)
        await current.actor.sleep(15 * MS)
        seen["first"] = (locked.test(PageFlag.DIRTY), free.test(PageFlag.DIRTY))
        unlock_page(locked)
        await current.actor.sleep(20 * MS)
        seen["later"] = locked.test(PageFlag.DIRTY)

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen == {"first": (True, False), "later": False}


def test_balance_dirty_pages_pauses_over_limit():
    """Over ``dirty_limit_pages`` the dirtier wakes the flusher and sleeps MAX_PAUSE (an ``io`` sleep) until below."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, dirty_limit_pages=4, batch_pages=2), service_ns=MS)
    inode = kernel.file(10)
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
    (event,) = _events(kernel, "balance_dirty_pages")
    assert (event["dirty"], event["limit"], event["pause_ns"], event["comm"]) == (10, 4, MAX_PAUSE_NS, "dirtier")
    assert kernel.counters["balance_dirty_pages_pauses"] == 1


def test_balance_dirty_pages_does_not_pause_under_limit():
    """At or below the limit ``balance_dirty_pages`` returns at once."""
    kernel = FakeKernel(writeback=WritebackConfig(dirty_limit_pages=16))
    inode = kernel.file(4)
    seen = {}

    async def program(current: FakeTask) -> None:
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        seen["paused"] = await kernel.writeback.balance_dirty_pages(current, inode.i_mapping)

    kernel.spawn("t", program)
    run_strict(kernel.engine)
    assert seen["paused"] == 0 and not _events(kernel, "balance_dirty_pages")


def test_balance_dirty_pages_ratelimited_checks_every_32_pages():
    """The ratelimited entry checks only once a task has dirtied RATELIMIT_PAGES pages."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, dirty_limit_pages=1024))
    inode = kernel.file(4)
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


class FailingWriteFs:
    """A filesystem whose writes reach the device and then fail with -EIO."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel

    async def writepages(self, current: FakeTask, pages: list, end_io) -> None:
        def fail(bio: Bio) -> None:
            bio.status = BlkStatus.IOERR
            end_io(bio)

        bio = Bio(bio_id=self.kernel.next_bio_id(), op=ReqOp.WRITE, pages=pages, blkcg=current.blkcg,
                  bi_end_io=fail, bi_disk=self.kernel.bdev)  # fmt: skip
        await submit_bio(current, bio)


def test_write_error_keeps_page_dirty():
    """A failed write re-dirties the page (data kept), ends writeback and counts ``writeback_errors``."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=5 * MS))
    inode = kernel.file(2, fs=FailingWriteFs(kernel))
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


def test_writeback_and_wait_returns_after_the_io_completed():
    """``writeback_and_wait`` sleeps (``io``) until the flusher's bios for it complete."""
    kernel = FakeKernel(writeback=WritebackConfig(interval=10_000 * MS, batch_pages=2), service_ns=3 * MS)
    inode = kernel.file(5)
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
