"""A btrfs-like filesystem: an expensive ``->page_mkwrite``, ordered extents, metadata reads.

Mirrors, at v4.19: fs/btrfs/inode.c (``btrfs_page_mkwrite``, with V3 patch
7/7 as posted behind the policy ``page_mkwrite = "v3-btrfs"``;
``btrfs_readpage``) and the read side of fs/btrfs/extent_io.c
(``extent_readpages`` → ``btrfs_get_extent``, which may have to read a tree
block first). ``BtrfsFs`` is what the rest of the machine sees: the
filesystem's ``btrfs_aops`` and ``btrfs_file_vm_ops``. It owns three helpers
split out along the kernel's own files; their entry points are called on
them (``fs.space.flush_space``, ``fs.ordered.btrfs_finish_ordered_io``)::

    BtrfsFs             actors/fs/btrfs.py               inode.c, extent_io.c (reads): mkwrite, readpage(s)
    ├─ .space           actors/fs/btrfs_space.py         extent-tree.c: data and metadata reservation,
    │  BtrfsSpaceInfo                                    tickets, the async reclaim kworker; reserve_fail
    ├─ .ordered         actors/fs/btrfs_ordered_data.py  ordered-data.c: ordered extents, writepages,
    │  BtrfsOrderedTree                                  btrfs_finish_ordered_io
    └─ .transaction     actors/fs/btrfs_transaction.py   transaction.c: join, commit, its states
       BtrfsTransaction

The space pool, tickets, the reclaim worker and the ``reserve_fail``
injection point are described in btrfs_space.py's header; ordered extents
in btrfs_ordered_data.py's; commits in btrfs_transaction.py's.

Theory of operation
-------------------

Write faults. ``btrfs_page_mkwrite`` reserves ``PAGE_SIZE`` of data and
the inode's metadata growth (``btrfs_delalloc_reserve_space``:
``reserve_cost``, and a ticket the reclaim worker serves if space is
short), updates the file's times (``file_update_time``: joins the running
transaction, waiting out a commit's critical section), then locks the page,
waits for its writeback and for any ordered extent still covering it, and
marks it delalloc and dirty. Under V3
(``page_mkwrite = "v3-btrfs"``) a fault that may retry drops the mmap_sem
for all of that and returns ``VM_FAULT_RETRY`` (see the method's docstring).

Metadata reads. Each ``PAGES_PER_META_BLOCK`` data pages of a file are
described by one tree block (extent/csum items). A data read whose block is
not cached first reads it (``NODESIZE``, ``REQ_META``: issued as root by
io.latency, so never throttled) and waits for it — with the mmap_sem held if
the fault path holds it — then submits the data reads.

Emulation notes:
    * Files are fully allocated overwrites: no holes, no compression, no
      inline extents, no checksums verified; sectorsize = PAGE_SIZE, so the
      EOF-page reservation trim never trims.
    * ``sb_start_pagefault`` and the extent locks (``lock_extent_bits`` in
      mkwrite, ``lock_extent`` in readpages, writepage_delalloc's range lock)
      cost nothing and are never waited for. At v4.19 every path here that
      holds an extent range locked also holds the pages of that range locked:
      readpages from before submit to ``end_bio_extent_readpage``,
      ``find_lock_delalloc_range`` until ``extent_clear_unlock_delalloc``
      unlocks the pages and the range together, mkwrite after ``lock_page``.
      A waiter for the range has therefore already waited for its page lock;
      only paths not modelled (direct IO, hole punching, fiemap, relocation)
      hold a range without its pages. The ordered-extent waits those locks
      guard are modelled (mkwrite, readpages).
    * Tree blocks, once read, stay cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from actors.block.bio import Bio
from actors.block.blk_throttle import JIFFY_NS
from actors.block.blkdev import submit_bio, submit_bio_wait
from actors.fs.btrfs_ordered_data import BtrfsOrderedExtent, BtrfsOrderedTree
from actors.fs.btrfs_space import BtrfsSpaceInfo, BtrfsSpaceStatistics
from actors.fs.btrfs_transaction import NODESIZE, BtrfsTransaction
from actors.fs.generic import BIO_MAX_PAGES, fs_bio, mpage_end_io
from actors.kernel_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    BlkStatus,
    Errno,
    FaultFlag,
    PageFlag,
    ReqFlag,
    ReqOp,
    VmFaultResult,
    flag_names,
    vm_fault_t,
)
from actors.mm.filemap import add_to_page_cache_lru, fput
from actors.mm.filemap_fault import filemap_fault, maybe_unlock_mmap_for_io
from actors.mm.memory import VmOperations
from actors.mm.mmap import down_read
from actors.mm.page import (
    Page,
    get_page,
    lock_page,
    unlock_page,
    wait_on_page_writeback,
)
from actors.sched.core import cpu_work
from emu import NSEC_PER_USEC, WaitQueue

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.mm.filemap import File, Inode
    from actors.mm.memory import VmFault
    from actors.sched.task import TaskStruct
    from actors.schema import BtrfsConfig

#: Data pages described by one extent/csum tree block (emulator's choice).
PAGES_PER_META_BLOCK = 256
#: CPU work of ``btrfs_update_inode`` for a time update (delayed-inode copy; estimate).
UPDATE_INODE_NS = 5 * NSEC_PER_USEC


def vmf_error(err: int) -> vm_fault_t:
    """Mirror of ``vmf_error()`` (include/linux/mm.h): -ENOMEM → OOM, anything else → SIGBUS."""
    return VmFaultResult.OOM if err == -Errno.ENOMEM else VmFaultResult.SIGBUS


@final
class BtrfsFs:
    """The btrfs-like filesystem of the block device: ``btrfs_aops`` and ``btrfs_file_vm_ops``.

    Args:
        kernel: the machine.
        config: ``space``, ``reserve_cost``, ``flush_threshold``, ``commit_cost``.
        reserve_fail: the reservation's error-injection point (actors/fs/btrfs_space.py):
            called with the task and the bytes of each successful
            ``btrfs_delalloc_reserve_space``; ``True`` turns it into ``-ENOSPC``.

    Attributes:
        space: the space pool and its reservation paths (``BtrfsSpaceInfo``).
        ordered: the ordered extents (``BtrfsOrderedTree``).
    """

    kind = "btrfs"

    def __init__(
        self, kernel: Kernel, config: BtrfsConfig, *, reserve_fail: Callable[[TaskStruct, int], bool] | None = None
    ) -> None:
        self.kernel = kernel
        self.config = config
        self.engine = kernel.engine
        self.vm_ops = VmOperations(fault=filemap_fault, page_mkwrite=self.btrfs_page_mkwrite)
        self.read_end_io = functools.partial(mpage_end_io, kernel)  # end_bio_extent_readpage
        self.space = BtrfsSpaceInfo(self, reserve_fail=reserve_fail)
        self.ordered = BtrfsOrderedTree(self)
        self.transaction = BtrfsTransaction(self)
        self._mtime_tick: dict[int, int] = {}  # ino -> the jiffy of its last mtime update
        self._meta_cached: set[tuple[int, int]] = set()
        self._meta_inflight: dict[tuple[int, int], WaitQueue] = {}

    def __repr__(self) -> str:
        return "<BtrfsFs>"

    def _bio(self, current: TaskStruct, pages: list[Page], op: ReqOp, flags: int, end_io, nr_bytes: int = 0) -> Bio:
        return fs_bio(self.kernel, current, pages, op, flags, end_io, nr_bytes)

    # -- reads ----------------------------------------------------------------------------

    async def btrfs_get_extent(self, current: TaskStruct, inode: Inode, indices: list[int]) -> None:
        """``btrfs_get_extent()`` for data pages *indices*: read any uncached tree block first.

        One block per ``PAGES_PER_META_BLOCK`` pages; a block another task is
        already reading is waited for, not read twice. May sleep (``io``).
        """
        blocks = sorted({index // PAGES_PER_META_BLOCK for index in indices})
        for block in blocks:
            key = (inode.ino, block)
            if key in self._meta_cached:
                continue
            wq = self._meta_inflight.get(key)
            start = current.actor.now_ns
            if wq is not None:
                await wq.wait(current.actor, current.comm)
                current.account_sleep("io", current.actor.now_ns - start)
                continue
            wq = self._meta_inflight[key] = WaitQueue(self.engine, f"btrfs tree block ino{inode.ino}:{block}")
            current.actor.log.info("btrfs_get_extent", ino=inode.ino, block=block, meta_read=True)
            self.kernel.count("btrfs_meta_reads")

            def end_io(bio: Bio, key: tuple[int, int] = key, wq: WaitQueue = wq) -> None:
                if bio.status == BlkStatus.OK:
                    self._meta_cached.add(key)
                else:
                    self.kernel.count("btrfs_meta_read_errors")
                del self._meta_inflight[key]
                wq.wake_all()

            bio = self._bio(current, [], ReqOp.READ, ReqFlag.META, end_io, nr_bytes=NODESIZE)
            await submit_bio_wait(current, bio, f"btrfs tree block read ino{inode.ino}:{block}")

    async def readpage(self, current: TaskStruct, file: File, page: Page) -> int:
        """``btrfs_readpage()``: extent lookup (maybe a tree-block read), then one bio; unlocked at completion."""
        await self.btrfs_get_extent(current, file.f_mapping.host, [page.index])
        await submit_bio(current, self._bio(current, [page], ReqOp.READ, 0, self.read_end_io))
        return 0

    async def readpages(self, current: TaskStruct, file: File, pages: list[Page]) -> None:
        """``extent_readpages()``: insert locked, wait out ordered extents, look the extents up, then contiguous-run bios.

        ``__do_contiguous_readpages()`` (v4.19) locks each run's extent range
        and, while an ordered extent overlaps it, unlocks, waits for that
        extent (``btrfs_start_ordered_extent(inode, ordered, 1)``) and tries
        again, with the fault's mmap_sem held if the caller holds it. A page
        read here was not cached, so this waits only for a page written back
        and then evicted before its ordered extent finished. Simplified: the
        waits come before any bio of the call (the kernel waits run by run).
        """
        mapping = file.f_mapping
        inserted = [page for page in pages if add_to_page_cache_lru(current, page, mapping, page.index)]
        if not inserted:
            return
        for page in inserted:
            while (ordered := self.ordered.btrfs_lookup_ordered_range(mapping.host.ino, page.index)) is not None:
                self.kernel.count("btrfs_readpages_ordered_wait")
                await self.ordered.btrfs_start_ordered_extent(current, ordered, True)
        await self.btrfs_get_extent(current, mapping.host, [page.index for page in inserted])
        run: list[Page] = []
        for page in inserted:
            if run and (page.index != run[-1].index + 1 or len(run) == BIO_MAX_PAGES):
                await submit_bio(current, self._bio(current, run, ReqOp.READ, ReqFlag.RAHEAD, self.read_end_io))
                run = []
            run.append(page)
        await submit_bio(current, self._bio(current, run, ReqOp.READ, ReqFlag.RAHEAD, self.read_end_io))

    # -- ->page_mkwrite ------------------------------------------------------------------

    async def file_update_time(self, current: TaskStruct, file: File) -> int:
        """Mirror of fs/inode.c:file_update_time() → fs/btrfs/inode.c:btrfs_update_time() (v4.19).

        ``current_time()`` is the coarse clock, which moves once a jiffy, so
        the inode's mtime changes (``inode_needs_update_time``) at most once
        per jiffy per inode; then ``btrfs_dirty_inode`` joins the running
        transaction (``btrfs_join_transaction``: sleeps while a commit is in
        its critical section, actors/fs/btrfs_transaction.py) and updates
        the inode (``UPDATE_INODE_NS`` of CPU work, an estimate).

        Emulation notes:
            The join never fails, so the fallback ``btrfs_start_transaction(root, 1)``
            on ``-ENOSPC`` is not modelled; ``ctime`` and ``i_version`` ride along.

        Returns:
            0.
        """
        inode = file.f_mapping.host
        tick = current.actor.now_ns // JIFFY_NS
        if self._mtime_tick.get(inode.ino) == tick:
            return 0
        self._mtime_tick[inode.ino] = tick
        await self.transaction.btrfs_join_transaction(current)
        await cpu_work(current, extra_ns=UPDATE_INODE_NS)
        self.kernel.count("btrfs_update_time")
        return 0

    async def btrfs_page_mkwrite(self, current: TaskStruct, vmf: VmFault) -> vm_fault_t:
        """Mirror of fs/btrfs/inode.c:btrfs_page_mkwrite() at v4.19 with V3 patch 7/7 as posted.

        V3 behaviour is on iff ``policy.page_mkwrite == "v3-btrfs"``:

        * ``FAULT_FLAG_USED_CACHED`` fast path: lock the page; if
          ``vmf.cached_size == i_size`` and it is dirty, return LOCKED at once.
          ``do_page_mkwrite`` never passes the flag (docs/DESIGN.md D7), so
          this is dead code on the real call paths.
        * ``fpin = maybe_unlock_mmap_for_io(vmf->vma, vmf->flags)``: drops the
          sem when ALLOW_RETRY is set and RETRY_NOWAIT is not — but
          ``do_page_mkwrite`` only copies ALLOW_RETRY (defect 8).
        * success with ``fpin``: unlock the page, ``fput``, take a page
          reference into ``vmf.cached_page`` with ``vmf.cached_size`` and return
          ``VM_FAULT_RETRY`` (the retry redoes everything under the sem:
          behaviour 19);
        * error with ``fpin``: ``fput`` and ``down_read(&mm->mmap_sem)`` before
          returning the error (defect 9: may queue behind a writer).

        Truncation: ``ret = VM_FAULT_NOPAGE`` is set before ``again:``; a page
        found truncated (no longer in the mapping, or at or past EOF) after
        the reservation jumps to ``out_unlock``, which lies past the success
        exit: the page is unlocked, ``out:`` gives the reservation back
        (``btrfs_delalloc_release_extents`` and
        ``btrfs_delalloc_release_space(..., reserved_space, ret != 0)``), and
        the fault returns ``VM_FAULT_NOPAGE``, so the VM retries it. Under V3
        this exit runs through ``out_noreserve:`` too, which re-takes the sem
        after the drop (defect 9).

        Emulation notes:
            ``sb_start_pagefault`` and the extent lock cost nothing; the EOF
            trim never trims. ``file_update_time`` is btrfs's (see there).

        Returns:
            ``VM_FAULT_LOCKED`` (page locked and dirty), ``VM_FAULT_RETRY``
            (V3, sem dropped), ``VM_FAULT_NOPAGE`` (page truncated), or
            ``vmf_error(-ENOSPC)`` = ``VM_FAULT_SIGBUS``.
        """
        kernel = self.kernel
        actor = current.actor
        page = vmf.page
        file = vmf.vma.vm_file
        mm = vmf.vma.vm_mm
        inode = file.f_mapping.host
        v3 = kernel.policy.page_mkwrite == "v3-btrfs"
        start = actor.now_ns
        reserved_space = PAGE_SIZE

        if v3 and vmf.flags & FaultFlag.USED_CACHED:
            await lock_page(current, page)
            if vmf.cached_size == inode.i_size and page.flags & PageFlag.DIRTY:
                kernel.count("btrfs_used_cached_fastpath")
                actor.log.info("btrfs_page_mkwrite", ino=inode.ino, index=page.index, result="LOCKED", fastpath=True)
                return VmFaultResult.LOCKED
            unlock_page(current, page)

        fpin = maybe_unlock_mmap_for_io(current, vmf, None, flags=vmf.flags) if v3 else None
        kernel.count("btrfs_mkwrite")
        # sb_start_pagefault(inode->i_sb)
        page_start = page.index << PAGE_SHIFT

        ret2 = await self.space.btrfs_delalloc_reserve_space(current, inode.ino, reserved_space)
        reserved = False
        if not ret2:
            ret2 = await self.file_update_time(current, file)
            reserved = True
        if ret2:
            ret = vmf_error(ret2)
            if reserved:  # out:
                self.space.btrfs_delalloc_release_extents(inode.ino)
                self.space.btrfs_delalloc_release_space(inode.ino, reserved_space)
            return await self._out_noreserve(current, vmf, inode, mm, fpin, ret, start)

        ret = VmFaultResult.NOPAGE  # make the VM retry the fault
        size = inode.i_size
        while True:  # again:
            await lock_page(current, page)
            size = inode.i_size
            if page.mapping is not inode.i_mapping or page_start >= size:
                # page got truncated out from underneath us: goto out_unlock
                kernel.count("btrfs_mkwrite_truncated")
                unlock_page(current, page)
                self.space.btrfs_delalloc_release_extents(inode.ino)  # out:
                self.space.btrfs_delalloc_release_space(inode.ino, reserved_space)
                return await self._out_noreserve(current, vmf, inode, mm, fpin, ret, start)
            await wait_on_page_writeback(current, page)
            # lock_extent_bits(); btrfs_lookup_ordered_range()
            ordered = self.ordered.btrfs_lookup_ordered_range(inode.ino, page.index)
            if ordered is not None:
                unlock_page(current, page)
                kernel.count("btrfs_mkwrite_ordered_wait")
                await self.ordered.btrfs_start_ordered_extent(current, ordered, True)
                continue
            # clear_extent_bit(DELALLOC | DO_ACCOUNTING) + btrfs_set_extent_delalloc()
            self.space.btrfs_set_extent_delalloc(inode.ino, page.index, reserved_space)
            kernel.writeback.set_page_dirty(page)
            page.flags |= PageFlag.UPTODATE
            break

        # if (!ret2) { btrfs_delalloc_release_extents(); ... }
        self.space.btrfs_delalloc_release_extents(inode.ino)
        elapsed = actor.now_ns - start
        kernel.count("btrfs_mkwrite_ns", elapsed)
        if fpin is not None:
            unlock_page(current, page)
            fput(fpin)
            get_page(page)
            vmf.cached_size = size
            vmf.cached_page = page
            kernel.count("btrfs_mkwrite_dropped")
            actor.log.info("btrfs_page_mkwrite", ino=inode.ino, index=page.index, result="RETRY", ns=elapsed, dropped=True)
            return VmFaultResult.RETRY
        actor.log.info("btrfs_page_mkwrite", ino=inode.ino, index=page.index, result="LOCKED", ns=elapsed, dropped=False)
        return VmFaultResult.LOCKED

    async def _out_noreserve(
        self, current: TaskStruct, vmf: VmFault, inode: Inode, mm: Any, fpin: File | None, ret: vm_fault_t, start: int
    ) -> vm_fault_t:
        """``out_noreserve:`` sb_end_pagefault; V3: ``fput`` and re-take the sem (defect 9)."""
        if fpin is not None:
            fput(fpin)
            kernel = self.kernel
            kernel.count("btrfs_mkwrite_retake_sem")
            await down_read(current, mm)
        elapsed = current.actor.now_ns - start
        self.kernel.count("btrfs_mkwrite_ns", elapsed)
        current.actor.log.info(
            "btrfs_page_mkwrite", ino=inode.ino, index=vmf.page.index, result=flag_names(VmFaultResult, ret), ns=elapsed, dropped=fpin is not None
        )
        return ret

    # -- queries ------------------------------------------------------------------------

    def ordered_extent(self, ino: int, index: int) -> BtrfsOrderedExtent | None:
        """The ordered extent covering page *index* of inode *ino*, if any."""
        return self.ordered.btrfs_lookup_ordered_range(ino, index)

    def statistics(self) -> BtrfsSpaceStatistics:
        """A snapshot of the space pool, the reservations and the ordered extents."""
        return self.space.statistics()

    # -- a_ops ---------------------------------------------------------------------------

    async def writepages(self, current: TaskStruct, pages: list[Page], end_io) -> None:
        """``BtrfsOrderedTree.writepages`` (``extent_writepages``), the flusher's ``a_ops->writepages``."""
        await self.ordered.writepages(current, pages, end_io)
