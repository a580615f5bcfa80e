"""Swap: one swap partition, its slots, the swap cache, and swap IO.

Mirrors, at v4.19:

* mm/swapfile.c: ``swap_map`` (a count per slot plus ``SWAP_HAS_CACHE``),
  ``get_swap_page`` (next-fit from ``cluster_next``), ``swap_duplicate``,
  ``swap_free``, ``try_to_free_swap``, ``vm_swap_full`` (over half used);
* mm/swap_state.c: the swap cache (``add_to_swap_cache``,
  ``delete_from_swap_cache``, ``lookup_swap_cache``) and
  ``swap_cluster_readahead``: the aligned block of ``2**page_cluster``
  slots around the faulting one, each slot in use and not cached read
  into a new locked swap-cache page, under one plug (``swapin_readahead``
  with the default non-VMA readahead; ``page_cluster`` default 3);
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
from actors.mm.page import Page, end_page_writeback, get_page, page_endio, page_lock_handoff, put_page, unlock_page

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

    def lookup_swap_cache(self, offset: int) -> Page | None:
        """``lookup_swap_cache()``: the cached page of the slot with a reference, or ``None``."""
        page = self.cache.get(offset)
        if page is not None:
            get_page(page)
        return page

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


async def swap_readpage(current: TaskStruct, swap: SwapInfo, page: Page) -> None:
    """``swap_readpage()`` (mm/page_io.c, v4.19): read a locked swap-cache page; the completion unlocks it."""
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


async def swap_cluster_readahead(current: TaskStruct, swap: SwapInfo, offset: int, memcg: MemCgroup | None) -> Page | None:
    """``swap_cluster_readahead()`` (mm/swap_state.c, v4.19): read the slot's aligned cluster, return the slot's page.

    Every slot of ``[offset & ~mask, offset | mask]`` that is in use and not
    cached gets a new page, locked, in the swap cache, and a read; the
    faulting slot's page comes back with a reference (``read_swap_cache_async``).
    With ``swapin_charge = "swapcache"`` each new page is charged first
    (to the slot's recorded memcg, else *memcg*); a page whose charge fails
    is not read, and the fault's own failure returns ``None`` (OOM).
    """
    from actors.mm.memcontrol import mem_cgroup_charge

    kernel = current.kernel
    mask = (1 << swap.page_cluster) - 1
    start = max(offset & ~mask, 1)
    end = min(offset | mask, swap.max - 1)
    charge = kernel.policy.swapin_charge == "swapcache"
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
            await swap_readpage(current, swap, page)
        if slot == offset:
            target = page
        else:
            put_page(page)
    blk_finish_plug(current)  # swap_read_unplug()
    return target


def swap_summary(kernel: Kernel) -> dict[str, int]:
    """Swap at the end of a run: slots in use (the header not counted) and pages in the swap cache."""
    swap = kernel.swap
    return {"slots": swap.max - 1, "inuse": swap.inuse_pages - 1, "cached": len(swap.cache)}
