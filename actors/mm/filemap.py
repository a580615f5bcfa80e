"""The page cache: ``address_space``, lookups, insertion, and reads into it.

Mirrors the page-cache half of mm/filemap.c and mm/readahead.c at v4.19:
``find_get_page``, ``add_to_page_cache_lru``, ``pagecache_get_page`` (with
v5.1's ``FGP_FOR_MMAP``), ``page_cache_read`` and ``__do_page_cache_readahead``
/ ``ra_submit``. The *decisions* of
readahead (windows, ``mmap_miss``) are pure functions in
``actors.mm.readahead``; this module acts on them: it allocates the pages,
marks ``PG_readahead`` and hands them to the filesystem's ``readpages``,
which inserts them locked and submits the bios. A submitter can therefore
sleep in io.latency's throttle after the pages are visible and locked, so
other faulters wait on the page lock, exactly as in the kernel.

``filemap_fault`` itself lives in ``actors.mm.filemap_fault``.

Emulation notes:
    No shadow entries. A page stays cached until truncation or memcg
    reclaim (``actors.mm.vmscan``); ``gfp`` masks are reduced to
    readahead's ``__GFP_NORETRY`` charge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from actors.block.blkdev import blk_finish_plug, blk_start_plug
from actors.kernel_types import PAGE_SIZE, PageFlag
from actors.mm.memcontrol import mem_cgroup_charge, mem_cgroup_charge_fast, mem_cgroup_oom_kill
from actors.mm.page import (
    Page,
    get_page,
    lock_page,
    page_clear_rmap,
    page_rmap,
    put_page,
    unlock_page,
    wait_on_page_writeback,
)
from actors.mm.pagecache import PageCache
from actors.mm.readahead import FileRaState, RaWindow
from actors.sched.core import charge

if TYPE_CHECKING:
    from actors.sched.task import TaskStruct


class AddressSpaceOperations(Protocol):
    """``struct address_space_operations``: what the filesystem provides."""

    async def readpage(self, current: TaskStruct, file: File, page: Page) -> int:
        """Read one locked page; the completion unlocks it. 0 or ``-errno``."""
        ...

    async def readpages(self, current: TaskStruct, file: File, pages: list[Page]) -> None:
        """Insert *pages* into the cache locked and submit their reads."""
        ...


class Inode:
    """``struct inode`` of a file: number, size, its page cache and filesystem."""

    __slots__ = ("ino", "i_size", "i_mapping", "fs", "name", "truncate_seq", "error_seq", "start_sector", "block_map")

    def __init__(self, ino: int, name: str, i_size: int, fs: object) -> None:
        self.ino = ino
        self.name = name
        self.i_size = i_size
        self.fs = fs
        self.i_mapping = AddressSpace(self)
        #: Bumped by every truncation / injected read error (the invariants'
        #: way to tell "the page went away" from "the fault path misbehaved").
        self.truncate_seq = 0
        self.error_seq = 0
        #: Where the file's data starts on the device, and how its blocks
        #: are mapped (``FileConfig.block_map``; ``actors.fs.generic``).
        self.start_sector: int | None = None
        self.block_map = "extents"

    @property
    def nr_pages(self) -> int:
        """``DIV_ROUND_UP(i_size, PAGE_SIZE)``."""
        return -(-self.i_size // PAGE_SIZE)


class AddressSpace:
    """``struct address_space``: the cached pages of one inode, by index (``pages``: ``actors.mm.pagecache``)."""

    __slots__ = ("host", "pages", "a_ops", "nrpages")

    def __init__(self, host: Inode) -> None:
        self.host = host
        self.pages = PageCache(self)
        self.a_ops: AddressSpaceOperations = host.fs  # type: ignore[assignment]
        self.nrpages = 0


class File:
    """``struct file``: an open file with its own readahead state.

    ``f_count`` is the reference count that V3/v5.1 pin with ``get_file``
    (``fpin``) while the mmap_sem is dropped.
    """

    __slots__ = ("f_mapping", "f_ra", "f_count", "name")

    def __init__(self, inode: Inode, name: str, ra_pages: int) -> None:
        self.f_mapping = inode.i_mapping
        self.f_ra = FileRaState(ra_pages=ra_pages)
        self.f_count = 1
        self.name = name


def get_file(file: File) -> File:
    """``get_file()``: pin the file (used as ``fpin``)."""
    file.f_count += 1
    return file


def fput(file: File) -> None:
    """``fput()``: drop a pin."""
    file.f_count -= 1


def find_get_page(mapping: AddressSpace, offset: int) -> Page | None:
    """``find_get_page()``: the cached page at *offset* with a reference, or ``None``."""
    page = mapping.pages.get(offset)
    if page is not None:
        get_page(page)
    return page


def add_to_page_cache_lru(current: TaskStruct, page: Page, mapping: AddressSpace, offset: int) -> bool:
    """``add_to_page_cache_lru()``: insert a new page, locked; ``False`` if the slot is taken.

    The cache takes its own reference; the caller keeps the allocation's.
    Costs ``[costs] page_alloc``, paid at the task's next CPU burst.
    """
    if not mapping.pages.insert(offset, page):
        return False
    page.mapping = mapping
    page.index = offset
    page.flags |= PageFlag.LOCKED
    page.locker = current.comm
    page.refcount += 1
    mapping.nrpages += 1
    log = current.actor.log
    fmt = log.formats.get(_ADD_TO_PAGE_CACHE)
    if fmt is None:
        fmt = log.formats[_ADD_TO_PAGE_CACHE] = log.record_format("mm_filemap_add_to_page_cache", ("ino", "index"))
    log.info_format(fmt, mapping.host.ino, offset)
    charge(current, "page_alloc")  # __page_cache_alloc + the radix-tree insert and LRU add
    return True


#: ``TraceLogger.formats`` key of the ``mm_filemap_add_to_page_cache`` record (one a page read).
_ADD_TO_PAGE_CACHE = "mm_filemap_add_to_page_cache"


def delete_from_page_cache(page: Page) -> None:
    """``delete_from_page_cache()`` for truncation: unhook and drop the cache's reference."""
    mapping = page.mapping
    if mapping is None:
        return
    del mapping.pages[page.index]
    mapping.nrpages -= 1
    mapping.host.truncate_seq += 1  # the invariants' "this page went away" marker
    page.mapping = None
    put_page(page)


async def truncate_inode_pages(current: TaskStruct, inode: Inode, new_size: int) -> int:
    """``truncate_setsize()`` + ``truncate_inode_pages_range()`` (mm/truncate.c, v4.19).

    Sets ``i_size``, then for every cached page past the new end: lock it
    (waiting for a page under IO), wait for writeback, unmap it from every
    PTE (``unmap_mapping_range``), cancel its dirty state and delete it from
    the page cache, unlock. Returns the number of pages removed. Pages
    another path still holds keep their references; they are just no
    longer in the mapping (``page.mapping is None``).
    """
    inode.i_size = new_size
    inode.truncate_seq += 1
    mapping = inode.i_mapping
    first = -(-new_size // PAGE_SIZE)
    removed = 0
    for index in sorted(i for i in mapping.pages if i >= first):
        page = mapping.pages.get(index)
        if page is None:
            continue
        get_page(page)
        await lock_page(current, page)
        await wait_on_page_writeback(current, page)
        if page.mapping is mapping:
            for vma, address in page_rmap(page):  # unmap_mapping_range → zap_pte_range
                vma.vm_mm.ptes.ptep_get_and_clear(address)
                put_page(page)
            page_clear_rmap(page)
            page.flags &= ~PageFlag.DIRTY  # cancel_dirty_page(): truncated data is not written
            delete_from_page_cache(page)
            removed += 1
        unlock_page(current, page)
        put_page(page)
    inode.truncate_seq += 1
    current.actor.log.info("truncate_inode_pages", ino=inode.ino, size=new_size, removed=removed)
    return removed


async def charge_page_cache(current: TaskStruct, page: Page, *, noretry: bool) -> bool:
    """The memcg charge of ``__add_to_page_cache_locked()`` (v4.19): to *current*'s memcg.

    ``True`` once charged. It may reclaim, so the caller may sleep here with
    what it holds (a fault's mmap_sem under 4.19 readahead). *noretry* is
    readahead's ``__GFP_NORETRY``: a failed charge drops the page. Without
    it, a failed charge is the memcg OOM: the OOM killer takes *current*
    and the page is charged over the limit so that the dying fault can
    finish (the kernel returns ``-ENOMEM`` and ``VM_FAULT_OOM``; simplified).
    """
    memcg = current.kernel.memcg.groups[current.blkcg]
    if not await mem_cgroup_charge(current, page, memcg, noretry=noretry):
        return True
    if noretry:
        return False
    mem_cgroup_oom_kill(current, memcg)
    memcg.force_charge(1)
    current.kernel.memcg.lru_add(memcg, page)
    return True


async def pagecache_get_page_for_mmap(current: TaskStruct, mapping: AddressSpace, offset: int) -> Page:
    """``pagecache_get_page(FGP_CREAT | FGP_FOR_MMAP)`` (v5.1, a75d4c333772).

    Returns the cached page with a reference, creating a fresh, unlocked,
    not-uptodate page if there is none (the caller does its own locking).
    The new page is charged first (``charge_page_cache``).
    """
    page = find_get_page(mapping, offset)
    if page is not None:
        return page
    page = Page(None, offset)
    await charge_page_cache(current, page, noretry=False)
    found = find_get_page(mapping, offset)
    if found is not None:  # added by another task while the charge reclaimed
        put_page(page)
        return found
    add_to_page_cache_lru(current, page, mapping, offset)
    unlock_page(current, page)  # FGP_FOR_MMAP: "unlock the page before returning"
    return page


async def page_cache_read(current: TaskStruct, file: File, offset: int) -> int:
    """``page_cache_read()`` (v4.19): add the page locked and start ``->readpage``.

    Does not wait for the IO: the caller finds the page locked and waits on
    the page lock. Returns 0 (also when someone else added it first).
    """
    mapping = file.f_mapping
    page = Page(None, offset)
    await charge_page_cache(current, page, noretry=False)
    if not add_to_page_cache_lru(current, page, mapping, offset):
        put_page(page)
        return 0
    error = await mapping.a_ops.readpage(current, file, page)
    put_page(page)
    return error


async def ra_submit(current: TaskStruct, file: File, window: RaWindow) -> int:
    """``ra_submit()`` → ``__do_page_cache_readahead()``: read the window's missing pages.

    Pages already cached are skipped; the page at the window's async mark
    gets ``PG_readahead``. Each page is charged to the memcg first
    (``charge_page_cache`` with ``__GFP_NORETRY``: under 4.19 this is where a
    fault reclaims, swap IO included, holding its mmap_sem).
    ``read_pages()`` plugs the queue around ``->readpages``. Returns the
    number of pages submitted.
    """
    mapping = file.f_mapping
    nr_pages = mapping.host.nr_pages
    mark = window.readahead_index
    pages = []
    for index in window.indices(nr_pages):
        if index in mapping.pages:
            continue
        page = Page(None, index)
        if index == mark:
            page.flags |= PageFlag.READAHEAD
        pages.append(page)
    charged = []
    memcg = current.kernel.memcg.groups[current.blkcg]
    for page in pages:  # read_pages() → add_to_page_cache_lru(): a page whose charge fails is not read
        # The fast path inline: the common charge costs no coroutine on readahead's per-page loop.
        if mem_cgroup_charge_fast(current, page, memcg) or await charge_page_cache(current, page, noretry=True):
            charged.append(page)
        else:
            put_page(page)
    pages = charged
    if pages:
        current.actor.log.info(
            "mm_readahead", ino=mapping.host.ino, start=window.start, size=window.size, nr=len(pages)
        )
        blk_start_plug(current)  # read_pages()
        await mapping.a_ops.readpages(current, file, pages)
        blk_finish_plug(current)
        for page in pages:
            put_page(page)
    return len(pages)


def cached_fraction_fill(inode: Inode, pages: list[int]) -> None:
    """Populate *inode*'s cache with uptodate pages at start-up (the config's ``cached``)."""
    mapping = inode.i_mapping
    mapping.pages.fill(pages, inode.nr_pages)
    mapping.nrpages += len(pages)

