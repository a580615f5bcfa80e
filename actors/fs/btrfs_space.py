"""btrfs space reservation: one pool, per-page delalloc reservations, ticketed flushing, commit.

Mirrors, at v4.19, fs/btrfs/extent-tree.c: ``btrfs_delalloc_reserve_space``
and ``btrfs_delalloc_release_space`` (in fs/btrfs/delalloc-space.c from
v5.3), the slow path ``__reserve_metadata_bytes`` → ``wait_reserve_ticket``
and ``flush_space`` with the states ``FLUSH_DELALLOC``,
``FLUSH_DELALLOC_WAIT`` and ``COMMIT_TRANS`` (fs/btrfs/space-info.c from
v5.3); the accounting half of ``btrfs_set_extent_delalloc``
(fs/btrfs/inode.c); and, from fs/btrfs/transaction.c, what
``btrfs_commit_transaction`` does for space: it unpins. ``BtrfsFs``
(actors/fs/btrfs.py) owns one ``BtrfsSpaceInfo`` and offers its entry
points as its own methods; the ordered extents that move reservations into
``bytes_pinned`` are in actors/fs/btrfs_ordered_data.py.

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
    * Re-dirtying a page that already has a delalloc reservation releases the
      old one (``clear_extent_bit(EXTENT_DELALLOC | EXTENT_DO_ACCOUNTING)``
      read as releasing the page's earlier reservation): no double counting.
    * No periodic transaction commit (``commit_interval``), no delayed
      items/refs, no chunk allocation, no qgroups, no separate metadata
      reservation; the commit's metadata write is ``COMMIT_META_BYTES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs

from actors.block.blkdev import submit_bio
from actors.fs.generic import fs_bio
from actors.kernel_types import PAGE_SIZE, Errno, ReqFlag, ReqOp
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.fs.btrfs import BtrfsFs
    from actors.sched.task import TaskStruct
    from emu import Engine

#: ``nodesize``: bytes of one tree block read or written.
NODESIZE = 16 * 1024
#: Metadata a transaction commit writes (a few tree blocks and the super block).
COMMIT_META_BYTES = 4 * NODESIZE
#: ``EXTENT_SIZE_PER_ITEM``: delalloc flushing reclaims in items of this size.
EXTENT_SIZE_PER_ITEM = 256 * 1024

#: ``enum btrfs_flush_state`` values used here (fs/btrfs/ctree.h, v4.19).
FLUSH_DELALLOC = 3
FLUSH_DELALLOC_WAIT = 4
COMMIT_TRANS = 6
FLUSH_STATE_NAMES = {FLUSH_DELALLOC: "FLUSH_DELALLOC", FLUSH_DELALLOC_WAIT: "FLUSH_DELALLOC_WAIT", COMMIT_TRANS: "COMMIT_TRANS"}
FLUSH_STATES = (FLUSH_DELALLOC, FLUSH_DELALLOC_WAIT, COMMIT_TRANS)


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


async def submit_bio_wait(engine: Engine, current: TaskStruct, bio: Bio, what: str) -> Bio:
    """Submit *bio* and sleep until it completes (``submit_bio_wait``), accounted as ``io``.

    Used for the commit's metadata write here and for tree-block reads
    (``btrfs_get_extent``, actors/fs/btrfs.py).
    """
    wq = WaitQueue(engine, what)
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


@final
class BtrfsSpaceInfo:
    """The filesystem's one ``struct btrfs_space_info`` and its reservation paths.

    Args:
        fs: the filesystem (``fs_info``): supplies the kernel and
            ``config`` (``space``, ``reserve_cost``, ``flush_threshold``,
            ``commit_cost``); its inodes are what ``flush_space`` writes back
            (``sb``) and its ordered extents what it waits for.
        reserve_fail: the reservation's error-injection point (module header).

    Attributes:
        bytes_may_use: reserved, not yet allocated.
        bytes_pinned: freed by an uncommitted transaction.
        delalloc: (ino, index) → the bytes reserved for that page
            (``EXTENT_DELALLOC``).
        flushing: comm of the task running ``flush_space``, or ``None``.
    """

    def __init__(self, fs: BtrfsFs, *, reserve_fail: Callable[[TaskStruct, int], bool] | None = None) -> None:
        self.fs = fs
        self.kernel = fs.kernel
        self.config = fs.config
        self.reserve_fail = reserve_fail
        self.bytes_may_use = 0
        self.bytes_pinned = 0
        self.delalloc: dict[tuple[int, int], int] = {}
        self.flushing: str | None = None
        self._ticket_wq = WaitQueue(fs.engine, "btrfs space ticket", lambda: [self.flushing] if self.flushing else [])

    def __repr__(self) -> str:
        return "<BtrfsSpaceInfo>"

    # -- delalloc and pinning -------------------------------------------------------------

    def btrfs_set_extent_delalloc(self, ino: int, index: int, nbytes: int) -> None:
        """``btrfs_set_extent_delalloc()`` for one page, replacing an earlier reservation."""
        old = self.delalloc.pop((ino, index), 0)
        if old:
            self.bytes_may_use -= old  # clear_extent_bit(EXTENT_DELALLOC | EXTENT_DO_ACCOUNTING)
        self.delalloc[(ino, index)] = nbytes

    def take_delalloc(self, ino: int, index: int) -> int:
        """Clear page *index*'s delalloc and return its reservation (0 if none), for an ordered extent."""
        return self.delalloc.pop((ino, index), 0)

    def pin_reserved(self, nbytes: int) -> None:
        """A finished ordered extent's reservation was allocated and the old extent freed: ``bytes_may_use`` → ``bytes_pinned``."""
        self.bytes_may_use -= nbytes
        self.bytes_pinned += nbytes

    # -- reservation ----------------------------------------------------------------------

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
            if self.flushing is not None:
                # Another task's ticket is being flushed: wait for it, then re-check.
                await self._ticket_wq.wait(actor, current.comm)
                current.account_sleep("fs", actor.now_ns - start)
                if self._try_reserve(nbytes):
                    break
                continue
            self.flushing = current.comm
            try:
                for state in FLUSH_STATES:
                    await self.flush_space(current, state, nbytes)
                    flushed += 1
                    if self._try_reserve(nbytes):
                        break
                else:
                    error = -Errno.ENOSPC
            finally:
                self.flushing = None
                self._ticket_wq.wake_all()
            break
        if error:
            kernel.count("btrfs_enospc")
        actor.log.info(
            "btrfs_reserve_ticket", bytes=nbytes, flush_states=flushed, wait_ns=actor.now_ns - start, error=error,
            free=self.free_bytes(), comm=current.comm,
        )  # fmt: skip
        return error

    # -- flushing -------------------------------------------------------------------------

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
            done = await writeback.writeback_and_wait(current, nr_pages, sb=self.fs, wait_for_io=False, reason="fs_free_space")
        elif state == FLUSH_DELALLOC_WAIT:
            kernel.count("btrfs_flush_delalloc")
            done = await writeback.writeback_and_wait(current, nr_pages, sb=self.fs, wait_for_io=True, reason="fs_free_space")
            await self.fs.ordered.btrfs_wait_ordered_roots(current)
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
        bio = fs_bio(kernel, current, [], ReqOp.WRITE, ReqFlag.META | ReqFlag.SYNC, None, nr_bytes=COMMIT_META_BYTES)
        await submit_bio_wait(self.fs.engine, current, bio, "btrfs transaction commit")
        self.bytes_pinned -= pinned
        current.actor.log.info("btrfs_transaction_commit", unpinned=pinned, error=int(bio.status))
        return pinned
