"""A generic block-based filesystem: ``readpage``/``readpages`` and a cheap ``page_mkwrite``.

Mirrors what ext2-like filesystems get from the generic helpers at v4.19:
``mpage_readpage``/``mpage_readpages`` (fs/mpage.c: pages inserted into the
cache locked, contiguous pages merged into one bio, the completion marks them
uptodate or errored and unlocks them), ``generic_file_vm_ops`` (``.fault =
filemap_fault``, ``.page_mkwrite = filemap_page_mkwrite``, mm/filemap.c) and
a writepage that the flusher uses.

Block mapping (``FileConfig.block_map``): with ``"extents"`` the mapping
is always cached and ``get_block`` never reads. With ``"indirect"`` a file
is mapped as ext2/ext3 map it (fs/ext2/inode.c ``ext2_get_branch``, 4.19;
ext3's was the same code in 2010): blocks 0-11 are direct, then each run of
1024 data blocks (4 MiB) is mapped by one 4 KiB indirect block written just
before it. The first read of a data block whose indirect block is not
cached reads that block synchronously inside ``->readpage``/``->readpages``
(``sb_bread``: a plain READ charged to the task's cgroup, io.latency and
all), with the new page already locked in the cache. In a fault that is
under mmap_sem wherever ``filemap_fault`` calls ``->readpage`` or readahead
with the sem held: 4.19's ``page_cache_read``, and read-around under 4.19;
v5.1 drops the sem first. The block then stays cached; a task needing a
block already being read waits for it.

Emulation notes:
    Blocks map 1:1 to pages (no buffer heads); a bio covers at most
    ``BIO_MAX_PAGES`` contiguous pages. ``file_update_time`` and
    ``sb_start_pagefault`` cost nothing. With ``"indirect"``, the
    double-indirect block (one per 4 GiB) is taken as cached, blocks are
    placed as a fresh sequential write would place them, and writeback
    does no mapping reads.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, final

from actors.block.bio import Bio
from actors.block.blkdev import submit_bio, submit_bio_wait
from actors.kernel_types import PAGE_SIZE, ReqFlag, ReqOp, VmFaultResult, vm_fault_t
from actors.mm.filemap import add_to_page_cache_lru
from actors.mm.filemap_fault import filemap_fault
from actors.mm.memory import VmOperations
from actors.mm.page import Page, lock_page, page_endio, page_lock_handoff, unlock_page
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.mm.filemap import File, Inode
    from actors.schema import FileConfig
    from actors.mm.memory import VmFault
    from actors.sched.task import TaskStruct

BIO_MAX_PAGES = 256
#: ext2/ext3 ``EXT2_NDIR_BLOCKS``: direct block pointers in the inode.
NDIR_BLOCKS = 12
#: Block pointers in one 4 KiB indirect block (``EXT2_ADDR_PER_BLOCK``).
ADDR_PER_BLOCK = 1024
SECTORS_PER_PAGE = PAGE_SIZE // 512


def indirect_group(index: int) -> int | None:
    """Which indirect block maps data block *index* (``None``: a direct block)."""
    return None if index < NDIR_BLOCKS else (index - NDIR_BLOCKS) // ADDR_PER_BLOCK


def block_sector(inode: Inode, index: int) -> int | None:
    """The device sector of data block *index* (``None`` if the file was not placed)."""
    if inode.start_sector is None:
        return None
    block = index
    if inode.block_map == "indirect" and index >= NDIR_BLOCKS:
        block += indirect_group(index) + 1  # each group's indirect block sits just before it
    return inode.start_sector + block * SECTORS_PER_PAGE


def indirect_block_sector(inode: Inode, group: int) -> int | None:
    """The device sector of indirect block *group* (just before the data it maps)."""
    if inode.start_sector is None:
        return None
    return inode.start_sector + (NDIR_BLOCKS + group * (ADDR_PER_BLOCK + 1)) * SECTORS_PER_PAGE


def layout_bytes(file: FileConfig) -> int:
    """Bytes *file* takes on the device: its data, plus its indirect blocks for ``"indirect"``."""
    nr_pages = -(-file.size // PAGE_SIZE)
    if file.block_map != "indirect" or nr_pages <= NDIR_BLOCKS:
        return nr_pages * PAGE_SIZE
    return (nr_pages + indirect_group(nr_pages - 1) + 1) * PAGE_SIZE


def fs_bio(kernel: Kernel, current: TaskStruct, pages: list[Page], op: ReqOp, flags: int, end_io, nr_bytes: int = 0) -> Bio:
    """A bio to the machine's disk, charged to *current*'s cgroup (``bio_alloc`` + ``bio_set_dev``).

    A read takes over *current*'s lock on each page (``page_lock_handoff``):
    its completion, not the task, unlocks them. The bio's sector is the
    first page's place on the device (``bio->bi_iter.bi_sector``).
    """
    first = pages[0] if pages else None
    host = first.mapping.host if first is not None and first.mapping is not None else None
    bio = Bio(
        bio_id=kernel.next_bio_id(),
        op=op,
        flags=flags,
        pages=pages,
        blkcg=current.blkcg,
        submitter=current.comm,
        bi_end_io=end_io,
        bi_disk=kernel.bdev,
        nr_bytes=nr_bytes,
        sector=None if host is None else block_sector(host, first.index),
    )
    if op == ReqOp.READ:
        for page in pages:
            page_lock_handoff(current, page, bio)
    return bio


def mpage_end_io(kernel: Kernel, bio: Bio) -> None:
    """``mpage_end_io()`` for reads: ``page_endio`` for each page (uptodate or error, unlock).

    Each filesystem binds it to its kernel (``self.read_end_io``), where
    page-lock invariant violations are recorded.
    """
    for page in bio.pages:
        page_endio(kernel, bio, page)


@final
class GenericFs:
    """The generic filesystem of one block device: its ``a_ops`` and ``vm_ops``."""

    kind = "generic"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.vm_ops = VmOperations(fault=filemap_fault, page_mkwrite=self.page_mkwrite)
        self.read_end_io = functools.partial(mpage_end_io, kernel)
        #: Indirect blocks read (``None``) or being read (the waiters' queue), by (ino, group).
        self._indirect: dict[tuple[int, int], WaitQueue | None] = {}

    def _bio(self, current: TaskStruct, pages: list[Page], op: ReqOp, flags: int, end_io) -> Bio:
        return fs_bio(self.kernel, current, pages, op, flags, end_io)

    async def get_block(self, current: TaskStruct, inode: Inode, index: int) -> None:
        """``ext2_get_block()`` for a read: make sure the block mapping of *index* is cached.

        Reads the indirect block synchronously if ``block_map = "indirect"``
        and it is neither cached nor being read; waits for it if another task
        is reading it (the buffer lock).
        """
        group = indirect_group(index)
        if inode.block_map != "indirect" or group is None:
            return
        key = (inode.ino, group)
        if key in self._indirect:
            wq = self._indirect[key]
            if wq is not None:
                start = current.actor.now_ns
                await wq.wait(current.actor, current.comm)  # wait_on_buffer()
                current.account_sleep("io", current.actor.now_ns - start)
            return
        wq = self._indirect[key] = WaitQueue(self.kernel.engine, f"indirect block ino{inode.ino}:{group}")
        bio = Bio(bio_id=self.kernel.next_bio_id(), op=ReqOp.READ, blkcg=current.blkcg, submitter=current.comm,
                  bi_disk=self.kernel.bdev, nr_bytes=PAGE_SIZE, sector=indirect_block_sector(inode, group))  # fmt: skip
        current.actor.log.info("ext2_get_branch", ino=inode.ino, index=index, indirect=group, bio=bio.bio_id)
        await submit_bio_wait(current, bio, f"indirect block ino{inode.ino}:{group}")
        self._indirect[key] = None
        wq.wake_all()
        self.kernel.count("indirect_block_reads")

    async def readpage(self, current: TaskStruct, file: File, page: Page) -> int:
        """``mpage_readpage()``: map the block, one locked page, one bio; unlocked at completion."""
        await self.get_block(current, file.f_mapping.host, page.index)
        await submit_bio(current, self._bio(current, [page], ReqOp.READ, 0, self.read_end_io))
        return 0

    async def readpages(self, current: TaskStruct, file: File, pages: list[Page]) -> None:
        """``mpage_readpages()``: insert each page locked, map its block, merge contiguous runs into bios.

        A run also ends where an indirect block sits between two pages (their
        blocks are not contiguous on the device).
        """
        mapping = file.f_mapping
        indirect = mapping.host.block_map == "indirect"  # else get_block has nothing to read
        run: list[Page] = []
        for page in pages:
            if not add_to_page_cache_lru(current, page, mapping, page.index):
                continue
            if indirect:
                await self.get_block(current, mapping.host, page.index)
                if run and indirect_group(page.index) != indirect_group(run[-1].index):
                    await self._submit_read(current, run)
                    run = []
            if run and (page.index != run[-1].index + 1 or len(run) == BIO_MAX_PAGES):
                await self._submit_read(current, run)
                run = []
            run.append(page)
        if run:
            await self._submit_read(current, run)

    async def _submit_read(self, current: TaskStruct, run: list[Page]) -> None:
        await submit_bio(current, self._bio(current, run, ReqOp.READ, ReqFlag.RAHEAD, self.read_end_io))

    async def writepages(self, current: TaskStruct, pages: list[Page], end_io) -> None:
        """``mpage_writepages()`` for the flusher: one bio for the given pages (already PG_writeback)."""
        await submit_bio(current, self._bio(current, pages, ReqOp.WRITE, 0, end_io))

    async def page_mkwrite(self, current: TaskStruct, vmf: VmFault) -> vm_fault_t:
        """``filemap_page_mkwrite()``: lock, check the mapping, dirty; return LOCKED."""
        page = vmf.page
        inode = vmf.vma.vm_file.f_mapping.host
        await lock_page(current, page)
        if page.mapping is not inode.i_mapping:
            unlock_page(current, page)
            return VmFaultResult.NOPAGE
        self.kernel.writeback.set_page_dirty(page)
        return VmFaultResult.LOCKED
