"""A generic block-based filesystem: ``readpage``/``readpages`` and a cheap ``page_mkwrite``.

Mirrors what ext2-like filesystems get from the generic helpers at v4.19:
``mpage_readpage``/``mpage_readpages`` (fs/mpage.c: pages inserted into the
cache locked, contiguous pages merged into one bio, the completion marks them
uptodate or errored and unlocks them), ``generic_file_vm_ops`` (``.fault =
filemap_fault``, ``.page_mkwrite = filemap_page_mkwrite``, mm/filemap.c) and
a writepage that the flusher uses.

Emulation notes:
    Blocks map 1:1 to pages (no block mapping lookups, no buffer heads); a
    bio covers at most ``BIO_MAX_PAGES`` contiguous pages. ``file_update_time``
    and ``sb_start_pagefault`` cost nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, final

from actors.block.bio import Bio
from actors.block.blkdev import submit_bio
from actors.kernel_types import ReqFlag, ReqOp, VmFaultResult
from actors.mm.filemap import add_to_page_cache_lru
from actors.mm.filemap_fault import filemap_fault
from actors.mm.memory import VmOperations
from actors.mm.page import Page, lock_page, page_endio, page_lock_handoff, unlock_page

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.mm.filemap import File
    from actors.mm.memory import VmFault
    from actors.sched.task import TaskStruct

BIO_MAX_PAGES = 256


def fs_bio(kernel: Kernel, current: TaskStruct, pages: list[Page], op: ReqOp, flags: ReqFlag, end_io, nr_bytes: int = 0) -> Bio:
    """A bio to the machine's disk, charged to *current*'s cgroup (``bio_alloc`` + ``bio_set_dev``).

    A read takes over *current*'s lock on each page (``page_lock_handoff``):
    its completion, not the task, unlocks them.
    """
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

    def _bio(self, current: TaskStruct, pages: list[Page], op: ReqOp, flags: ReqFlag, end_io) -> Bio:
        return fs_bio(self.kernel, current, pages, op, flags, end_io)

    async def readpage(self, current: TaskStruct, file: File, page: Page) -> int:
        """``mpage_readpage()``: one locked page, one bio; unlocked at completion."""
        await submit_bio(current, self._bio(current, [page], ReqOp.READ, ReqFlag(0), self.read_end_io))
        return 0

    async def readpages(self, current: TaskStruct, file: File, pages: list[Page]) -> None:
        """``mpage_readpages()``: insert each page locked, merge contiguous runs into bios."""
        mapping = file.f_mapping
        run: list[Page] = []
        for page in pages:
            if not add_to_page_cache_lru(current, page, mapping, page.index):
                continue
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
        await submit_bio(current, self._bio(current, pages, ReqOp.WRITE, ReqFlag(0), end_io))

    async def page_mkwrite(self, current: TaskStruct, vmf: VmFault) -> VmFaultResult:
        """``filemap_page_mkwrite()``: lock, check the mapping, dirty; return LOCKED."""
        page = vmf.page
        inode = vmf.vma.vm_file.f_mapping.host
        await lock_page(current, page)
        if page.mapping is not inode.i_mapping:
            unlock_page(current, page)
            return VmFaultResult.NOPAGE
        self.kernel.writeback.set_page_dirty(page)
        return VmFaultResult.LOCKED
