"""btrfs space reservation: one pool, per-inode metadata reservations, tickets, async reclaim.

Mirrors, at v4.19, fs/btrfs/extent-tree.c (fs/btrfs/delalloc-space.c and
space-info.c from v5.3): ``btrfs_delalloc_reserve_space`` /
``btrfs_delalloc_release_space`` / ``btrfs_delalloc_release_extents``, the
inode's ``block_rsv`` sized by ``btrfs_calculate_inode_block_rsv_size``,
the reservation slow path ``__reserve_metadata_bytes`` →
``wait_reserve_ticket``, ticket granting (``space_info_add_old_bytes``), and
the ``async_reclaim_work`` worker ``btrfs_async_reclaim_metadata_space`` →
``flush_space`` with the states ``FLUSH_DELALLOC``, ``FLUSH_DELALLOC_WAIT``
and ``COMMIT_TRANS``; the accounting halves of the extent-state hooks
(``btrfs_set_bit_hook`` / ``btrfs_clear_bit_hook`` / merge / split,
fs/btrfs/inode.c) and of ``btrfs_add_ordered_extent`` /
``btrfs_remove_ordered_extent`` (fs/btrfs/ordered-data.c). ``BtrfsFs``
(actors/fs/btrfs.py) owns one ``BtrfsSpaceInfo`` (``fs.space``); the
transaction that unpins is actors/fs/btrfs_transaction.py, the ordered
extents actors/fs/btrfs_ordered_data.py.

Theory of operation
-------------------

Space. One pool of ``space`` bytes::

    free = space - bytes_may_use - bytes_pinned

``btrfs_page_mkwrite`` reserves ``PAGE_SIZE`` of data plus what the inode's
metadata reservation must grow by. An inode's ``block_rsv`` is sized for
its outstanding extents (delalloc runs, one per contiguous run of delalloc
pages, plus ordered extents not yet finished) and the csum leaves of its
outstanding bytes::

    size = calc(outstanding_extents + 1) + calc(csum_leaves)   (calc(0) if no extents)
    calc(n) = btrfs_calc_trans_metadata_size(n) = nodesize * BTRFS_MAX_LEVEL * 2 * n  = 256 KiB * n

A reservation counts one more outstanding extent and ``PAGE_SIZE`` more
csum bytes and reserves the difference (``btrfs_inode_rsv_refill``): 256 KiB
for a file's first dirty page, another 256 KiB for each page that does not
touch an existing delalloc run. ``btrfs_delalloc_release_extents`` then
drops the extra extent and releases what the rsv holds beyond its size; a
page merged into a neighbouring run costs no lasting metadata. Writeback
moves a run into an ordered extent; when that finishes its data
reservation is pinned (the overwritten extent stays pinned until the
transaction commits) and its metadata released.

A reservation that would leave less than ``flush_threshold × space`` free
queues a ticket (``BTRFS_RESERVE_FLUSH_ALL``), starts the async reclaim
worker if it is not running, and sleeps on the ticket (``fs``) until space
released to the pool has been handed to it, FIFO and partially if need be,
or the worker gives up. The worker (a kworker: no mm, root blkcg, so its IO
is the root's) runs ``flush_space`` with ``to_reclaim`` = the tickets'
bytes, state after state::

    FLUSH_DELALLOC       start writeback of to_reclaim, in 256 KiB items (flusher; no IO wait)
    FLUSH_DELALLOC_WAIT  write back and wait for the IO and every ordered extent
    COMMIT_TRANS         if at least the head ticket's bytes are pinned: commit (unpins)

and starts again from the first state whenever a ticket was granted
(``tickets_id`` moved); three full passes without progress fail every
ticket with ``-ENOSPC`` (``wake_all_tickets``) → ``VM_FAULT_SIGBUS``.

While a transaction commits, ``btrfs_delalloc_reserve_metadata`` first
sleeps one jiffy (``schedule_timeout(1)``, ``fs``): 4.19 does this on every
reservation; it was removed in 6.x as latency for no reason.

Fault injection. ``reserve_fail(current, nbytes) -> bool`` (a constructor
argument; ``None``: never) is the filesystem's error-injection point. It is
consulted by ``btrfs_delalloc_reserve_space`` once a reservation has
succeeded, after the normal cost and any ticket wait; ``True`` gives the
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
    * One pool for data and metadata (btrfs keeps a DATA and a METADATA
      space_info, and a data shortfall is flushed by the reserving task in
      ``btrfs_alloc_data_chunk_ondemand``): the whole reservation goes
      through the metadata ticket path. ``flush_threshold`` stands in for
      ``can_overcommit``; no preemptive reclaim (``need_do_async_reclaim``).
    * Priority tickets (``BTRFS_RESERVE_FLUSH_LIMIT``, flushed by the
      reserving task itself: truncate, eviction, relocation, or a
      reservation inside a transaction) are not modelled: no modelled
      caller reserves that way. Ticket waits are not killable.
    * No delayed items/refs, chunk allocation, qgroups, global reserve or
      ``inode->delalloc_mutex``; the states between the modelled ones are
      no-ops and skipped. No ``commit_interval`` commits.
    * Re-dirtying a page that already has a delalloc reservation releases the
      old data reservation and its csum bytes (``clear_extent_bit(EXTENT_DELALLOC
      | EXTENT_DO_ACCOUNTING)``): no double counting.
    * A failed ordered extent gives its pages their data reservations back
      as delalloc and keeps their csum bytes; nothing is pinned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs

from actors.block.blk_throttle import JIFFY_NS
from actors.fs.btrfs_transaction import NODESIZE
from actors.kernel_types import PAGE_SIZE, Errno
from actors.sched.core import cpu_work, wakeup
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.fs.btrfs import BtrfsFs
    from actors.sched.task import TaskStruct

#: ``BTRFS_MAX_LEVEL`` (fs/btrfs/ctree.h): the deepest a btree can be.
BTRFS_MAX_LEVEL = 8
#: ``BTRFS_MAX_ITEM_SIZE``: a leaf's data area (nodesize − the 101-byte ``struct btrfs_header``)
#: less one 25-byte ``struct btrfs_item`` (fs/btrfs/ctree.h).
BTRFS_MAX_ITEM_SIZE = NODESIZE - 101 - 25
#: crc32c, the default checksum: ``btrfs_super_csum_size`` = 4.
BTRFS_CSUM_SIZE = 4
#: ``EXTENT_SIZE_PER_ITEM``: delalloc flushing reclaims in items of this size.
EXTENT_SIZE_PER_ITEM = 256 * 1024
#: Full passes over the flush states without progress before every ticket fails
#: (``commit_cycles > 2`` in ``btrfs_async_reclaim_metadata_space``).
MAX_COMMIT_CYCLES = 2

#: ``enum btrfs_flush_state`` values used here (fs/btrfs/ctree.h, v4.19).
FLUSH_DELALLOC = 3
FLUSH_DELALLOC_WAIT = 4
COMMIT_TRANS = 6
FLUSH_STATE_NAMES = {FLUSH_DELALLOC: "FLUSH_DELALLOC", FLUSH_DELALLOC_WAIT: "FLUSH_DELALLOC_WAIT", COMMIT_TRANS: "COMMIT_TRANS"}
FLUSH_STATES = (FLUSH_DELALLOC, FLUSH_DELALLOC_WAIT, COMMIT_TRANS)


def btrfs_calc_trans_metadata_size(num_items: int) -> int:
    """``btrfs_calc_trans_metadata_size()`` (fs/btrfs/ctree.h, v4.19): a COW of every level, twice, per item."""
    return NODESIZE * BTRFS_MAX_LEVEL * 2 * num_items


def btrfs_csum_bytes_to_leaves(csum_bytes: int) -> int:
    """``btrfs_csum_bytes_to_leaves()`` (extent-tree.c, v4.19): leaves holding the csums of *csum_bytes*."""
    per_leaf = BTRFS_MAX_ITEM_SIZE // BTRFS_CSUM_SIZE
    return -(-(csum_bytes // PAGE_SIZE) // per_leaf)


@attrs.define(kw_only=True)
class BtrfsInodeRsv:
    """An inode's ``outstanding_extents``, ``csum_bytes`` and ``block_rsv->reserved``."""

    outstanding_extents: int = 0
    csum_bytes: int = 0
    reserved: int = 0

    def size(self) -> int:
        """``btrfs_calculate_inode_block_rsv_size()`` (v4.19): what ``block_rsv->size`` becomes."""
        size = btrfs_calc_trans_metadata_size(self.outstanding_extents + 1) if self.outstanding_extents else 0
        return size + btrfs_calc_trans_metadata_size(btrfs_csum_bytes_to_leaves(self.csum_bytes))


@attrs.define(eq=False, kw_only=True)
class ReserveTicket:
    """``struct reserve_ticket``: a reservation waiting for space; ``bytes`` still missing."""

    ticket_id: int
    orig_bytes: int
    bytes: int
    comm: str
    error: int = 0


@attrs.frozen(kw_only=True)
class BtrfsSpaceStatistics:
    """``struct btrfs_space_info`` as ``/sys/fs/btrfs/<uuid>/allocation`` prints it (one pool)."""

    total_bytes: int
    bytes_may_use: int
    bytes_pinned: int
    free_bytes: int
    metadata_reserved: int
    ordered_extents: int
    delalloc_pages: int
    tickets: int
    flushing: bool


@final
class BtrfsSpaceInfo:
    """The filesystem's one ``struct btrfs_space_info``, the inodes' reservations and the reclaim worker.

    Args:
        fs: the filesystem (``fs_info``): supplies the kernel and
            ``config`` (``space``, ``reserve_cost``, ``flush_threshold``);
            its inodes are what ``flush_space`` writes back (``sb``), its
            ordered extents what it waits for, its transaction what it commits.
        reserve_fail: the reservation's error-injection point (module header).

    Attributes:
        bytes_may_use: reserved, not yet allocated (data and metadata).
        bytes_pinned: freed by an uncommitted transaction.
        delalloc: (ino, index) → the data bytes reserved for that page
            (``EXTENT_DELALLOC``).
        tickets: the waiting reservations, FIFO (``space_info->tickets``).
        flush: the reclaim worker is queued or running (``space_info->flush``).
    """

    def __init__(self, fs: BtrfsFs, *, reserve_fail: Callable[[TaskStruct, int], bool] | None = None) -> None:
        self.fs = fs
        self.kernel = fs.kernel
        self.config = fs.config
        self.reserve_fail = reserve_fail
        self.bytes_may_use = 0
        self.bytes_pinned = 0
        self.delalloc: dict[tuple[int, int], int] = {}
        self.tickets: list[ReserveTicket] = []
        self.tickets_id = 0
        self.flush = False
        self._rsv: dict[int, BtrfsInodeRsv] = {}
        self._ticket_ids = 0
        self._ticket_wq = WaitQueue(fs.engine, "btrfs space ticket", lambda: [self._worker.comm] if self._worker else [])
        self._work_wq = WaitQueue(fs.engine, "btrfs async_reclaim_work idle")
        self._worker: TaskStruct | None = None

    def __repr__(self) -> str:
        return "<BtrfsSpaceInfo>"

    # -- the pool -------------------------------------------------------------------------

    def free_bytes(self) -> int:
        return self.config.space - self.bytes_may_use - self.bytes_pinned

    def _available(self) -> int:
        """What may be reserved before ``free`` falls below ``flush_threshold × space``."""
        return self.free_bytes() - int(self.config.flush_threshold * self.config.space)

    def _return_bytes(self, nbytes: int) -> None:
        """``bytes_may_use`` shrinks; ``space_info_add_old_bytes``: grant waiting tickets, FIFO, partly if need be."""
        self.bytes_may_use -= nbytes
        self._grant_tickets()

    def unpin(self, nbytes: int) -> None:
        """``btrfs_finish_extent_commit`` → ``unpin_extent_range``: pinned bytes are free again; grant tickets."""
        self.bytes_pinned -= nbytes
        self._grant_tickets()

    def _grant_tickets(self) -> None:
        while self.tickets and (avail := self._available()) > 0:
            ticket = self.tickets[0]
            grant = min(avail, ticket.bytes)
            self.bytes_may_use += grant
            ticket.bytes -= grant
            if ticket.bytes:
                return
            self.tickets.pop(0)
            self.tickets_id += 1
            self._ticket_wq.wake(ticket.ticket_id)

    def inode_rsv(self, ino: int) -> BtrfsInodeRsv:
        """Inode *ino*'s metadata reservation (made on first use)."""
        rsv = self._rsv.get(ino)
        if rsv is None:
            rsv = self._rsv[ino] = BtrfsInodeRsv()
        return rsv

    def _rsv_release(self, rsv: BtrfsInodeRsv) -> None:
        """``btrfs_inode_rsv_release()``: give back what ``block_rsv`` holds beyond its size."""
        excess = rsv.reserved - rsv.size()
        if excess > 0:
            rsv.reserved -= excess
            self._return_bytes(excess)

    # -- delalloc, ordered extents and pinning --------------------------------------------

    def _neighbours(self, ino: int, index: int) -> int:
        return ((ino, index - 1) in self.delalloc) + ((ino, index + 1) in self.delalloc)

    def btrfs_set_extent_delalloc(self, ino: int, index: int, nbytes: int) -> None:
        """``btrfs_set_extent_delalloc()`` for one page, replacing an earlier reservation.

        A page new to delalloc adds an outstanding extent and merges with
        each delalloc neighbour (``btrfs_merge_delalloc_extent``: one fewer
        each). A page already delalloc is cleared and set again, which
        leaves the extents as they were; the clear releases its old data
        reservation and its csum bytes.
        """
        rsv = self.inode_rsv(ino)
        old = self.delalloc.pop((ino, index), None)
        if old is None:
            rsv.outstanding_extents += 1 - self._neighbours(ino, index)
        else:
            rsv.csum_bytes -= PAGE_SIZE  # clear_extent_bit(EXTENT_DO_ACCOUNTING)
            self._return_bytes(old)
        self.delalloc[(ino, index)] = nbytes

    def take_delalloc(self, ino: int, index: int) -> int:
        """Clear page *index*'s delalloc and return its data reservation (0 if none), for an ordered extent.

        Clearing shrinks a run (no change), removes a one-page run (one
        extent fewer) or splits a run in two (``btrfs_split_delalloc_extent``:
        one more).
        """
        nbytes = self.delalloc.pop((ino, index), None)
        if nbytes is None:
            return 0
        self.inode_rsv(ino).outstanding_extents += self._neighbours(ino, index) - 1
        return nbytes

    def btrfs_add_ordered_extent(self, ino: int) -> None:
        """``__btrfs_add_ordered_extent()``: the ordered extent is one more outstanding extent."""
        self.inode_rsv(ino).outstanding_extents += 1

    def btrfs_remove_ordered_extent(self, ino: int, nbytes: int, data_reserved: int, *, pin: bool) -> None:
        """``btrfs_remove_ordered_extent()`` + ``btrfs_delalloc_release_metadata(len)``; the data reservation
        (*data_reserved*) is pinned when *pin* (``bytes_may_use`` → ``bytes_pinned``), else it stays delalloc."""
        rsv = self.inode_rsv(ino)
        rsv.outstanding_extents -= 1
        if pin:
            self.bytes_may_use -= data_reserved
            self.bytes_pinned += data_reserved
            rsv.csum_bytes -= nbytes
        self._rsv_release(rsv)

    # -- reservation ----------------------------------------------------------------------

    def btrfs_delalloc_release_extents(self, ino: int) -> None:
        """``btrfs_delalloc_release_extents(inode, PAGE_SIZE)``: drop the reservation's extra extent."""
        rsv = self.inode_rsv(ino)
        rsv.outstanding_extents -= 1
        self._rsv_release(rsv)

    def btrfs_delalloc_release_space(self, ino: int, nbytes: int) -> None:
        """``btrfs_delalloc_release_space()``: give back a data reservation and its csum bytes, unused."""
        rsv = self.inode_rsv(ino)
        rsv.csum_bytes -= nbytes
        self._return_bytes(nbytes)
        self._rsv_release(rsv)

    async def btrfs_delalloc_reserve_space(self, current: TaskStruct, ino: int, nbytes: int) -> int:
        """Mirror of ``btrfs_delalloc_reserve_space()`` (v4.19), one pool (module header).

        ``reserve_cost`` of CPU work; one jiffy's sleep (``fs``) if a commit
        is running; then data and the inode rsv's growth in one
        reservation, through a ticket if short. A reservation made is then
        put to the ``reserve_fail`` injection point (module header): if it
        fails, it is given back and the result is ``-ENOSPC``. The caller
        ends a successful reservation with ``btrfs_delalloc_release_extents``.

        Returns:
            0, or ``-ENOSPC``.
        """
        await cpu_work(current, extra_ns=self.config.reserve_cost)
        if self.fs.transaction.btrfs_transaction_in_commit():
            await current.actor.sleep(JIFFY_NS)  # schedule_timeout(1)
            current.account_sleep("fs", JIFFY_NS)
            self.kernel.count("btrfs_reserve_commit_sleep")
        rsv = self.inode_rsv(ino)
        rsv.outstanding_extents += 1
        rsv.csum_bytes += nbytes
        meta = max(0, rsv.size() - rsv.reserved)
        total = nbytes + meta
        if self._available() >= total:
            self.bytes_may_use += total
        else:
            error = await self._wait_reserve_ticket(current, total)
            if error:  # out_fail
                rsv.outstanding_extents -= 1
                rsv.csum_bytes -= nbytes
                self._rsv_release(rsv)
                return error
        rsv.reserved += meta
        if self.reserve_fail is not None and self.reserve_fail(current, total):
            self.btrfs_delalloc_release_extents(ino)
            self.btrfs_delalloc_release_space(ino, nbytes)
            return -Errno.ENOSPC
        return 0

    async def _wait_reserve_ticket(self, current: TaskStruct, nbytes: int) -> int:
        """``__reserve_metadata_bytes`` (FLUSH_ALL) → ``wait_reserve_ticket``: queue, kick the worker, sleep.

        The sleep is ``fs``; a ticket failed with part of its bytes granted
        gives that part back. Traces ``btrfs_reserve_ticket``.

        Returns:
            0 (reserved), or ``-ENOSPC``.
        """
        actor = current.actor
        self._ticket_ids += 1
        ticket = ReserveTicket(ticket_id=self._ticket_ids, orig_bytes=nbytes, bytes=nbytes, comm=current.comm)
        self.tickets.append(ticket)
        if not self.flush:
            self.flush = True
            self._queue_async_reclaim()
        start = actor.now_ns
        while ticket.bytes > 0 and not ticket.error:
            await self._ticket_wq.wait(actor, ticket.ticket_id)
        await wakeup(current)
        waited = actor.now_ns - start
        current.account_sleep("fs", waited)
        if ticket in self.tickets:
            self.tickets.remove(ticket)
        if ticket.bytes and ticket.bytes < nbytes:
            self._return_bytes(nbytes - ticket.bytes)
        if ticket.error:
            self.kernel.count("btrfs_enospc")
        self.kernel.count("btrfs_reserve_ticket_wait_ns", waited)
        actor.log.info(
            "btrfs_reserve_ticket", bytes=nbytes, wait_ns=waited, error=ticket.error, free=self.free_bytes(), comm=current.comm
        )
        return ticket.error

    # -- the async reclaim worker ---------------------------------------------------------

    def _queue_async_reclaim(self) -> None:
        """``queue_work(system_unbound_wq, &fs_info->async_reclaim_work)``; the kworker starts on first use."""
        if self._worker is None:
            self._worker = self.kernel.spawn_kthread("kworker/u:btrfs-reclaim", self._async_reclaim_worker)
        self._work_wq.wake("idle")

    async def _async_reclaim_worker(self, current: TaskStruct) -> None:
        """The kworker's loop: run the work whenever it is queued."""
        while True:
            if not self.flush:
                await self._work_wq.wait(current.actor, "idle")
                continue
            await self.btrfs_async_reclaim_metadata_space(current)

    async def btrfs_async_reclaim_metadata_space(self, current: TaskStruct) -> None:
        """Mirror of ``btrfs_async_reclaim_metadata_space()`` (v4.19): flush until the tickets are served or fail."""
        if not self.tickets:
            self.flush = False
            return
        to_reclaim = sum(t.bytes for t in self.tickets)  # btrfs_calc_reclaim_metadata_size
        last_tickets_id = self.tickets_id
        commit_cycles = 0
        state = 0
        while True:
            await self.flush_space(current, FLUSH_STATES[state], to_reclaim)
            if not self.tickets:
                self.flush = False
                return
            to_reclaim = sum(t.bytes for t in self.tickets)
            if last_tickets_id == self.tickets_id:
                state += 1
            else:
                last_tickets_id = self.tickets_id
                state = 0
                commit_cycles = max(0, commit_cycles - 1)
            if state == len(FLUSH_STATES):
                commit_cycles += 1
                if commit_cycles > MAX_COMMIT_CYCLES:
                    self._wake_all_tickets()
                    self.flush = False
                    return
                state = 0

    def _wake_all_tickets(self) -> None:
        """``wake_all_tickets()``: every waiting ticket fails with ``-ENOSPC``."""
        tickets, self.tickets = self.tickets, []
        for ticket in tickets:
            ticket.error = -Errno.ENOSPC
            self._ticket_wq.wake(ticket.ticket_id)

    async def flush_space(self, current: TaskStruct, state: int, num_bytes: int) -> None:
        """``flush_space()`` for one state (see the module header); traces ``btrfs_flush_space``."""
        kernel = self.kernel
        writeback = kernel.writeback
        # shrink_delalloc(): reclaim whole EXTENT_SIZE_PER_ITEM items, at least one.
        shortfall = num_bytes - self._available()
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
        elif self.tickets and self.bytes_pinned >= self.tickets[0].bytes:  # may_commit_transaction
            done = await self.fs.transaction.btrfs_commit_transaction(current)
        else:
            done = 0
        current.actor.log.info(
            "btrfs_flush_space", state=FLUSH_STATE_NAMES[state], num_bytes=num_bytes, nr_pages=nr_pages, done=done,
            ns=current.actor.now_ns - start, free=self.free_bytes(),
        )  # fmt: skip

    def statistics(self) -> BtrfsSpaceStatistics:
        """A snapshot of the pool, the reservations and the ordered extents."""
        return BtrfsSpaceStatistics(
            total_bytes=self.config.space,
            bytes_may_use=self.bytes_may_use,
            bytes_pinned=self.bytes_pinned,
            free_bytes=self.free_bytes(),
            metadata_reserved=sum(rsv.reserved for _ino, rsv in sorted(self._rsv.items())),
            ordered_extents=self.fs.ordered.nr_ordered_extents(),
            delalloc_pages=len(self.delalloc),
            tickets=len(self.tickets),
            flushing=self.flush,
        )
