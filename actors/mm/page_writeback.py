"""Dirty-page accounting, dirty throttling and the flusher of one backing device.

Mirrors, at v4.19 and much simplified: mm/page-writeback.c
(``set_page_dirty`` → ``__set_page_dirty_nobuffers``/``account_page_dirtied``,
``balance_dirty_pages_ratelimited`` → ``balance_dirty_pages`` with its global
and memcg domains, ``write_cache_pages`` with
``clear_page_dirty_for_io``/``set_page_writeback``, ``end_page_writeback``
bookkeeping) and fs/fs-writeback.c (the flusher of each ``bdi_writeback``:
``wb_workfn`` → ``wb_do_writeback`` → queued works, background writeback,
periodic "kupdate" writeback; ``wb_wakeup_delayed``; ``inode_attach_wb``;
``writeback_inodes_sb_nr``), with ``CONFIG_CGROUP_WRITEBACK``.

Theory of operation
-------------------

One ``Writeback`` per backing device ("bdi"), built by the ``Kernel`` right
after the block device. With cgroup writeback (``[machine]
cgroup_writeback``, the default) the bdi has one ``BdiWriteback`` ("wb") per
cgroup that dirties pages, made on first use (``wb_get_create``), besides
the root's ``bdi->wb``. An inode belongs to the wb of the cgroup that first
dirtied it (``inode_attach_wb`` from ``__mark_inode_dirty``); its pages are
counted dirty and under writeback in that wb, and written by that wb's
flusher, whose bios are charged to the wb's cgroup (``wbc_init_bio`` →
``bio_associate_blkg_from_css``, accounted by ``wbc_account_io``): they go
through io.latency and io.max like the group's own reads, and a throttled
group's flusher sleeps in ``rq_qos_throttle``. The bdi owns:

* the dirty set: every page with PG_dirty whose ``mapping`` is set, per
  inode (inodes in first-dirtied order, like ``b_dirty``) and per index
  (a sorted list, so writeback walks each file in index order, cyclically
  from the inode's ``writeback_index`` as ``range_cyclic`` does);
* the counters ``nr_dirty`` (NR_FILE_DIRTY), ``nr_writeback``
  (NR_WRITEBACK), ``nr_written`` and ``writeback_errors``; each wb keeps its
  own ``nr_dirty``/``nr_writeback`` too;
* per wb, a flusher: a kernel thread named ``flush-MAJ:MIN`` for the root
  wb and ``flush-MAJ:MIN:<cgroup>`` for a cgroup's (the kernel runs each wb's
  work item on a ``bdi_wq`` kworker, so one blocked wb does not stop the
  others), looping over that wb's work::

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
  pages, end_io)``. The bios are submitted by the wb's flusher and charged
  to the wb's cgroup (the flusher task carries it as its ``blkcg``); without
  cgroup writeback everything is the root wb's, which io.latency never
  throttles.

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
``ratelimit_pages``) it checks two domains, as 4.19 does with ``gdtc`` and
``mdtc``: the global ``nr_dirty + nr_writeback`` against
``dirty_limit_pages``, and its own cgroup's wb (``wb_get_create_current``)
against that cgroup's ``dirty_limit_pages``. Above either, the task wakes
its wb's background writeback and sleeps ``MAX_PAUSE`` (200 ms,
``io_schedule_timeout``: a fixed sleep, not ended early) and re-checks, at
most ``MAX_BDP_PAUSES`` times or until a fatal signal. So a write fault can
pause because its own group's writeback is throttled. Above half a limit
(``dirty_background_ratio`` vs ``dirty_ratio``) it kicks background
writeback without pausing.

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
    * A wb is one cgroup for both memcg and blkcg (the model's cgroups are
      unified), and a page's memcg is its inode's wb: dirty and writeback
      pages are counted in the inode's wb, where the kernel counts the
      memcg stats of the page's own memcg. Inodes never switch wb (no
      foreign-inode detection, ``inode_switch_wbs``).
    * The memcg domain's limit is the cgroup's ``dirty_limit_pages``; the
      kernel derives it from ``memory.max`` and the cgroup's file pages
      (``mdtc_calc_avail``). Without one the domain's limit is the global
      limit, as for a memcg with no ``memory.max``.
    * ``writeback_inodes_sb_nr`` gives every wb with dirty pages the whole
      ``nr_pages`` (``bdi_split_work_to_wbs`` divides it by write bandwidth,
      which is not estimated) and waits for all of them.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator, Mapping
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
class BdiWriteback:
    """``struct bdi_writeback``: one cgroup's dirty pages and flusher on the bdi (``""`` is ``bdi->wb``).

    Attributes:
        blkcg: the cgroup (memcg and blkcg) whose writeback this is.
        dirty_limit: the memcg domain's dirty limit (``mdtc->thresh``).
        nr_dirty, nr_writeback: the wb's pages (the memcg stats ``mdtc`` reads).
        flusher: the wb's flusher task.
    """

    blkcg: str
    dirty_limit: int
    name: str
    nr_dirty: int = 0
    nr_writeback: int = 0
    works: deque[WbWritebackWork] = attrs.field(factory=deque)
    background_due: bool = False
    periodic_due: bool = False
    timer_pending: bool = False
    inflight_chunks: int = 0
    flusher_wq: WaitQueue | None = None
    slot_wq: WaitQueue | None = None
    flusher: TaskStruct | None = None


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
    """The backing device's writeback state and the flusher of each of its wbs.

    Args:
        kernel: the machine (for the engine, the block device and counters).
        config: ``interval`` (periodic writeback), ``dirty_limit_pages`` and
            ``batch_pages`` (pages per ``writepages`` call).
        cgroup_writeback: one wb per dirtying cgroup (else the root's only).
        memcg_dirty_limits: cgroup path → its domain's dirty limit, where set.

    Attributes:
        completion_hooks: called as ``hook(bio)`` after each write bio's pages
            are accounted; must not block (bio completion context).
        flusher: the root wb's flusher ``TaskStruct``.
    """

    def __init__(
        self,
        kernel: Kernel,
        config: WritebackConfig,
        *,
        cgroup_writeback: bool = False,
        memcg_dirty_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.kernel = kernel
        self.config = config
        self.engine = engine = kernel.engine
        dev = kernel.bdev.dev
        self.name = f"flush-{dev}"
        self.log = bind_logger(engine, engine.trace, actor=f"bdi-{dev}")
        self.completion_hooks: list[Callable[[Bio], None]] = []
        self.cgroup_writeback = cgroup_writeback
        self._memcg_dirty_limits = dict(memcg_dirty_limits or {})
        # The dirty set: ino -> sorted indices / index -> page; inodes in dirtied order.
        self._inodes: dict[int, Inode] = {}
        self._dirty_idx: dict[int, list[int]] = {}
        self._dirty_pages: dict[int, dict[int, Page]] = {}
        self._writeback_index: dict[int, int] = {}
        #: ``inode->i_wb``: the wb each inode was attached to.
        self._i_wb: dict[int, BdiWriteback] = {}
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
        self._work_ids = 0
        self._work_wq = WaitQueue(engine, f"{self.name} work")
        self._wbs: dict[str, BdiWriteback] = {}
        self.flusher: TaskStruct = self._wb_get_create("").flusher

    def __repr__(self) -> str:
        return f"<Writeback {self.name}>"

    # -- wbs ------------------------------------------------------------------------------

    def _wb_get_create(self, blkcg: str) -> BdiWriteback:
        """``wb_get_create()``: the wb of *blkcg* (the root's without cgroup writeback), made with its flusher."""
        if not self.cgroup_writeback:
            blkcg = ""
        wb = self._wbs.get(blkcg)
        if wb is not None:
            return wb
        name = self.name if not blkcg else f"{self.name}:{blkcg}"
        wb = BdiWriteback(
            blkcg=blkcg, name=name, dirty_limit=self._memcg_dirty_limits.get(blkcg, self.config.dirty_limit_pages)
        )
        wb.flusher_wq = WaitQueue(self.engine, f"{name} idle")
        wb.slot_wq = WaitQueue(self.engine, f"{name} inflight", lambda wb=wb: self._inflight_holders(wb))
        self._wbs[blkcg] = wb

        async def workfn(current: TaskStruct) -> None:
            await self._wb_workfn(current, wb)

        wb.flusher = self.kernel.spawn_kthread(name, workfn)
        # The flusher's bios are charged to the wb's cgroup (wbc_init_bio).
        wb.flusher.blkcg = blkcg
        return wb

    def _current_blkcg(self) -> str:
        """The cgroup of ``current`` (the running task), the root for a callback or a kthread."""
        actor = self.engine.current
        for task in self.kernel.tasks:
            if task.actor is actor:
                return task.blkcg
        return ""

    def inode_to_wb(self, inode: Inode) -> BdiWriteback:
        """``inode_to_wb()``, attaching it first (``inode_attach_wb``) to the wb of ``current``'s cgroup."""
        wb = self._i_wb.get(inode.ino)
        if wb is None:
            wb = self._i_wb[inode.ino] = self._wb_get_create(self._current_blkcg())
        return wb

    # -- dirtying -------------------------------------------------------------------

    def set_page_dirty(self, page: Page) -> bool:
        """Mirror of ``set_page_dirty()`` → ``__set_page_dirty_nobuffers()`` (v4.19).

        Sets PG_dirty; if it was clean and the page has a mapping, accounts it
        (``account_page_dirtied``, in the inode's wb, attaching the inode to
        the dirtying task's wb if it has none) and queues it for writeback
        (arming that wb's periodic flush, ``wb_wakeup_delayed``).

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
        wb = self.inode_to_wb(inode)
        pages = self._dirty_pages.get(ino)
        if pages is None:
            self._inodes[ino] = inode
            pages = self._dirty_pages[ino] = {}
            self._dirty_idx[ino] = []
        if page.index not in pages:
            pages[page.index] = page
            bisect.insort(self._dirty_idx[ino], page.index)
            self._nr_dirty += 1
            wb.nr_dirty += 1
        self._arm_timer(wb)

    def _forget_dirty(self, ino: int, index: int) -> None:
        pages = self._dirty_pages[ino]
        del pages[index]
        indices = self._dirty_idx[ino]
        del indices[bisect.bisect_left(indices, index)]
        self._nr_dirty -= 1
        self._i_wb[ino].nr_dirty -= 1
        if not pages:
            del self._dirty_pages[ino], self._dirty_idx[ino], self._inodes[ino]

    def _arm_timer(self, wb: BdiWriteback) -> None:
        """``wb_wakeup_delayed()``: the wb's periodic writeback ``interval`` from now, if not armed."""
        if not wb.timer_pending and wb.nr_dirty:
            wb.timer_pending = True
            self.engine.call_later(self.config.interval, self._wb_timer_fn, wb)

    def _wb_timer_fn(self, wb: BdiWriteback) -> None:
        wb.timer_pending = False
        wb.periodic_due = True
        self._wakeup(wb)

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

    def _over_limit(self, wb: BdiWriteback) -> tuple[int, int] | None:
        """The (dirty, limit) of the first domain over its limit: global (``gdtc``), then the wb's memcg (``mdtc``)."""
        dirty, limit = self._nr_dirty + self._nr_writeback, self.config.dirty_limit_pages
        if dirty > limit:
            return dirty, limit
        if wb.blkcg and wb.nr_dirty + wb.nr_writeback > wb.dirty_limit:
            return wb.nr_dirty + wb.nr_writeback, wb.dirty_limit
        return None

    def _over_bg_thresh(self, wb: BdiWriteback) -> bool:
        """``wb_over_bg_thresh()`` (v4.19): global dirty above half its limit, or the wb's memcg above half its own."""
        if self._nr_dirty > self.config.dirty_limit_pages // 2:
            return True
        return bool(wb.blkcg) and wb.nr_dirty > wb.dirty_limit // 2

    async def balance_dirty_pages(self, current: TaskStruct, mapping: AddressSpace) -> int:
        """Mirror of ``balance_dirty_pages()`` (v4.19), over-the-limit regime only.

        The domains are the global one and the memcg one of *current*'s wb
        (``wb_get_create_current``). While either is over its limit: kick
        the wb's background writeback and sleep ``MAX_PAUSE_NS``, accounted
        as ``io`` (at most ``MAX_BDP_PAUSES`` times; a fatal signal ends it).
        Afterwards kick background writeback if over a background threshold.

        Returns:
            The nanoseconds paused.
        """
        wb = self._wb_get_create(current.blkcg)
        actor = current.actor
        paused = 0
        for pause_nr in range(MAX_BDP_PAUSES + 1):
            over = self._over_limit(wb)
            if over is None:
                self._dirty_exceeded = False
                break
            if current.fatal_signal_pending():
                break
            if pause_nr == MAX_BDP_PAUSES:
                self.kernel.count("balance_dirty_pages_gave_up")
                break
            dirty, limit = over
            self._dirty_exceeded = True
            self.wakeup_flusher(0, reason="background", wb=wb)
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
        if self._over_bg_thresh(wb):
            self.wakeup_flusher(0, reason="background", wb=wb)
        return paused

    # -- waking the flusher ---------------------------------------------------------------

    def _wakeup(self, wb: BdiWriteback) -> None:
        wb.flusher_wq.wake("idle")

    def wakeup_flusher(
        self, nr_pages: int = 0, *, reason: str = "background", sb: Any = None, wb: BdiWriteback | None = None
    ) -> None:
        """Start writeback without waiting: ``wb_start_writeback``/``wb_start_background_writeback``.

        Args:
            nr_pages: pages to write; 0 means background writeback (while
                ``wb_over_bg_thresh``).
            reason: for the trace (``wb_reason``).
            sb: only inodes of this filesystem (with *nr_pages*).
            wb: the wb to start (default: the root's).
        """
        wb = self._wbs[""] if wb is None else wb
        if nr_pages <= 0:
            wb.background_due = True
            self.log.info("writeback_wake_background", bdi=self.kernel.bdev.dev)
        else:
            self._queue_work(wb, nr_pages, reason, sb, wait_for_io=False)
        self._wakeup(wb)

    def _queue_work(self, wb: BdiWriteback, nr_pages: int, reason: str, sb: Any, *, wait_for_io: bool) -> WbWritebackWork:
        self._work_ids += 1
        work = WbWritebackWork(work_id=self._work_ids, nr_pages=nr_pages, reason=reason, sb=sb, wait_for_io=wait_for_io)
        wb.works.append(work)
        self.log.info("writeback_queue", bdi=self.kernel.bdev.dev, work=work.work_id, nr_pages=nr_pages, reason=reason)
        return work

    async def writeback_and_wait(
        self, current: TaskStruct, nr_pages: int, *, sb: Any = None, wait_for_io: bool = True, reason: str = "fs_free_space"
    ) -> int:
        """Have the flushers write up to *nr_pages* dirty pages each and wait for them.

        Mirrors ``writeback_inodes_sb_nr()`` (``bdi_split_work_to_wbs``: a
        work for every wb with dirty pages, or for the root wb alone without
        cgroup writeback; then ``wb_wait_for_completion``), as btrfs's space
        flushing uses it. With *wait_for_io* (default) the wait
        lasts until the works' bios have completed, as ``filemap_fdatawait``
        would add; without, only until the flushers have submitted them. The
        sleep is accounted as ``io``.

        Args:
            current: the waiting task.
            nr_pages: most pages to write, per wb.
            sb: only inodes whose ``fs`` is this object (``None``: any).
            wait_for_io: also wait for IO completion.
            reason: for the trace.

        Returns:
            The number of pages the works submitted.
        """
        works = []
        for wb in list(self._wbs.values()):
            if self.cgroup_writeback and not wb.nr_dirty:
                continue  # !wb_has_dirty_io(wb): WB_SYNC_NONE skips it
            works.append(self._queue_work(wb, nr_pages, reason, sb, wait_for_io=wait_for_io))
            self._wakeup(wb)
        actor = current.actor
        start = actor.now_ns
        for work in works:
            if not work.done:
                await self._work_wq.wait(actor, work.work_id)
        waited = actor.now_ns - start
        if waited:
            current.account_sleep("io", waited)
        return sum(work.submitted for work in works)

    # -- the flusher --------------------------------------------------------------------

    def _inflight_holders(self, wb: BdiWriteback) -> list[str]:
        return [f"{wb.name} chunks_in_flight={wb.inflight_chunks} nr_writeback={wb.nr_writeback}"]

    def _next_work(self, wb: BdiWriteback) -> WbWritebackWork | None:
        """``get_next_work_item()`` then ``wb_check_background_flush``/``wb_check_old_data_flush``."""
        if wb.works:
            return wb.works.popleft()
        if wb.background_due:
            wb.background_due = False
            if self._over_bg_thresh(wb):
                self._work_ids += 1
                return WbWritebackWork(work_id=self._work_ids, nr_pages=wb.nr_dirty, reason="background")
        if wb.periodic_due:
            wb.periodic_due = False
            if wb.nr_dirty:
                self._work_ids += 1
                return WbWritebackWork(work_id=self._work_ids, nr_pages=wb.nr_dirty, reason="periodic")
        return None

    async def _wb_workfn(self, current: TaskStruct, wb: BdiWriteback) -> None:
        """``wb_workfn()``: the wb's flusher loop."""
        while True:
            work = self._next_work(wb)
            if work is None:
                await wb.flusher_wq.wait(current.actor, "idle")
                continue
            await self._wb_writeback(current, wb, work)
            self._arm_timer(wb)

    async def _wb_writeback(self, current: TaskStruct, wb: BdiWriteback, work: WbWritebackWork) -> None:
        """``wb_writeback()``: write *work*'s pages of *wb*'s inodes in chunks of ``batch_pages``."""
        dev = self.kernel.bdev.dev
        current.actor.log.info("writeback_start", bdi=dev, work=work.work_id, nr_pages=work.nr_pages, reason=work.reason)
        while work.nr_pages > 0:
            if work.reason == "background" and not self._over_bg_thresh(wb):
                break
            if work.reason in ("background", "periodic") and wb.works:
                # "Background writeout and kupdate-style writeback may run forever.
                # Stop them if there is other work to do" (restarted afterwards).
                if work.reason == "background":
                    wb.background_due = True
                else:
                    wb.periodic_due = True
                break
            while wb.inflight_chunks >= WB_MAX_INFLIGHT_CHUNKS:
                await wb.slot_wq.wait(current.actor, "slot")
            chunk = self._take_chunk(current, wb, min(self.config.batch_pages, work.nr_pages), work.sb)
            if chunk is None:
                break  # everything left is locked or still under writeback
            inode, pages = chunk
            work.nr_pages -= len(pages)
            await self._submit(current, wb, inode, pages, work)
        work.finished = True
        current.actor.log.info(
            "writeback_written", bdi=dev, work=work.work_id, submitted=work.submitted, reason=work.reason
        )
        self._maybe_complete(work)

    def _take_chunk(self, current: TaskStruct, wb: BdiWriteback, nr: int, sb: Any) -> tuple[Inode, list[Page]] | None:
        """``write_cache_pages()`` (``WB_SYNC_NONE``): up to *nr* pages of *wb*'s first writable inode."""
        for ino in list(self._dirty_pages):
            inode = self._inodes[ino]
            if self._i_wb[ino] is not wb or (sb is not None and inode.fs is not sb):
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
                wb.nr_writeback += 1
                unlock_page(current, page)
                taken.append(page)
                if len(taken) == nr:
                    break
            if taken:
                self._writeback_index[ino] = taken[-1].index + 1
                return inode, taken
        return None

    async def _submit(
        self, current: TaskStruct, wb: BdiWriteback, inode: Inode, pages: list[Page], work: WbWritebackWork
    ) -> None:
        """Hand one chunk to the filesystem (``do_writepages``); completion comes per bio."""
        wb.inflight_chunks += 1
        work.pending += len(pages)
        work.submitted += len(pages)
        remaining = {"pages": len(pages)}

        def end_io(bio: Bio) -> None:
            self._end_bio(bio, wb, work)
            remaining["pages"] -= len(bio.pages)
            if remaining["pages"] <= 0:
                wb.inflight_chunks -= 1
                wb.slot_wq.wake("slot")

        current.actor.log.info("wbc_writepage", bdi=self.kernel.bdev.dev, ino=inode.ino, index=pages[0].index, nr=len(pages))
        await inode.fs.writepages(current, pages, end_io)

    def _end_bio(self, bio: Bio, wb: BdiWriteback, work: WbWritebackWork) -> None:
        """Write completion (``end_bio_*`` → ``end_page_writeback``); never blocks."""
        failed = bio.status != BlkStatus.OK
        for page in bio.pages:
            self._nr_writeback -= 1
            wb.nr_writeback -= 1
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

    def wb_stats(self, blkcg: str) -> tuple[int, int]:
        """``(nr_dirty, nr_writeback)`` of *blkcg*'s wb (``mem_cgroup_wb_stats``); zeros if it has none."""
        wb = self._wbs.get(blkcg)
        return (0, 0) if wb is None else (wb.nr_dirty, wb.nr_writeback)

    def dirty_pages(self) -> Iterator[Page]:
        """Every page the bdi holds as dirty (inodes in dirtied order, pages by index)."""
        for ino in list(self._dirty_pages):
            pages = self._dirty_pages[ino]
            for index in list(self._dirty_idx[ino]):
                yield pages[index]
