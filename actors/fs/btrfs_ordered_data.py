"""btrfs ordered extents: written ranges whose IO has not finished, and the writes that make them.

Mirrors, at v4.19, fs/btrfs/ordered-data.c (``struct btrfs_ordered_extent``,
``btrfs_add_ordered_extent``, ``btrfs_lookup_ordered_range``,
``btrfs_start_ordered_extent``, ``btrfs_wait_ordered_roots``), the write
side of fs/btrfs/extent_io.c and inode.c that creates them
(``extent_writepages`` → ``cow_file_range`` → ``btrfs_add_ordered_extent``,
folded into one ``writepages``) and inode.c's ``btrfs_finish_ordered_io``.
``BtrfsFs`` (actors/fs/btrfs.py) owns one ``BtrfsOrderedTree`` (``fs.ordered``)
and hands the flusher's ``writepages`` to it; the space accounting a
finished extent updates is in actors/fs/btrfs_space.py.

Theory of operation
-------------------

Ordered extents. ``writepages`` (called by the flusher with the pages
already PG_writeback) makes one ordered extent and one bio per contiguous
run. The bio's completion ends page writeback (through the ``Writeback``'s
``end_io``) and queues ``btrfs_finish_ordered_io`` to a worker
(``FINISH_ORDERED_IO_NS`` later): in between, a page is no longer under
writeback but still has an ordered extent, which is why mkwrite checks both.

Each page's data reservation moves into the ordered extent when it is
made, and the extent counts as one of its inode's outstanding extents
(whose metadata reservation it keeps). When it finishes, a successful write
turns the data reservation into an allocated extent and pins the
overwritten one (``bytes_may_use`` → ``bytes_pinned``); a failed one gives
each page its reservation back as delalloc. Then the extent leaves the tree,
its metadata reservation is released, and its waiters wake.

Emulation notes:
    * One tree for the whole filesystem, keyed by (ino, page index), instead
      of one per inode keyed by file offset; an extent is a run of whole
      pages.
    * A write error returns the ordered extent's reservation to the page
      (which the ``Writeback`` re-dirties); nothing is pinned.
    * ``btrfs_start_ordered_extent`` does not re-start writeback of the range
      (``filemap_fdatawrite_range``): the flusher has already submitted it.
    * No csums, no file extent items, no ``BTRFS_ORDERED_NOCOW`` or
      compression; finishing costs no task time (an engine callback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

from actors.block.blkdev import submit_bio
from actors.fs.generic import BIO_MAX_PAGES, fs_bio
from actors.kernel_types import PAGE_SIZE, BlkStatus, ReqOp
from emu import NSEC_PER_USEC, WaitQueue

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.fs.btrfs import BtrfsFs
    from actors.mm.page import Page
    from actors.sched.task import TaskStruct

#: Delay from a write bio's completion to ``btrfs_finish_ordered_io`` (endio worker).
FINISH_ORDERED_IO_NS = 20 * NSEC_PER_USEC


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
class BtrfsOrderedTree:
    """The filesystem's ordered extents (``btrfs_inode->ordered_tree``, one tree for all inodes here).

    Args:
        fs: the filesystem: supplies the kernel, the engine and the
            ``space`` whose reservations the extents carry.
    """

    def __init__(self, fs: BtrfsFs) -> None:
        self.fs = fs
        self.kernel = fs.kernel
        self.engine = fs.engine
        self._ordered: dict[tuple[int, int], BtrfsOrderedExtent] = {}  # (ino, index) -> ordered extent
        self._oe_ids = 0

    def __repr__(self) -> str:
        return "<BtrfsOrderedTree>"

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
            oe = self.btrfs_add_ordered_extent(current, run)

            def bio_end_io(bio: Bio, oe: BtrfsOrderedExtent = oe) -> None:
                oe.io_error = bio.status != BlkStatus.OK
                end_io(bio)  # end_page_writeback and the bdi's accounting
                self.engine.call_later(FINISH_ORDERED_IO_NS, self.btrfs_finish_ordered_io, oe)

            await submit_bio(current, fs_bio(self.kernel, current, run, ReqOp.WRITE, 0, bio_end_io))

    def btrfs_add_ordered_extent(self, current: TaskStruct, run: list[Page]) -> BtrfsOrderedExtent:
        """``btrfs_add_ordered_extent()``: the pages' delalloc reservations move into the new extent."""
        space = self.fs.space
        ino = run[0].mapping.host.ino if run[0].mapping is not None else -1
        self._oe_ids += 1
        reserved = {page.index: space.take_delalloc(ino, page.index) for page in run}
        space.btrfs_add_ordered_extent(ino)
        oe = BtrfsOrderedExtent(oe_id=self._oe_ids, ino=ino, indices=[p.index for p in run], reserved=reserved)
        for index in oe.indices:
            self._ordered[(ino, index)] = oe
        current.actor.log.info("btrfs_ordered_extent_add", ino=ino, start=oe.indices[0], nr=len(oe.indices), oe=oe.oe_id)
        return oe

    def btrfs_finish_ordered_io(self, oe: BtrfsOrderedExtent) -> None:
        """``btrfs_finish_ordered_io()`` (endio worker, runs as an engine callback).

        Success: the data reservation becomes an allocated extent and the
        overwritten extent is pinned (``bytes_may_use`` → ``bytes_pinned``).
        IO error: the data reservation goes back to the (re-dirtied) pages.
        Then the extent is removed (``btrfs_remove_ordered_extent``: one
        outstanding extent fewer, its metadata released) and its waiters woken.
        """
        space = self.fs.space
        total = sum(oe.reserved.values())
        if oe.io_error:
            for index, nbytes in oe.reserved.items():
                if nbytes:
                    space.btrfs_set_extent_delalloc(oe.ino, index, nbytes)
        space.btrfs_remove_ordered_extent(oe.ino, len(oe.indices) * PAGE_SIZE, total, pin=not oe.io_error)
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

    def btrfs_lookup_ordered_range(self, ino: int, index: int) -> BtrfsOrderedExtent | None:
        """``btrfs_lookup_ordered_range()`` for one page: the ordered extent covering *index* of *ino*, if any."""
        return self._ordered.get((ino, index))

    def nr_ordered_extents(self) -> int:
        """How many ordered extents exist (each counted once, however many pages it covers)."""
        return len({oe.oe_id for oe in self._ordered.values()})
