"""Swap: one swap partition, its slots, the swap cache, and swap IO.

Mirrors, at v4.19:

* mm/swapfile.c: ``swap_map`` (a count per slot plus ``SWAP_HAS_CACHE``),
  ``get_swap_page`` (next-fit from ``cluster_next``), ``swap_duplicate``,
  ``swap_free``, ``try_to_free_swap``, ``vm_swap_full`` (over half used);
* mm/swap_state.c: the swap cache (``add_to_swap_cache``,
  ``delete_from_swap_cache``, ``lookup_swap_cache``, which counts a fault's
  hit on a read-ahead page in ``swapin_readahead_hits``), ``swapin_nr_pages``
  (the adaptive window: ``hits + 2`` rounded up to a power of two, one page
  when there were no hits and the slot is not next to the previous one,
  never below half the last window, at most ``2**page_cluster``) and
  ``swap_cluster_readahead``: the aligned block of that many slots around
  the faulting one, each slot in use and not cached read into a new locked
  swap-cache page, under one plug (``swapin_readahead`` with the non-VMA
  readahead; ``page_cluster`` default 3). A window of one page skips the
  block and reads the slot with ``do_poll``: ``swap_readpage(page,
  synchronous=true)`` waits for the read itself, inside the fault and with
  its mmap_sem held, where a read-ahead fault would drop the sem in
  ``lock_page_or_retry`` (23955622ff8d, 4.13; removed after 6.4 by "swap:
  remove remnants of polling from read_swap_cache_async", Suren
  Baghdasaryan, 2023; policy ``swapin_sync``). Random swap-ins have no hits,
  so their window falls to one page and every one of them is synchronous;
* mm/page_io.c: ``swap_writepage`` (``REQ_OP_WRITE | REQ_SWAP``, charged to
  the page's memcg by ``bio_associate_blkcg_from_page``: io.latency issues it
  as root, ``bio_issue_as_root_blkg``) and ``swap_readpage`` (a plain read
  charged to the faulting task's cgroup, throttled like any other).

From 5.8 (4c6355b25e8b, policy ``swapin_charge = "swapcache"``)
``__read_swap_cache_async`` charges each new swap-cache page when it is
allocated, to the memcg that swapped it out (``lookup_swap_cgroup_id``);
before, ``do_swap_page`` charged the faulting page after locking it.

Emulation notes:
    Slot 0 holds the swap header, as in the kernel. No swap clusters or
    per-CPU slot caches, no discard, no ``SWP_SYNCHRONOUS_IO`` bypass
    (zram/pmem), no VMA-based readahead (``swap_vma_readahead``, which
    4.19 uses when ``/sys/kernel/mm/swap/vma_ra_enabled`` is set): the
    cluster readahead is the one modelled. A swap-cache page has no
    ``mapping``; ``PG_swapcache`` and ``page.private`` say where it belongs.
    Uncharged swap-cache pages (read ahead and never faulted, up to 5.7)
    stay cached: only global reclaim, not modelled, would free them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.block.bio import Bio
from actors.block.blkdev import blk_finish_plug, blk_start_plug, submit_bio
from actors.kernel_types import BlkStatus, PageFlag, ReqFlag, ReqOp
from actors.mm.memcontrol import mem_cgroup_charge
from actors.mm.page import Page, end_page_writeback, get_page, page_endio, page_lock_handoff, put_page, unlock_page, wait_on_page_locked

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.mm.memcontrol import MemCgroup
    from actors.sched.task import TaskStruct

SWAP_HAS_CACHE = 0x40
SECTORS_PER_PAGE = 8


class SwapInfo:
    """``struct swap_info_struct`` of one swap partition: ``nr_slots`` pages from ``start_sector``."""

    def __init__(self, start_sector: int, nr_slots: int, page_cluster: int) -> None:
        self.start_sector = start_sector
        self.max = nr_slots
        self.page_cluster = page_cluster
        self.swap_map = [0] * nr_slots
        self.swap_map[0] = 1  # the header: never allocated
        self.inuse_pages = 1
        self.cluster_next = 1
        #: The swap cache: slot → page (``swapper_spaces``).
        self.cache: dict[int, Page] = {}
        #: ``swap_cgroup``: the memcg that owned each slot's page when it was swapped out.
        self.swap_cgroup: dict[int, MemCgroup] = {}
        #: ``swapin_nr_pages()``'s statics: ``swapin_readahead_hits``, ``prev_offset``, ``last_readahead_pages``.
        self.readahead_hits = 0
        self.prev_offset = 0
        self.last_readahead_pages = 0

    def get_swap_page(self) -> int:
        """``get_swap_page()`` → ``scan_swap_map_slots()``: a free slot (next-fit), marked ``SWAP_HAS_CACHE``; 0 if full."""
        if self.inuse_pages >= self.max:
            return 0
        offset = self.cluster_next
        while self.swap_map[offset]:
            offset = offset + 1 if offset + 1 < self.max else 1
        self.swap_map[offset] = SWAP_HAS_CACHE
        self.inuse_pages += 1
        self.cluster_next = offset + 1 if offset + 1 < self.max else 1
        return offset

    def swap_duplicate(self, offset: int) -> None:
        """``swap_duplicate()``: one more PTE holds the entry."""
        self.swap_map[offset] += 1

    def _maybe_free(self, offset: int) -> None:
        if not self.swap_map[offset]:
            self.inuse_pages -= 1
            self.swap_cgroup.pop(offset, None)

    def swap_free(self, offset: int) -> None:
        """``swap_free()``: a PTE let go of the entry; the slot is free once nothing holds it."""
        self.swap_map[offset] -= 1
        self._maybe_free(offset)

    def vm_swap_full(self) -> bool:
        """``vm_swap_full()``: more than half of swap is in use."""
        return self.inuse_pages * 2 > self.max

    def swap_count(self, offset: int) -> int:
        """``__swap_count()``: PTEs holding the entry."""
        return self.swap_map[offset] & ~SWAP_HAS_CACHE

    # -- the swap cache ---------------------------------------------------------

    def add_to_swap_cache(self, page: Page, offset: int) -> None:
        """``add_to_swap_cache()``: the cache takes a reference; ``PG_swapcache``, ``page_private`` = slot."""
        page.refcount += 1
        page.flags |= PageFlag.SWAPCACHE | PageFlag.SWAPBACKED
        page.private = offset
        self.swap_map[offset] |= SWAP_HAS_CACHE
        self.cache[offset] = page

    def delete_from_swap_cache(self, page: Page) -> None:
        """``delete_from_swap_cache()``: drop the cache's reference and ``SWAP_HAS_CACHE`` (``swapcache_free``)."""
        offset = page.private
        del self.cache[offset]
        page.flags &= ~PageFlag.SWAPCACHE
        page.private = 0
        self.swap_map[offset] &= ~SWAP_HAS_CACHE
        self._maybe_free(offset)
        put_page(page)

    def lookup_swap_cache(self, offset: int, *, fault: bool = False) -> Page | None:
        """``lookup_swap_cache()``: the cached page of the slot with a reference, or ``None``.

        *fault*: the lookup of ``do_swap_page``, whose hit on a read-ahead
        page (``TestClearPageReadahead``) counts in ``swapin_readahead_hits``.
        """
        page = self.cache.get(offset)
        if page is not None:
            get_page(page)
            if fault and page.flags & PageFlag.READAHEAD:
                page.flags &= ~PageFlag.READAHEAD
                self.readahead_hits += 1
        return page

    def swapin_nr_pages(self, offset: int) -> int:
        """``swapin_nr_pages()`` → ``__swapin_nr_pages()`` (mm/swap_state.c, v4.19; the same text to 6.12)."""
        max_pages = 1 << self.page_cluster
        if max_pages <= 1:
            return 1
        hits, self.readahead_hits = self.readahead_hits, 0
        pages = hits + 2
        if pages == 2:
            if offset not in (self.prev_offset + 1, self.prev_offset - 1):
                pages = 1
        else:
            roundup = 4
            while roundup < pages:
                roundup <<= 1
            pages = roundup
        pages = max(min(pages, max_pages), self.last_readahead_pages // 2)  # "Don't shrink readahead too fast"
        if not hits:
            self.prev_offset = offset
        self.last_readahead_pages = pages
        return pages

    def try_to_free_swap(self, page: Page) -> bool:
        """``try_to_free_swap()``: leave the swap cache if no PTE holds the slot any more and no write is in flight."""
        if not page.flags & PageFlag.SWAPCACHE or page.flags & PageFlag.WRITEBACK or self.swap_count(page.private):
            return False
        self.delete_from_swap_cache(page)
        return True

    def sector(self, offset: int) -> int:
        """``swap_page_sector()``: where the slot's page lies on the device."""
        return self.start_sector + offset * SECTORS_PER_PAGE


def swap_writepage(current: TaskStruct, swap: SwapInfo, page: Page) -> Bio:
    """``swap_writepage()`` → ``__swap_writepage()`` (mm/page_io.c, v4.19): the write bio of a locked, dirty page.

    Sets ``PG_writeback`` and unlocks the page; the caller submits the bio.
    """
    kernel = current.kernel
    page.flags = (page.flags & ~PageFlag.DIRTY) | PageFlag.WRITEBACK
    kernel.count("pswpout")  # count_swpout_vm_event()

    def end_swap_bio_write(bio: Bio) -> None:
        if bio.status != BlkStatus.OK:
            page.flags |= PageFlag.ERROR | PageFlag.DIRTY
        end_page_writeback(page)

    bio = Bio(
        bio_id=kernel.next_bio_id(),
        op=ReqOp.WRITE,
        flags=ReqFlag.SWAP,
        pages=[page],
        blkcg=page.mem_cgroup.path if page.mem_cgroup is not None else "",  # bio_associate_blkcg_from_page()
        submitter=current.comm,
        bi_end_io=end_swap_bio_write,
        bi_disk=kernel.bdev,
        sector=swap.sector(page.private),
    )
    unlock_page(current, page)
    return bio


async def swap_readpage(current: TaskStruct, swap: SwapInfo, page: Page, *, synchronous: bool = False) -> None:
    """``swap_readpage()`` (mm/page_io.c, v4.19): read a locked swap-cache page; the completion unlocks it.

    *synchronous* (``do_poll``): wait here for the read to complete (the
    kernel sleeps until ``end_swap_bio_read`` clears ``bio->bi_private``;
    here, until the completion unlocks the page), an IO sleep under whatever
    the caller holds.
    """
    kernel = current.kernel
    kernel.count("pswpin")

    def end_swap_bio_read(bio: Bio) -> None:
        page_endio(kernel, bio, page)

    bio = Bio(
        bio_id=kernel.next_bio_id(),
        op=ReqOp.READ,
        pages=[page],
        blkcg=current.blkcg,
        submitter=current.comm,
        bi_end_io=end_swap_bio_read,
        bi_disk=kernel.bdev,
        sector=swap.sector(page.private),
    )
    page_lock_handoff(current, page, bio)
    await submit_bio(current, bio)
    if synchronous:
        await wait_on_page_locked(current, page)


async def swap_cluster_readahead(current: TaskStruct, swap: SwapInfo, offset: int, memcg: MemCgroup | None) -> Page | None:
    """``swap_cluster_readahead()`` (mm/swap_state.c, v4.19): read the slot's aligned window, return the slot's page.

    ``mask = swapin_nr_pages(offset) - 1``. Every slot of ``[offset & ~mask,
    offset | mask]`` that is in use and not cached gets a new page, locked,
    in the swap cache, and a read, the neighbours marked ``PG_readahead``;
    the faulting slot's page comes back with a reference
    (``read_swap_cache_async``). A one-page window reads only the slot, and
    with policy ``swapin_sync`` waits for it (``do_poll``, see the module).
    With ``swapin_charge = "swapcache"`` each new page is charged first
    (to the slot's recorded memcg, else *memcg*); a page whose charge fails
    is not read, and the fault's own failure returns ``None`` (OOM). The
    neighbours charge as ``__GFP_NORETRY`` (simplified: the kernel charges
    them like the faulting page, so its readahead can end in the OOM too).
    """
    kernel = current.kernel
    mask = swap.swapin_nr_pages(offset) - 1
    do_poll = not mask and kernel.policy.swapin_sync
    start = max(offset & ~mask, 1)
    end = min(offset | mask, swap.max - 1)
    charge = kernel.policy.swapin_charge == "swapcache"
    plugged = bool(mask)  # a one-page window skips the plugged block (goto skip)
    if plugged:
        blk_start_plug(current)
    target = None
    for slot in range(start, end + 1):
        if slot != offset and (not swap.swap_count(slot) or slot in swap.cache):
            continue
        page = swap.lookup_swap_cache(slot)
        if page is None:
            page = Page(None, slot)
            page.flags = PageFlag.SWAPBACKED | PageFlag.LOCKED
            page.locker = current.comm
            if charge and await mem_cgroup_charge(current, page, swap.swap_cgroup.get(slot, memcg), noretry=slot != offset):
                page.flags &= ~PageFlag.LOCKED
                page.locker = None
                put_page(page)
                if slot == offset:
                    if plugged:
                        blk_finish_plug(current)
                    return None
                continue
            if slot in swap.cache or (slot != offset and not swap.swap_count(slot)):
                # the charge slept: another task read the slot meanwhile, or it was freed
                page.flags &= ~PageFlag.LOCKED
                page.locker = None
                put_page(page)
                if slot == offset:
                    target = swap.lookup_swap_cache(slot)
                continue
            swap.add_to_swap_cache(page, slot)
            if slot != offset:
                page.flags |= PageFlag.READAHEAD  # SetPageReadahead(); count_vm_event(SWAP_RA)
            await swap_readpage(current, swap, page, synchronous=do_poll)
        if slot == offset:
            target = page
        else:
            put_page(page)
    if plugged:
        blk_finish_plug(current)  # swap_read_unplug()
    return target


def swap_summary(kernel: Kernel) -> dict[str, int]:
    """Swap at the end of a run: slots in use (the header not counted) and pages in the swap cache."""
    swap = kernel.swap
    return {"slots": swap.max - 1, "inuse": swap.inuse_pages - 1, "cached": len(swap.cache)}
