"""A btrfs-like filesystem: an expensive ``->page_mkwrite``, ordered extents, metadata reads.

Mirrors, at v4.19: fs/btrfs/inode.c (``btrfs_page_mkwrite``, with V3 patch
7/7 as posted behind the policy ``page_mkwrite = "v3-btrfs"``;
``btrfs_delalloc_reserve_space``; ``btrfs_finish_ordered_io``),
fs/btrfs/extent-tree.c (the ticketed space flushing of ``flush_space``:
``FLUSH_DELALLOC``, ``FLUSH_DELALLOC_WAIT``, ``COMMIT_TRANS``),
fs/btrfs/ordered-data.c (``btrfs_start_ordered_extent``,
``btrfs_wait_ordered_roots``) and the read side of fs/btrfs/extent_io.c
(``extent_readpages`` → ``btrfs_get_extent``, which may have to read a tree
block first).

Theory of operation
-------------------

Space. One pool of ``space`` bytes (what COW writes can still allocate)::

    free = space - bytes_may_use - bytes_pinned

``btrfs_page_mkwrite`` reserves ``PAGE_SIZE`` into ``bytes_may_use`` and
records it on the page's delalloc range. When the flusher writes the page,
the reservation moves into an ordered extent; when that extent finishes
(``btrfs_finish_ordered_io``, shortly after the bio completes) the new
extent is allocated and the overwritten one freed — but a freed extent stays
*pinned* until the transaction that freed it commits. So the reservation
moves ``bytes_may_use`` → ``bytes_pinned``, and only a transaction commit
returns it to ``free``. A reservation that would leave ``free`` below
``flush_threshold × space`` flushes, one state at a time, re-checking after
each::

    FLUSH_DELALLOC       start writeback of the shortfall, in 256 KiB items (flusher; no IO wait)
    FLUSH_DELALLOC_WAIT  write back and wait for the IO and every ordered extent
    COMMIT_TRANS         commit_cost of work + a REQ_META|REQ_SYNC write, waited
                         for; unpins what was pinned when it started
    (still short)        -ENOSPC → VM_FAULT_SIGBUS

Flushing runs in the reserving task (as a priority ticket would) and one
task flushes at a time; others wait for it (``fs`` sleep), re-check, and
flush themselves only if still short.

Ordered extents. ``writepages`` (called by the flusher with the pages
already PG_writeback) makes one ordered extent and one bio per contiguous
run. The bio's completion ends page writeback (through the ``Writeback``'s
``end_io``) and queues ``btrfs_finish_ordered_io`` to a worker
(``FINISH_ORDERED_IO_NS`` later): in between, a page is no longer under
writeback but still has an ordered extent, which is why mkwrite checks both.

Metadata reads. Each ``PAGES_PER_META_BLOCK`` data pages of a file are
described by one tree block (extent/csum items). A data read whose block is
not cached first reads it (``NODESIZE``, ``REQ_META``: issued as root by
io.latency, so never throttled) and waits for it — with the mmap_sem held if
the fault path holds it — then submits the data reads.

Fault injection. ``reserve_fail(current, nbytes) -> bool`` (a constructor
argument; ``None``: never) is the filesystem's error-injection point. It is
consulted by ``btrfs_delalloc_reserve_space`` once a reservation has
succeeded, after the normal cost and any flushing; ``True`` gives the
reservation back and returns ``-ENOSPC``, which the caller cannot tell from a
ticket that ran out of flush states (``btrfs_page_mkwrite``: ``vmf_error`` →
``VM_FAULT_SIGBUS``). The kernel's nearest mechanism is function error
injection, ``ALLOW_ERROR_INJECTION(fn, ERRNO)`` with ``fail_function`` or
``bpf_override_return`` (v4.16), but that overrides the return value at
function entry and skips the body. This point is instead a ``should_fail()``
check (lib/fault-inject.c) placed inside the function, at its end, the way
``failslab`` sits inside the slab allocator and ``fail_make_request`` inside
bio submission: a failed reservation costs what a real one costs, and the
decision is only taken for reservations that would have succeeded. The hook
keeps its own counters and trace event; the filesystem only does with the
error what the kernel does.

Emulation notes:
    * Files are fully allocated overwrites: no holes, no compression, no
      inline extents, no checksums verified; sectorsize = PAGE_SIZE, so the
      EOF-page reservation trim never trims.
    * Re-dirtying a page that already has a delalloc reservation releases the
      old one (``clear_extent_bit(EXTENT_DELALLOC | EXTENT_DO_ACCOUNTING)``
      read as releasing the page's earlier reservation): no double counting.
    * A write error returns the ordered extent's reservation to the page
      (which the ``Writeback`` re-dirties); nothing is pinned.
    * No periodic transaction commit (``commit_interval``), no delayed
      items/refs, no chunk allocation, no qgroups; ``file_update_time`` and
      ``sb_start_pagefault`` cost nothing; ``btrfs_start_ordered_extent``
      does not re-start writeback of the range (``filemap_fdatawrite_range``).
    * Tree blocks, once read, stay cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import attrs

from actors.block.bio import Bio
from actors.block.blkdev import submit_bio
from actors.fs.generic import BIO_MAX_PAGES, fs_bio, mpage_end_io
from actors.kernel_types import PAGE_SHIFT, PAGE_SIZE, BlkStatus, Errno, FaultFlag, PageFlag, ReqFlag, ReqOp, VmFaultResult
from actors.mm.filemap import add_to_page_cache_lru, fput
from actors.mm.filemap_fault import filemap_fault, maybe_unlock_mmap_for_io
from actors.mm.memory import VmOperations
from actors.mm.mmap import down_read
from actors.mm.page import Page, get_page, lock_page, unlock_page, wait_on_page_writeback
from emu import NSEC_PER_USEC, WaitQueue

if TYPE_CHECKING:
    from actors.config import BtrfsConfig
    from actors.kernel import Kernel
    from actors.mm.filemap import File, Inode
    from actors.mm.memory import VmFault
    from actors.sched.task import TaskStruct

#: Data pages described by one extent/csum tree block (emulator's choice).
PAGES_PER_META_BLOCK = 256
#: ``nodesize``: bytes of one tree block read or written.
NODESIZE = 16 * 1024
#: Metadata a transaction commit writes (a few tree blocks and the super block).
COMMIT_META_BYTES = 4 * NODESIZE
#: ``EXTENT_SIZE_PER_ITEM``: delalloc flushing reclaims in items of this size.
EXTENT_SIZE_PER_ITEM = 256 * 1024
#: Delay from a write bio's completion to ``btrfs_finish_ordered_io`` (endio worker).
FINISH_ORDERED_IO_NS = 20 * NSEC_PER_USEC

#: ``enum btrfs_flush_state`` values used here (fs/btrfs/ctree.h, v4.19).
FLUSH_DELALLOC = 3
FLUSH_DELALLOC_WAIT = 4
COMMIT_TRANS = 6
FLUSH_STATE_NAMES = {FLUSH_DELALLOC: "FLUSH_DELALLOC", FLUSH_DELALLOC_WAIT: "FLUSH_DELALLOC_WAIT", COMMIT_TRANS: "COMMIT_TRANS"}
FLUSH_STATES = (FLUSH_DELALLOC, FLUSH_DELALLOC_WAIT, COMMIT_TRANS)


def vmf_error(err: int) -> VmFaultResult:
    """Mirror of ``vmf_error()`` (include/linux/mm.h): -ENOMEM → OOM, anything else → SIGBUS."""
    return VmFaultResult.OOM if err == -Errno.ENOMEM else VmFaultResult.SIGBUS


@attrs.frozen(kw_only=True)
class BtrfsSpaceStatistics:
    """``struct btrfs_space_info`` as ``/sys/fs/btrfs/<uuid>/allocation`` prints it (one pool)."""

    total_bytes: int
    bytes_may_use: int
    bytes_pinned: int
    free_bytes: int
    ordered_extents: int
    delalloc_pages: int
    flushing: bool


@attrs.define(eq=False, kw_only=True)
class BtrfsOrderedExtent:
    """``struct btrfs_ordered_extent``: a written range whose IO is not finished.

    Attributes:
        oe_id: run-unique number.
        ino: the inode.
        indices: the page indices it covers (contiguous).
        reserved: per page index, the delalloc reservation it carries.
        complete: ``BTRFS_ORDERED_COMPLETE``.
        io_error: the bio failed (``BTRFS_ORDERED_IOERR``).
        wait: its waiters (``entry->wait``), made on first use.
    """

    oe_id: int
    ino: int
    indices: list[int]
    reserved: dict[int, int]
    complete: bool = False
    io_error: bool = False
    wait: WaitQueue | None = None


@final
class BtrfsFs:
    """The btrfs-like filesystem of the block device: ``btrfs_aops`` and ``btrfs_file_vm_ops``.

    Args:
        kernel: the machine.
        config: ``space``, ``reserve_cost``, ``flush_threshold``, ``commit_cost``.
        reserve_fail: the reservation's error-injection point (module header):
            called with the task and the bytes of each successful
            ``btrfs_delalloc_reserve_space``; ``True`` turns it into ``-ENOSPC``.
    """

    kind = "btrfs"

    def __init__(
        self, kernel: Kernel, config: BtrfsConfig, *, reserve_fail: Callable[[TaskStruct, int], bool] | None = None
    ) -> None:
        self.kernel = kernel
        self.config = config
        self.reserve_fail = reserve_fail
        self.engine = engine = kernel.engine
        self.vm_ops = VmOperations(fault=filemap_fault, page_mkwrite=self.btrfs_page_mkwrite)
        self.read_end_io = functools.partial(mpage_end_io, kernel)  # end_bio_extent_readpage
        self.bytes_may_use = 0
        self.bytes_pinned = 0
        self._delalloc: dict[tuple[int, int], int] = {}  # (ino, index) -> reserved bytes (EXTENT_DELALLOC)
        self._ordered: dict[tuple[int, int], BtrfsOrderedExtent] = {}  # (ino, index) -> ordered extent
        self._oe_ids = 0
        self._flushing: str | None = None  # the task running flush_space
        self._ticket_wq = WaitQueue(engine, "btrfs space ticket", lambda: [self._flushing] if self._flushing else [])
        self._meta_cached: set[tuple[int, int]] = set()
        self._meta_inflight: dict[tuple[int, int], WaitQueue] = {}

    def __repr__(self) -> str:
        return "<BtrfsFs>"

    # -- helpers -------------------------------------------------------------------------

    def _bio(self, current: TaskStruct, pages: list[Page], op: ReqOp, flags: ReqFlag, end_io, nr_bytes: int = 0) -> Bio:
        return fs_bio(self.kernel, current, pages, op, flags, end_io, nr_bytes)

    async def _submit_and_wait(self, current: TaskStruct, bio: Bio, what: str) -> Bio:
        """Submit *bio* and sleep until it completes (``submit_bio_wait``), accounted as ``io``."""
        wq = WaitQueue(self.engine, what)
        state = {"done": False}
        end_io = bio.bi_end_io

        def done(bio: Bio) -> None:
            if end_io is not None:
                end_io(bio)
            state["done"] = True
            wq.wake("io")

        bio.bi_end_io = done
        await submit_bio(current, bio)
        if not state["done"]:
            start = current.actor.now_ns
            await wq.wait(current.actor, "io")
            current.account_sleep("io", current.actor.now_ns - start)
        return bio

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
            await self._submit_and_wait(current, bio, f"btrfs tree block read ino{inode.ino}:{block}")

    async def readpage(self, current: TaskStruct, file: File, page: Page) -> int:
        """``btrfs_readpage()``: extent lookup (maybe a tree-block read), then one bio; unlocked at completion."""
        await self.btrfs_get_extent(current, file.f_mapping.host, [page.index])
        await submit_bio(current, self._bio(current, [page], ReqOp.READ, ReqFlag(0), self.read_end_io))
        return 0

    async def readpages(self, current: TaskStruct, file: File, pages: list[Page]) -> None:
        """``extent_readpages()``: insert locked, look the extents up, then contiguous-run bios."""
        mapping = file.f_mapping
        inserted = [page for page in pages if add_to_page_cache_lru(current, page, mapping, page.index)]
        if not inserted:
            return
        await self.btrfs_get_extent(current, mapping.host, [page.index for page in inserted])
        run: list[Page] = []
        for page in inserted:
            if run and (page.index != run[-1].index + 1 or len(run) == BIO_MAX_PAGES):
                await submit_bio(current, self._bio(current, run, ReqOp.READ, ReqFlag.RAHEAD, self.read_end_io))
                run = []
            run.append(page)
        await submit_bio(current, self._bio(current, run, ReqOp.READ, ReqFlag.RAHEAD, self.read_end_io))

    # -- writes and ordered extents --------------------------------------------------------

    async def writepages(self, current: TaskStruct, pages: list[Page], end_io) -> None:
        """``extent_writepages()`` for the flusher: per contiguous run, an ordered extent and a bio.

        The pages are already PG_writeback. Their delalloc reservations move
        into the ordered extent (``cow_file_range`` → ``btrfs_add_ordered_extent``).
        """
        runs: list[list[Page]] = []
        for page in pages:
            if runs and page.index == runs[-1][-1].index + 1 and len(runs[-1]) < BIO_MAX_PAGES:
                runs[-1].append(page)
            else:
                runs.append([page])
        for run in runs:
            oe = self._add_ordered_extent(current, run)

            def bio_end_io(bio: Bio, oe: BtrfsOrderedExtent = oe) -> None:
                oe.io_error = bio.status != BlkStatus.OK
                end_io(bio)  # end_page_writeback and the bdi's accounting
                self.engine.call_later(FINISH_ORDERED_IO_NS, self.btrfs_finish_ordered_io, oe)

            await submit_bio(current, self._bio(current, run, ReqOp.WRITE, ReqFlag(0), bio_end_io))

    def _add_ordered_extent(self, current: TaskStruct, run: list[Page]) -> BtrfsOrderedExtent:
        """``btrfs_add_ordered_extent()``."""
        ino = run[0].mapping.host.ino if run[0].mapping is not None else -1
        self._oe_ids += 1
        reserved = {page.index: self._delalloc.pop((ino, page.index), 0) for page in run}
        oe = BtrfsOrderedExtent(oe_id=self._oe_ids, ino=ino, indices=[p.index for p in run], reserved=reserved)
        for index in oe.indices:
            self._ordered[(ino, index)] = oe
        current.actor.log.info("btrfs_ordered_extent_add", ino=ino, start=oe.indices[0], nr=len(oe.indices), oe=oe.oe_id)
        return oe

    def btrfs_finish_ordered_io(self, oe: BtrfsOrderedExtent) -> None:
        """``btrfs_finish_ordered_io()`` (endio worker, runs as an engine callback).

        Success: the reservation becomes an allocated extent and the
        overwritten extent is pinned (``bytes_may_use`` → ``bytes_pinned``).
        IO error: the reservation goes back to the (re-dirtied) pages.
        Then the extent is removed and its waiters woken.
        """
        total = sum(oe.reserved.values())
        if oe.io_error:
            for index, nbytes in oe.reserved.items():
                if nbytes:
                    self._set_delalloc(oe.ino, index, nbytes)
        else:
            self.bytes_may_use -= total
            self.bytes_pinned += total
        for index in oe.indices:
            if self._ordered.get((oe.ino, index)) is oe:
                del self._ordered[(oe.ino, index)]
        oe.complete = True
        if oe.wait is not None:
            oe.wait.wake_all()

    async def btrfs_start_ordered_extent(self, current: TaskStruct, oe: BtrfsOrderedExtent, wait: bool) -> None:
        """``btrfs_start_ordered_extent(inode, entry, wait)``: wait for ``BTRFS_ORDERED_COMPLETE`` (``io``)."""
        current.actor.log.info("btrfs_ordered_extent_start", ino=oe.ino, start=oe.indices[0], oe=oe.oe_id)
        if not wait or oe.complete:
            return
        if oe.wait is None:
            oe.wait = WaitQueue(self.engine, f"btrfs ordered extent {oe.oe_id}")
        start = current.actor.now_ns
        await oe.wait.wait(current.actor, current.comm)
        current.account_sleep("io", current.actor.now_ns - start)

    async def btrfs_wait_ordered_roots(self, current: TaskStruct) -> None:
        """``btrfs_wait_ordered_roots()``: wait for every ordered extent that exists now."""
        pending = {oe.oe_id: oe for oe in self._ordered.values()}
        for _oe_id, oe in sorted(pending.items()):
            await self.btrfs_start_ordered_extent(current, oe, True)

    def _set_delalloc(self, ino: int, index: int, nbytes: int) -> None:
        """``btrfs_set_extent_delalloc()`` for one page, replacing an earlier reservation."""
        old = self._delalloc.pop((ino, index), 0)
        if old:
            self.bytes_may_use -= old  # clear_extent_bit(EXTENT_DELALLOC | EXTENT_DO_ACCOUNTING)
        self._delalloc[(ino, index)] = nbytes

    # -- space ---------------------------------------------------------------------------

    def free_bytes(self) -> int:
        return self.config.space - self.bytes_may_use - self.bytes_pinned

    def _try_reserve(self, nbytes: int) -> bool:
        """Reserve *nbytes* if that leaves at least ``flush_threshold × space`` free."""
        if self.free_bytes() - nbytes >= self.config.flush_threshold * self.config.space:
            self.bytes_may_use += nbytes
            return True
        return False

    def btrfs_delalloc_release_space(self, nbytes: int) -> None:
        """``btrfs_delalloc_release_space()``: give back a reservation that was not used."""
        self.bytes_may_use -= nbytes

    async def btrfs_delalloc_reserve_space(self, current: TaskStruct, nbytes: int) -> int:
        """Mirror of ``btrfs_delalloc_reserve_space()`` with 4.x ticketed flushing, simplified.

        Costs ``reserve_cost`` (``fs``). If the reservation would leave less
        than ``flush_threshold × space`` free, flush (module header) and
        re-check after each state. A reservation made is then put to the
        ``reserve_fail`` injection point (module header): if it fails, the
        reservation is given back and the result is ``-ENOSPC``.

        Returns:
            0, or ``-ENOSPC``.
        """
        actor = current.actor
        await actor.sleep(self.config.reserve_cost)
        current.account_sleep("fs", self.config.reserve_cost)
        if not self._try_reserve(nbytes):
            error = await self._wait_reserve_ticket(current, nbytes)
            if error:
                return error
        if self.reserve_fail is not None and self.reserve_fail(current, nbytes):
            self.btrfs_delalloc_release_space(nbytes)
            return -Errno.ENOSPC
        return 0

    async def _wait_reserve_ticket(self, current: TaskStruct, nbytes: int) -> int:
        """The slow path (``__reserve_metadata_bytes`` → ``wait_reserve_ticket``): flush until *nbytes* fit.

        Traces ``btrfs_reserve_ticket``.

        Returns:
            0 (reserved), or ``-ENOSPC`` after the last flush state.
        """
        kernel = self.kernel
        actor = current.actor
        start = actor.now_ns
        flushed = 0
        error = 0
        while True:
            if self._flushing is not None:
                # Another task's ticket is being flushed: wait for it, then re-check.
                await self._ticket_wq.wait(actor, current.comm)
                current.account_sleep("fs", actor.now_ns - start)
                if self._try_reserve(nbytes):
                    break
                continue
            self._flushing = current.comm
            try:
                for state in FLUSH_STATES:
                    await self.flush_space(current, state, nbytes)
                    flushed += 1
                    if self._try_reserve(nbytes):
                        break
                else:
                    error = -Errno.ENOSPC
            finally:
                self._flushing = None
                self._ticket_wq.wake_all()
            break
        if error:
            kernel.count("btrfs_enospc")
        actor.log.info(
            "btrfs_reserve_ticket", bytes=nbytes, flush_states=flushed, wait_ns=actor.now_ns - start, error=error,
            free=self.free_bytes(), comm=current.comm,
        )  # fmt: skip
        return error

    async def flush_space(self, current: TaskStruct, state: int, nbytes: int) -> None:
        """``flush_space()`` for one state (see the module header); traces ``btrfs_flush_space``."""
        kernel = self.kernel
        writeback = kernel.writeback
        # shrink_delalloc(): reclaim whole EXTENT_SIZE_PER_ITEM items, at least one.
        shortfall = int(self.config.flush_threshold * self.config.space) + nbytes - self.free_bytes()
        items = max(1, -(-shortfall // EXTENT_SIZE_PER_ITEM))
        nr_pages = items * EXTENT_SIZE_PER_ITEM // PAGE_SIZE
        start = current.actor.now_ns
        if state == FLUSH_DELALLOC:
            kernel.count("btrfs_flush_delalloc")
            done = await writeback.writeback_and_wait(current, nr_pages, sb=self, wait_for_io=False, reason="fs_free_space")
        elif state == FLUSH_DELALLOC_WAIT:
            kernel.count("btrfs_flush_delalloc")
            done = await writeback.writeback_and_wait(current, nr_pages, sb=self, wait_for_io=True, reason="fs_free_space")
            await self.btrfs_wait_ordered_roots(current)
        else:
            done = await self.btrfs_commit_transaction(current)
        current.actor.log.info(
            "btrfs_flush_space", state=FLUSH_STATE_NAMES[state], num_bytes=nbytes, nr_pages=nr_pages, done=done,
            ns=current.actor.now_ns - start, free=self.free_bytes(),
        )  # fmt: skip

    async def btrfs_commit_transaction(self, current: TaskStruct) -> int:
        """``btrfs_commit_transaction()``: ``commit_cost`` of work (``fs``), a REQ_META|REQ_SYNC
        write of ``COMMIT_META_BYTES`` waited for (``io``), then unpin what was pinned at the start.

        Returns:
            The bytes unpinned.
        """
        kernel = self.kernel
        kernel.count("btrfs_commit_transaction")
        pinned = self.bytes_pinned
        await current.actor.sleep(self.config.commit_cost)
        current.account_sleep("fs", self.config.commit_cost)
        bio = self._bio(current, [], ReqOp.WRITE, ReqFlag.META | ReqFlag.SYNC, None, nr_bytes=COMMIT_META_BYTES)
        await self._submit_and_wait(current, bio, "btrfs transaction commit")
        self.bytes_pinned -= pinned
        current.actor.log.info("btrfs_transaction_commit", unpinned=pinned, error=int(bio.status))
        return pinned

    # -- ->page_mkwrite ------------------------------------------------------------------

    async def file_update_time(self, current: TaskStruct, file: File) -> int:
        """``file_update_time()``: free here (see notes); 0."""
        return 0

    async def btrfs_page_mkwrite(self, current: TaskStruct, vmf: VmFault) -> VmFaultResult:
        """Mirror of fs/btrfs/inode.c:btrfs_page_mkwrite() at v4.19 with V3 patch 7/7 as posted.

        V3 behaviour is on iff ``policy.page_mkwrite == "v3-btrfs"``:

        * ``FAULT_FLAG_USED_CACHED`` fast path: lock the page; if
          ``vmf.cached_size == i_size`` and it is dirty, return LOCKED at once.
          ``do_page_mkwrite`` never passes the flag (KERNEL.md defect 7), so
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

        Emulation notes:
            As in 4.19 (the seed hunk shows it), a page found truncated after
            a successful reservation leaves through ``out_unlock`` with
            ``ret2 == 0``, i.e. the success exit: VM_FAULT_LOCKED (or V3's
            RETRY), the reservation not released. Later kernels unlock and
            return VM_FAULT_NOPAGE. ``sb_start_pagefault``, the extent lock
            and ``file_update_time`` cost nothing; the EOF trim never trims.

        Returns:
            ``VM_FAULT_LOCKED`` (page locked and dirty), ``VM_FAULT_RETRY``
            (V3, sem dropped), or ``vmf_error(-ENOSPC)`` = ``VM_FAULT_SIGBUS``.
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

        ret2 = await self.btrfs_delalloc_reserve_space(current, reserved_space)
        reserved = False
        if not ret2:
            ret2 = await self.file_update_time(current, file)
            reserved = True
        if ret2:
            ret = vmf_error(ret2)
            if reserved:  # out:
                self.btrfs_delalloc_release_space(reserved_space)
            return await self._out_noreserve(current, vmf, inode, mm, fpin, ret, start)

        size = inode.i_size
        while True:  # again:
            await lock_page(current, page)
            size = inode.i_size
            if page.mapping is not inode.i_mapping or page_start >= size:
                # page got truncated out from underneath us: goto out_unlock, with ret2 == 0
                kernel.count("btrfs_mkwrite_truncated")
                break
            await wait_on_page_writeback(current, page)
            # lock_extent_bits(); btrfs_lookup_ordered_range()
            ordered = self._ordered.get((inode.ino, page.index))
            if ordered is not None:
                unlock_page(current, page)
                kernel.count("btrfs_mkwrite_ordered_wait")
                await self.btrfs_start_ordered_extent(current, ordered, True)
                continue
            # clear_extent_bit(DELALLOC | DO_ACCOUNTING) + btrfs_set_extent_delalloc()
            self._set_delalloc(inode.ino, page.index, reserved_space)
            kernel.writeback.set_page_dirty(page)
            page.flags |= PageFlag.UPTODATE
            break

        # out_unlock: if (!ret2) { ... }
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
        self, current: TaskStruct, vmf: VmFault, inode: Inode, mm: Any, fpin: File | None, ret: VmFaultResult, start: int
    ) -> VmFaultResult:
        """``out_noreserve:`` sb_end_pagefault; V3: ``fput`` and re-take the sem (defect 9)."""
        if fpin is not None:
            fput(fpin)
            kernel = self.kernel
            kernel.count("btrfs_mkwrite_retake_sem")
            await down_read(current, mm)
        elapsed = current.actor.now_ns - start
        self.kernel.count("btrfs_mkwrite_ns", elapsed)
        current.actor.log.info(
            "btrfs_page_mkwrite", ino=inode.ino, index=vmf.page.index, result=ret.name, ns=elapsed, dropped=fpin is not None
        )
        return ret

    # -- queries ------------------------------------------------------------------------

    def ordered_extent(self, ino: int, index: int) -> BtrfsOrderedExtent | None:
        """The ordered extent covering page *index* of inode *ino*, if any."""
        return self._ordered.get((ino, index))

    def statistics(self) -> BtrfsSpaceStatistics:
        """A snapshot of the space pool and the ordered extents."""
        return BtrfsSpaceStatistics(
            total_bytes=self.config.space,
            bytes_may_use=self.bytes_may_use,
            bytes_pinned=self.bytes_pinned,
            free_bytes=self.free_bytes(),
            ordered_extents=len({oe.oe_id for oe in self._ordered.values()}),
            delalloc_pages=len(self._delalloc),
            flushing=self._flushing is not None,
        )
