"""Dirty-page accounting, dirty throttling and the flusher of one backing device.

Mirrors, at v4.19 and much simplified: mm/page-writeback.c
(``set_page_dirty`` → ``__set_page_dirty_nobuffers``/``account_page_dirtied``,
``balance_dirty_pages_ratelimited`` → ``balance_dirty_pages``,
``write_cache_pages`` with ``clear_page_dirty_for_io``/``set_page_writeback``,
``end_page_writeback`` bookkeeping) and fs/fs-writeback.c (the per-bdi
flusher: ``wb_workfn`` → ``wb_do_writeback`` → queued works, background
writeback, periodic "kupdate" writeback; ``wb_wakeup_delayed``;
``writeback_inodes_sb_nr``).

Theory of operation
-------------------

One ``Writeback`` per backing device ("bdi"), built by the ``Kernel`` right
after the block device. It owns:

* the dirty set: every page with PG_dirty whose ``mapping`` is set, per
  inode (inodes in first-dirtied order, like ``b_dirty``) and per index
  (a sorted list, so writeback walks each file in index order, cyclically
  from the inode's ``writeback_index`` as ``range_cyclic`` does);
* the counters ``nr_dirty`` (NR_FILE_DIRTY), ``nr_writeback``
  (NR_WRITEBACK), ``nr_written`` and ``writeback_errors``;
* the flusher, a kernel thread named ``flush-MAJ:MIN`` (root blkcg) that
  loops over work::

      wb_workfn ──▶ queued works (writeback_and_wait)      FIFO
               ──▶ background  (nr_dirty > dirty_limit/2)  kicked by balance_dirty_pages
               ──▶ periodic    (every ``interval`` while anything is dirty)
               ──▶ sleep until woken

  Periodic and background passes yield to queued works between chunks, as
  ``wb_writeback`` does, and resume afterwards. Each work takes chunks of up to ``batch_pages`` dirty pages of one inode
  (``trylock_page`` — skip if locked; skip if still under writeback, as
  ``WB_SYNC_NONE`` does; ``clear_page_dirty_for_io`` write-protects the PTEs
  with ``page_mkclean`` and clears PG_dirty; ``set_page_writeback``;
  ``unlock_page``) and hands each chunk to ``inode.fs.writepages(current,
  pages, end_io)``. The bios are submitted by the flusher, i.e. charged to
  the root cgroup, so io.latency never throttles them.

Completion (``end_io``, a bio callback: never blocks): per page,
``end_page_writeback`` plus accounting, then the ``completion_hooks``, then
whoever waits in ``writeback_and_wait``. A write error keeps the data: the
page is re-dirtied and ``writeback_errors`` counts it (the kernel would
``mapping_set_error(AS_EIO)`` and drop it; keeping it makes the "no dirty
data lost" invariant meaningful).

``balance_dirty_pages_ratelimited`` runs in the dirtying task (in a write
fault, with mmap_sem held unless the policy has ``bdp_drop_mmap_sem``, which
``actors.mm.memory`` handles). Every 32 pages a task dirties (8 once the limit
was exceeded, or when the one-CPU ``bdp_ratelimits`` reaches
``ratelimit_pages``) it checks ``nr_dirty + nr_writeback`` against
``dirty_limit_pages``: above it, the task wakes background writeback and
sleeps ``MAX_PAUSE`` (200 ms, ``io_schedule_timeout``: a fixed sleep, not
ended early) and re-checks, at most ``MAX_BDP_PAUSES`` times or until a fatal
signal. Above half the limit (``dirty_background_ratio`` vs
``dirty_ratio``) it kicks background writeback without pausing.

Emulation notes:
    * No per-task/per-wb bandwidth estimation and no "setpoint" region: below
      the limit a dirtier runs free, above it it pauses the maximum, which is
      what 4.19 does once ``task_ratelimit`` reaches zero (dirty beyond the
      hard threshold). Limits are page counts, not ratios of memory.
    * Periodic writeback writes every page dirty at the start of the pass
      (``dirty_expire_interval`` is treated as zero).
    * ``write_cache_pages`` takes ``lock_page`` (sleeping); the flusher here
      only trylocks and skips, so it never sleeps on a page lock.
    * The flusher keeps at most ``WB_MAX_INFLIGHT_CHUNKS`` chunks of writeback
      in flight (standing in for blk-wbt / request-tag exhaustion, which
      block the real flusher in ``submit_bio``).
    * ``set_page_dirty`` on a page with no mapping (truncated) only sets
      PG_dirty, as ``__set_page_dirty_nobuffers`` does.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, final

import attrs

from actors.kernel_types import BlkStatus, PageFlag
from actors.mm.mmap import page_mkclean
from actors.mm.page import end_page_writeback, trylock_page, unlock_page
from emu import NSEC_PER_MSEC, WaitQueue, bind_logger

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.kernel import Kernel
    from actors.mm.filemap import AddressSpace, Inode
    from actors.mm.page import Page
    from actors.sched.task import TaskStruct
    from actors.schema import WritebackConfig

#: ``MAX_PAUSE``: the longest single ``balance_dirty_pages`` sleep (HZ/5).
MAX_PAUSE_NS = 200 * NSEC_PER_MSEC
#: Pauses one ``balance_dirty_pages`` call takes at most before giving up (emulator bound).
MAX_BDP_PAUSES = 25
#: ``current->nr_dirtied_pause`` for 4 KiB pages (``128 >> (PAGE_SHIFT - 10)``).
RATELIMIT_PAGES = 32
#: The ratelimit while the limit is exceeded (``32 >> (PAGE_SHIFT - 10)``).
DIRTY_EXCEEDED_RATELIMIT = 8
#: Chunks of writeback the flusher keeps in flight (blk-wbt-like, see notes).
WB_MAX_INFLIGHT_CHUNKS = 4


@attrs.frozen(kw_only=True)
class WritebackStatistics:
    """The bdi's page counts, named as /proc/vmstat and the bdi stats print them.

    ``nr_dirty``/``nr_writeback`` are now; ``nr_dirtied``/``nr_written`` and
    ``writeback_errors`` (pages whose write failed and were re-dirtied) are
    totals; ``bdp_pauses``/``bdp_pause_ns`` total ``balance_dirty_pages``.
    """

    nr_dirty: int
    nr_writeback: int
    nr_dirtied: int
    nr_written: int
    writeback_errors: int
    dirty_exceeded: bool
    bdp_pauses: int
    bdp_pause_ns: int


@attrs.define(eq=False, kw_only=True)
class WbWritebackWork:
    """``struct wb_writeback_work``: one request to the flusher.

    Attributes:
        work_id: run-unique number (its trace name and wait key).
        nr_pages: pages still to write (background: until below the threshold).
        reason: ``"periodic"``, ``"background"`` or the caller's reason.
        sb: write only inodes of this filesystem (``writeback_inodes_sb_nr``).
        wait_for_io: the waiter wants the IO completed, not only submitted.
        pending: pages submitted and not yet completed.
        submitted: pages submitted in total.
        finished: the flusher is done taking pages for it.
    """

    work_id: int
    nr_pages: int
    reason: str
    sb: Any = None
    wait_for_io: bool = False
    pending: int = 0
    submitted: int = 0
    finished: bool = False

    @property
    def done(self) -> bool:
        return self.finished and (self.pending == 0 or not self.wait_for_io)


@final
class Writeback:
    """The backing device's writeback state and its flusher thread.

    Args:
        kernel: the machine (for the engine, the block device and counters).
        config: ``interval`` (periodic writeback), ``dirty_limit_pages`` and
            ``batch_pages`` (pages per ``writepages`` call).

    Attributes:
        completion_hooks: called as ``hook(bio)`` after each write bio's pages
            are accounted; must not block (bio completion context).
        flusher: the flusher's ``TaskStruct``.
    """

    def __init__(self, kernel: Kernel, config: WritebackConfig) -> None:
        self.kernel = kernel
        self.config = config
        self.engine = engine = kernel.engine
        dev = kernel.bdev.dev
        self.name = f"flush-{dev}"
        self.log = bind_logger(engine, engine.trace, actor=f"bdi-{dev}")
        self.completion_hooks: list[Callable[[Bio], None]] = []
        # The dirty set: ino -> sorted indices / index -> page; inodes in dirtied order.
        self._inodes: dict[int, Inode] = {}
        self._dirty_idx: dict[int, list[int]] = {}
        self._dirty_pages: dict[int, dict[int, Page]] = {}
        self._writeback_index: dict[int, int] = {}
        self._nr_dirty = 0
        self._nr_writeback = 0
        self._nr_dirtied = 0
        self._nr_written = 0
        self._errors = 0
        self._dirty_exceeded = False
        self._bdp_pauses = 0
        self._bdp_pause_ns = 0
        self._task_nr_dirtied: dict[str, int] = {}
        self._bdp_ratelimits = 0
        self._ratelimit_pages = max(16, config.dirty_limit_pages // 32)
        # The flusher's work.
        self._works: deque[WbWritebackWork] = deque()
        self._work_ids = 0
        self._background_due = False
        self._periodic_due = False
        self._timer_pending = False
        self._inflight_chunks = 0
        self._flusher_wq = WaitQueue(engine, f"{self.name} idle")
        self._slot_wq = WaitQueue(engine, f"{self.name} inflight", self._inflight_holders)
        self._work_wq = WaitQueue(engine, f"{self.name} work")
        self.flusher: TaskStruct = kernel.spawn_kthread(self.name, self._wb_workfn)

    def __repr__(self) -> str:
        return f"<Writeback {self.name}>"

    # -- dirtying -------------------------------------------------------------------

    def set_page_dirty(self, page: Page) -> bool:
        """Mirror of ``set_page_dirty()`` → ``__set_page_dirty_nobuffers()`` (v4.19).

        Sets PG_dirty; if it was clean and the page has a mapping, accounts it
        (``account_page_dirtied``) and queues it for writeback (arming the
        periodic flush, ``wb_wakeup_delayed``).

        Returns:
            ``True`` if the page was newly dirtied.
        """
        if page.flags & PageFlag.DIRTY:
            return False
        page.flags |= PageFlag.DIRTY
        if page.mapping is None:
            return True
        self._nr_dirtied += 1
        self._bdp_ratelimits += 1
        self._account_dirty(page)
        self.log.info("writeback_dirty_page", ino=page.mapping.host.ino, index=page.index)
        return True

    def _account_dirty(self, page: Page) -> None:
        inode = page.mapping.host
        ino = inode.ino
        pages = self._dirty_pages.get(ino)
        if pages is None:
            self._inodes[ino] = inode
            pages = self._dirty_pages[ino] = {}
            self._dirty_idx[ino] = []
        if page.index not in pages:
            pages[page.index] = page
            bisect.insort(self._dirty_idx[ino], page.index)
            self._nr_dirty += 1
        self._arm_timer()

    def _forget_dirty(self, ino: int, index: int) -> None:
        pages = self._dirty_pages[ino]
        del pages[index]
        indices = self._dirty_idx[ino]
        del indices[bisect.bisect_left(indices, index)]
        self._nr_dirty -= 1
        if not pages:
            del self._dirty_pages[ino], self._dirty_idx[ino], self._inodes[ino]

    def _arm_timer(self) -> None:
        """``wb_wakeup_delayed()``: periodic writeback ``interval`` from now, if not armed."""
        if not self._timer_pending and self._nr_dirty:
            self._timer_pending = True
            self.engine.call_later(self.config.interval, self._wb_timer_fn)

    def _wb_timer_fn(self) -> None:
        self._timer_pending = False
        self._periodic_due = True
        self._wakeup()

    # -- dirty throttling -------------------------------------------------------------

    async def balance_dirty_pages_ratelimited(self, current: TaskStruct, mapping: AddressSpace) -> None:
        """Mirror of ``balance_dirty_pages_ratelimited()`` (v4.19).

        Counts the page the caller just dirtied against its ratelimit and
        calls ``balance_dirty_pages`` when it is reached (see the module
        header). May sleep.
        """
        comm = current.comm
        nr_dirtied = self._task_nr_dirtied.get(comm, 0) + 1
        self._task_nr_dirtied[comm] = nr_dirtied
        ratelimit = DIRTY_EXCEEDED_RATELIMIT if self._dirty_exceeded else RATELIMIT_PAGES
        if nr_dirtied >= ratelimit:
            self._bdp_ratelimits = 0
        elif self._bdp_ratelimits >= self._ratelimit_pages:
            self._bdp_ratelimits = 0
            ratelimit = 0
        if nr_dirtied >= ratelimit:
            await self.balance_dirty_pages(current, mapping)
            self._task_nr_dirtied[comm] = 0

    async def balance_dirty_pages(self, current: TaskStruct, mapping: AddressSpace) -> int:
        """Mirror of ``balance_dirty_pages()`` (v4.19), over-the-limit regime only.

        While ``nr_dirty + nr_writeback`` exceeds ``dirty_limit_pages``: kick
        background writeback and sleep ``MAX_PAUSE_NS``, accounted as ``io``
        (at most ``MAX_BDP_PAUSES`` times; a fatal signal ends it). Afterwards
        kick background writeback if ``nr_dirty`` is above half the limit.

        Returns:
            The nanoseconds paused.
        """
        limit = self.config.dirty_limit_pages
        actor = current.actor
        paused = 0
        for pause_nr in range(MAX_BDP_PAUSES + 1):
            dirty = self._nr_dirty + self._nr_writeback
            if dirty <= limit:
                self._dirty_exceeded = False
                break
            if current.fatal_signal_pending():
                break
            if pause_nr == MAX_BDP_PAUSES:
                self.kernel.count("balance_dirty_pages_gave_up")
                break
            self._dirty_exceeded = True
            self.wakeup_flusher(0, reason="background")
            actor.log.info(
                "balance_dirty_pages", bdi=self.kernel.bdev.dev, ino=mapping.host.ino, dirty=dirty, limit=limit,
                nr_writeback=self._nr_writeback, pause_ns=MAX_PAUSE_NS, comm=current.comm, pid=current.pid,
            )  # fmt: skip
            await actor.sleep(MAX_PAUSE_NS)
            current.account_sleep("io", MAX_PAUSE_NS)
            paused += MAX_PAUSE_NS
            self._bdp_pauses += 1
            self._bdp_pause_ns += MAX_PAUSE_NS
            self.kernel.count("balance_dirty_pages_pauses")
            self.kernel.count("balance_dirty_pages_pause_ns", MAX_PAUSE_NS)
        if self._nr_dirty > limit // 2:
            self.wakeup_flusher(0, reason="background")
        return paused

    # -- waking the flusher ---------------------------------------------------------------

    def _wakeup(self) -> None:
        self._flusher_wq.wake("idle")

    def wakeup_flusher(self, nr_pages: int = 0, *, reason: str = "background", sb: Any = None) -> None:
        """Start writeback without waiting: ``wb_start_writeback``/``wb_start_background_writeback``.

        Args:
            nr_pages: pages to write; 0 means background writeback (until
                ``nr_dirty`` is at most half the limit).
            reason: for the trace (``wb_reason``).
            sb: only inodes of this filesystem (with *nr_pages*).
        """
        if nr_pages <= 0:
            self._background_due = True
            self.log.info("writeback_wake_background", bdi=self.kernel.bdev.dev)
        else:
            self._queue_work(nr_pages, reason, sb, wait_for_io=False)
        self._wakeup()

    def _queue_work(self, nr_pages: int, reason: str, sb: Any, *, wait_for_io: bool) -> WbWritebackWork:
        self._work_ids += 1
        work = WbWritebackWork(work_id=self._work_ids, nr_pages=nr_pages, reason=reason, sb=sb, wait_for_io=wait_for_io)
        self._works.append(work)
        self.log.info("writeback_queue", bdi=self.kernel.bdev.dev, work=work.work_id, nr_pages=nr_pages, reason=reason)
        return work

    async def writeback_and_wait(
        self, current: TaskStruct, nr_pages: int, *, sb: Any = None, wait_for_io: bool = True, reason: str = "fs_free_space"
    ) -> int:
        """Have the flusher write up to *nr_pages* dirty pages and wait for them.

        Mirrors ``writeback_inodes_sb_nr()`` (queue a work for the flusher and
        ``wb_wait_for_completion``), as btrfs's space flushing uses it. With
        *wait_for_io* (default) the wait lasts until the work's bios have
        completed, as ``filemap_fdatawait`` would add; without, only until the
        flusher has submitted them. The sleep is accounted as ``io``.

        Args:
            current: the waiting task.
            nr_pages: most pages to write.
            sb: only inodes whose ``fs`` is this object (``None``: any).
            wait_for_io: also wait for IO completion.
            reason: for the trace.

        Returns:
            The number of pages the work submitted.
        """
        work = self._queue_work(nr_pages, reason, sb, wait_for_io=wait_for_io)
        self._wakeup()
        actor = current.actor
        start = actor.now_ns
        if not work.done:
            await self._work_wq.wait(actor, work.work_id)
        waited = actor.now_ns - start
        if waited:
            current.account_sleep("io", waited)
        return work.submitted

    # -- the flusher --------------------------------------------------------------------

    def _inflight_holders(self) -> list[str]:
        return [f"{self.name} chunks_in_flight={self._inflight_chunks} nr_writeback={self._nr_writeback}"]

    def _next_work(self) -> WbWritebackWork | None:
        """``get_next_work_item()`` then ``wb_check_background_flush``/``wb_check_old_data_flush``."""
        if self._works:
            return self._works.popleft()
        if self._background_due:
            self._background_due = False
            if self._nr_dirty > self.config.dirty_limit_pages // 2:
                self._work_ids += 1
                return WbWritebackWork(work_id=self._work_ids, nr_pages=self._nr_dirty, reason="background")
        if self._periodic_due:
            self._periodic_due = False
            if self._nr_dirty:
                self._work_ids += 1
                return WbWritebackWork(work_id=self._work_ids, nr_pages=self._nr_dirty, reason="periodic")
        return None

    async def _wb_workfn(self, current: TaskStruct) -> None:
        """``wb_workfn()``: the flusher kthread's loop."""
        while True:
            work = self._next_work()
            if work is None:
                await self._flusher_wq.wait(current.actor, "idle")
                continue
            await self._wb_writeback(current, work)
            self._arm_timer()

    async def _wb_writeback(self, current: TaskStruct, work: WbWritebackWork) -> None:
        """``wb_writeback()``: write *work*'s pages in chunks of ``batch_pages``."""
        dev = self.kernel.bdev.dev
        current.actor.log.info("writeback_start", bdi=dev, work=work.work_id, nr_pages=work.nr_pages, reason=work.reason)
        background_thresh = self.config.dirty_limit_pages // 2
        while work.nr_pages > 0:
            if work.reason == "background" and self._nr_dirty <= background_thresh:
                break  # over_bground_thresh() is false
            if work.reason in ("background", "periodic") and self._works:
                # "Background writeout and kupdate-style writeback may run forever.
                # Stop them if there is other work to do" (restarted afterwards).
                if work.reason == "background":
                    self._background_due = True
                else:
                    self._periodic_due = True
                break
            while self._inflight_chunks >= WB_MAX_INFLIGHT_CHUNKS:
                await self._slot_wq.wait(current.actor, "slot")
            chunk = self._take_chunk(current, min(self.config.batch_pages, work.nr_pages), work.sb)
            if chunk is None:
                break  # everything left is locked or still under writeback
            inode, pages = chunk
            work.nr_pages -= len(pages)
            await self._submit(current, inode, pages, work)
        work.finished = True
        current.actor.log.info(
            "writeback_written", bdi=dev, work=work.work_id, submitted=work.submitted, reason=work.reason
        )
        self._maybe_complete(work)

    def _take_chunk(self, current: TaskStruct, nr: int, sb: Any) -> tuple[Inode, list[Page]] | None:
        """``write_cache_pages()`` (``WB_SYNC_NONE``): up to *nr* pages of the first writable inode."""
        for ino in list(self._dirty_pages):
            inode = self._inodes[ino]
            if sb is not None and inode.fs is not sb:
                continue
            indices = self._dirty_idx[ino]
            start = bisect.bisect_left(indices, self._writeback_index.get(ino, 0))
            order = indices[start:] + indices[:start]
            taken: list[Page] = []
            pages = self._dirty_pages[ino]
            for index in order:
                page = pages[index]
                if page.flags & PageFlag.WRITEBACK or not trylock_page(page, current.comm):
                    continue  # WB_SYNC_NONE: skip pages still under writeback, or locked
                if page.mapping is None or not page.flags & PageFlag.DIRTY:
                    self._forget_dirty(ino, index)  # truncated or cleaned meanwhile
                    unlock_page(current, page)
                    continue
                page_mkclean(page)  # clear_page_dirty_for_io()
                page.flags &= ~PageFlag.DIRTY
                self._forget_dirty(ino, index)
                page.flags |= PageFlag.WRITEBACK  # set_page_writeback()
                self._nr_writeback += 1
                unlock_page(current, page)
                taken.append(page)
                if len(taken) == nr:
                    break
            if taken:
                self._writeback_index[ino] = taken[-1].index + 1
                return inode, taken
        return None

    async def _submit(self, current: TaskStruct, inode: Inode, pages: list[Page], work: WbWritebackWork) -> None:
        """Hand one chunk to the filesystem (``do_writepages``); completion comes per bio."""
        self._inflight_chunks += 1
        work.pending += len(pages)
        work.submitted += len(pages)
        remaining = {"pages": len(pages)}

        def end_io(bio: Bio) -> None:
            self._end_bio(bio, work)
            remaining["pages"] -= len(bio.pages)
            if remaining["pages"] <= 0:
                self._inflight_chunks -= 1
                self._slot_wq.wake("slot")

        current.actor.log.info("wbc_writepage", bdi=self.kernel.bdev.dev, ino=inode.ino, index=pages[0].index, nr=len(pages))
        await inode.fs.writepages(current, pages, end_io)

    def _end_bio(self, bio: Bio, work: WbWritebackWork) -> None:
        """Write completion (``end_bio_*`` → ``end_page_writeback``); never blocks."""
        failed = bio.status != BlkStatus.OK
        for page in bio.pages:
            self._nr_writeback -= 1
            if failed:
                self._errors += 1
                page.flags |= PageFlag.ERROR
                if page.mapping is not None and not page.flags & PageFlag.DIRTY:
                    page.flags |= PageFlag.DIRTY  # keep the data: re-dirty (see module notes)
                    self._account_dirty(page)
            else:
                self._nr_written += 1
            end_page_writeback(page)
        if failed:
            self.kernel.count("writeback_errors", len(bio.pages))
            self.log.info("writeback_error", bio=bio.bio_id, nr=len(bio.pages), error=int(bio.status))
        else:
            self.kernel.count("writeback_pages", len(bio.pages))
        work.pending -= len(bio.pages)
        for hook in self.completion_hooks:
            hook(bio)
        self._maybe_complete(work)

    def _maybe_complete(self, work: WbWritebackWork) -> None:
        if work.done:
            self._work_wq.wake(work.work_id)

    # -- queries ----------------------------------------------------------------------

    def statistics(self) -> WritebackStatistics:
        """A snapshot of the bdi's counts."""
        return WritebackStatistics(
            nr_dirty=self._nr_dirty,
            nr_writeback=self._nr_writeback,
            nr_dirtied=self._nr_dirtied,
            nr_written=self._nr_written,
            writeback_errors=self._errors,
            dirty_exceeded=self._dirty_exceeded,
            bdp_pauses=self._bdp_pauses,
            bdp_pause_ns=self._bdp_pause_ns,
        )

    def dirty_pages(self) -> Iterator[Page]:
        """Every page the bdi holds as dirty (inodes in dirtied order, pages by index)."""
        for ino in list(self._dirty_pages):
            pages = self._dirty_pages[ino]
            for index in list(self._dirty_idx[ino]):
                yield pages[index]
