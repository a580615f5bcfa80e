"""Readahead decisions: ``struct file_ra_state``, windows, and when to read ahead.

Mirrors mm/readahead.c and the readahead half of mm/filemap.c
(``do_sync_mmap_readahead``, ``do_async_mmap_readahead``) at v4.19, plus the
one later change the experiments need (5c72feee3e45, v5.7). This module is
*pure*: no engine, no Trio, no page cache, no IO. Every function here takes
plain integers and booleans, updates the ``FileRaState`` exactly where the
kernel does, and returns what must happen next. The page-cache code
(``actors.mm.filemap``: ``ra_submit``, the two ``page_cache_*_readahead``
coroutines; ``actors.mm.filemap_fault``) acts on the answer: it allocates the
missing pages of an ``RaWindow``, sets ``PG_readahead`` on the window's mark
if it allocated that page, and submits the IO.

Theory of operation
-------------------
A file's readahead state is the most recent window::

                          |<------ async_size ------|
      |-------------------- size ------------------>|
      |=====================#=======================|
      ^start                ^start + size - async_size  (gets PG_readahead)

A *synchronous* readahead happens on a cache miss; an *asynchronous* one when
a reader touches the page carrying ``PG_readahead``, i.e. once only
``async_size`` pages of the window are left unread.

Page faults use two policies (``do_sync_mmap_readahead``):

* read-around (no madvise hint): centre ``ra_pages`` pages on the fault,
  ``start = max(0, offset - ra_pages/2)``, ``async_size = ra_pages/4``. With
  the default 32 pages a cold fault at ``off`` reads ``[off-16, off+15]`` and
  marks ``off+8`` (docs/DESIGN.md B16). ``mmap_miss`` counts sync misses
  (saturating at 1000) and is paid back by hits; above ``MMAP_LOTSAMISS``
  (100) read-around stops and the fault reads a single page.
* ``MADV_SEQUENTIAL`` (``VM_SEQ_READ``): the ondemand algorithm below, with
  ``req_size = ra_pages``. ``MADV_RANDOM`` (``VM_RAND_READ``): nothing.

The ondemand algorithm (``ondemand_readahead``) starts a stream with
``get_init_ra_size`` (x4 for tiny requests, x2 for medium, else the max),
pushes the window forward when the reader arrives at the mark or at the end
of the previous window, and ramps the size up with ``get_next_ra_size`` (x4
while below max/16, then x2, capped at the max).

Order of the early returns (v4.19), which decides whether ``PG_readahead``
survives (docs/DESIGN.md B11, D4)::

    page_cache_async_readahead:  ra_pages == 0  -> return   (flag KEPT)
                                 PageWriteback  -> return   (flag KEPT; PG_reclaim alias)
                                 ClearPageReadahead
                                 inode congested -> return  (flag cleared)
                                 blkcg congested -> return  (flag cleared; use_delay)
                                 ondemand_readahead(hit_readahead_marker=True)
    page_cache_sync_readahead:   ra_pages == 0  -> return
                                 blkcg congested -> return
                                 ondemand_readahead(hit_readahead_marker=False)
    do_sync_mmap_readahead:      VM_RAND_READ -> return; ra_pages == 0 -> return
                                 VM_SEQ_READ -> page_cache_sync_readahead(ra_pages)
                                 mmap_miss++ (< 1000); > 100 -> return
                                 read-around -> ra_submit (no congestion check!)
    do_async_mmap_readahead:     VM_RAND_READ -> return
                                 [5.7, 5c72feee3e45: ra_pages == 0 -> return]
                                 mmap_miss-- (if > 0)
                                 PageReadahead -> page_cache_async_readahead

The ``*_decision`` functions return a ``ReadaheadDecision`` that records how
far the kernel got: ``calls_readahead`` is the point where 5.1+ filemap drops
``mmap_sem`` (``maybe_unlock_mmap_for_io``) before entering readahead, so a
policy can drop the sem even when readahead then does nothing (the V3 / 5.1
behaviour behind the MLOCKALL livelock).

Emulation notes:
    Not modelled: thrashing detection and the ``shrink_readahead_size_eio``
    shrink on read errors; ``FMODE_RANDOM`` (``POSIX_FADV_RANDOM``) and
    ``force_page_cache_readahead``; the 2 MB chunking of forced readahead;
    ``prev_pos`` maintenance (only ``read(2)`` updates it and the fault path
    never does; callers may set it). Context readahead
    (``try_context_readahead``) and the marker case's
    ``page_cache_next_hole`` need the page cache: callers pass the cached
    indices as a ``Container[int]`` (``mapping.pages`` works); without it the
    cache is taken as empty, so context readahead never triggers. Windows are
    never clipped in the state (the kernel keeps ``ra->size`` even past EOF);
    ``RaWindow.indices`` clips at EOF as ``__do_page_cache_readahead`` does.
"""

from __future__ import annotations

import enum
from collections.abc import Container

import attrs

from actors.kernel_types import PAGE_SHIFT, PAGE_SIZE

#: ``VM_MAX_READAHEAD`` (include/linux/mm.h, v4.19), in KB.
VM_MAX_READAHEAD_KB = 128
#: Default ``bdi->ra_pages``: ``VM_MAX_READAHEAD * 1024 / PAGE_SIZE`` = 32
#: (later spelled ``VM_READAHEAD_PAGES``).
VM_MAX_READAHEAD_PAGES = VM_MAX_READAHEAD_KB * 1024 // PAGE_SIZE
#: ``MMAP_LOTSAMISS`` (mm/filemap.c): above this many net misses, no read-around.
MMAP_LOTSAMISS = 100
#: ``mmap_miss`` stops counting up here (``MMAP_LOTSAMISS * 10``).
MMAP_MISS_MAX = MMAP_LOTSAMISS * 10

_NO_PAGES: frozenset[int] = frozenset()


@attrs.define
class FileRaState:
    """``struct file_ra_state`` (include/linux/fs.h), as ``file_ra_state_init`` leaves it.

    Attributes:
        start: first page of the most recent window.
        size: pages in that window.
        async_size: pages left when the next async readahead should start.
        ra_pages: maximum window (``bdi->ra_pages``); 0 disables readahead.
        mmap_miss: net sync-fault misses (``do_sync_mmap_readahead``).
        prev_pos: byte position of the previous ``read(2)``; -1 = none.
    """

    start: int = 0
    size: int = 0
    async_size: int = 0
    ra_pages: int = VM_MAX_READAHEAD_PAGES
    mmap_miss: int = 0
    prev_pos: int = -1

    def window(self) -> RaWindow:
        """The current window, as ``ra_submit()`` would read it."""
        return RaWindow(self.start, self.size, self.async_size)


@attrs.frozen
class RaWindow:
    """One readahead request: ``__do_page_cache_readahead(start, size, async_size)``.

    Attributes:
        start: first page index.
        size: number of pages (``nr_to_read``).
        async_size: ``lookahead_size``; the page ``async_size`` from the end
            gets ``PG_readahead``. 0 means no mark.
    """

    start: int
    size: int
    async_size: int = 0

    @property
    def readahead_index(self) -> int:
        """Index that gets ``PG_readahead``: ``start + size - async_size``.

        Equals ``start + size`` (outside the window, so never marked) when
        ``async_size == 0``; use ``marked_index`` for the EOF-aware answer.
        """
        return self.start + self.size - self.async_size

    def indices(self, nr_pages: int) -> range:
        """Page indices to read, stopping at EOF (``__do_page_cache_readahead``).

        Args:
            nr_pages: the file's size in pages (``DIV_ROUND_UP(i_size, PAGE_SIZE)``).

        Returns:
            ``range(start, min(start + size, nr_pages))``; empty for an empty file.
        """
        return range(self.start, max(self.start, min(self.start + self.size, nr_pages)))

    def marked_index(self, nr_pages: int) -> int | None:
        """The index to mark ``PG_readahead``, or ``None`` if it lies past EOF or outside."""
        index = self.readahead_index
        return index if index in self.indices(nr_pages) else None


class Madvise(enum.Enum):
    """The VMA's access hint: ``MADV_NORMAL``/``RANDOM``/``SEQUENTIAL`` → ``VM_RAND_READ``/``VM_SEQ_READ``."""

    NORMAL = "normal"
    RANDOM = "random"  # VM_RAND_READ
    SEQUENTIAL = "sequential"  # VM_SEQ_READ

    @classmethod
    def from_hints(cls, *, rand_read: bool, seq_read: bool) -> Madvise:
        """Map ``vm_flags`` bits to the hint; ``VM_RAND_READ`` is tested first, as in filemap.c."""
        if rand_read:
            return cls.RANDOM
        if seq_read:
            return cls.SEQUENTIAL
        return cls.NORMAL


class RaOutcome(enum.Enum):
    """Where a readahead decision stopped (not a kernel type)."""

    RAND_READ = "VM_RAND_READ: no readahead"
    NO_RA_PAGES = "ra_pages == 0"
    WRITEBACK = "page under writeback (PG_readahead aliases PG_reclaim)"
    INODE_CONGESTED = "inode_read_congested()"
    BLKCG_CONGESTED = "blk_cgroup_congested()"
    LOTSAMISS = "mmap_miss > MMAP_LOTSAMISS"
    NO_MARKER = "page has no PG_readahead"
    NOTHING_TO_READ = "ondemand found no window"
    SUBMIT = "submit the window"


@attrs.frozen(kw_only=True)
class ReadaheadDecision:
    """What the caller must do after a readahead decision.

    Attributes:
        outcome: where the kernel path stopped.
        window: the window to hand to ``ra_submit`` (only for ``SUBMIT``).
        calls_readahead: the path reached its call into readahead
            (``page_cache_sync/async_readahead`` or ``ra_submit``); 5.1+
            drops ``mmap_sem`` right before that call.
        clears_pg_readahead: ``ClearPageReadahead(page)`` ran (async path).
    """

    outcome: RaOutcome
    window: RaWindow | None = None
    calls_readahead: bool = False
    clears_pg_readahead: bool = False


# -- window sizing (mm/readahead.c) --------------------------------------------------


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def get_init_ra_size(size: int, max_pages: int) -> int:
    """Mirror of ``mm/readahead.c:get_init_ra_size()`` at v4.19.

    Rounds *size* up to a power of two, then x4 if it is at most max/32, x2 if
    at most max/4, else the max. For a 32-page max: 1 → 4, 2 → 4, 4 → 8,
    8 → 16, 9 → 32.
    """
    newsize = _roundup_pow_of_two(size)
    if newsize <= max_pages // 32:
        return newsize * 4
    if newsize <= max_pages // 4:
        return newsize * 2
    return max_pages


def get_next_ra_size(ra: FileRaState, max_pages: int) -> int:
    """Mirror of ``mm/readahead.c:get_next_ra_size()`` at v4.19.

    Grows the last window ``ra.size``: x4 while below max/16, else x2, capped
    at *max_pages*.
    """
    cur = ra.size
    newsize = 4 * cur if cur < max_pages // 16 else 2 * cur
    return min(newsize, max_pages)


def _next_hole(cached: Container[int], index: int, max_scan: int) -> int:
    """``page_cache_next_hole()`` (v4.19): first uncached index from *index*, or index + max_scan."""
    for _ in range(max_scan):
        if index not in cached:
            break
        index += 1
    return index


def _prev_hole(cached: Container[int], index: int, max_scan: int) -> int:
    """``page_cache_prev_hole()`` (v4.19): first uncached index scanning down, or index - max_scan."""
    for _ in range(max_scan):
        if index not in cached:
            break
        index -= 1
        if index < 0:
            break
    return index


def count_history_pages(cached: Container[int], offset: int, max_pages: int) -> int:
    """Mirror of ``mm/readahead.c:count_history_pages()`` at v4.19.

    Number of contiguously cached pages just below *offset* (at most *max_pages*).
    """
    head = _prev_hole(cached, offset - 1, max_pages)
    return offset - 1 - head


def try_context_readahead(
    ra: FileRaState, offset: int, req_size: int, max_pages: int, cached: Container[int]
) -> bool:
    """Mirror of ``mm/readahead.c:try_context_readahead()`` at v4.19.

    If more than *req_size* pages right before *offset* are cached, treat it
    as a stream: window at *offset* of history + req_size (history doubled if
    it reaches the file start), capped at *max_pages*, ``async_size = 1``.
    """
    size = count_history_pages(cached, offset, max_pages)
    if size <= req_size:
        return False
    if size >= offset:
        size *= 2
    ra.start = offset
    ra.size = min(size + req_size, max_pages)
    ra.async_size = 1
    return True


def ondemand_readahead(
    ra: FileRaState,
    offset: int,
    req_size: int,
    *,
    hit_readahead_marker: bool,
    cached: Container[int] = _NO_PAGES,
    io_pages: int = 0,
) -> RaWindow | None:
    """Mirror of ``mm/readahead.c:ondemand_readahead()`` at v4.19.

    Updates *ra* and returns the window ``ra_submit`` reads.

    Args:
        ra: the file's readahead state (updated in place).
        offset: page index being read.
        req_size: pages the caller wants (``ra_pages`` from the fault path).
        hit_readahead_marker: called from the async path (page had PG_readahead).
        cached: indices present in the page cache, for the marker and context
            cases (``page_cache_next_hole`` / ``count_history_pages``).
        io_pages: ``bdi->io_pages``; lets an oversize request exceed ``ra_pages``.

    Returns:
        The window to submit. A small random read returns
        ``RaWindow(offset, req_size, 0)`` without touching *ra*. ``None`` when
        the marker case finds no hole within reach (the kernel returns 0).

    Emulation notes:
        ``__do_page_cache_readahead`` would also return early for an empty
        file; callers clip with ``RaWindow.indices``.
    """
    max_pages = ra.ra_pages
    if req_size > max_pages and io_pages > max_pages:
        max_pages = min(req_size, io_pages)

    initial = False
    if offset == 0:
        initial = True
    elif offset in (ra.start + ra.size - ra.async_size, ra.start + ra.size):
        # The expected offset: a sequential stream; push the window forward.
        ra.start += ra.size
        ra.size = get_next_ra_size(ra, max_pages)
        ra.async_size = ra.size
    elif hit_readahead_marker:
        # Marker without matching state (e.g. interleaved streams): the
        # cached run after offset is the old async part; ramp from it.
        start = _next_hole(cached, offset + 1, max_pages)
        if start == 0 or start - offset > max_pages:
            return None
        ra.start = start
        ra.size = start - offset + req_size
        ra.size = get_next_ra_size(ra, max_pages)
        ra.async_size = ra.size
    elif req_size > max_pages:
        initial = True
    elif ra.prev_pos >= 0 and 0 <= offset - (ra.prev_pos >> PAGE_SHIFT) <= 1:
        # Sequential cache miss (prev_pos = -1 never matches, as the
        # kernel's unsigned arithmetic also never does in practice).
        initial = True
    elif not try_context_readahead(ra, offset, req_size, max_pages, cached):
        # Standalone small random read: read as asked, leave ra alone.
        return RaWindow(offset, req_size, 0)

    if initial:
        ra.start = offset
        ra.size = get_init_ra_size(req_size, max_pages)
        ra.async_size = ra.size - req_size if ra.size > req_size else ra.size

    # readit: if this read would hit its own marker at once, merge the next
    # window into this one.
    if offset == ra.start and ra.size == ra.async_size:
        add_pages = get_next_ra_size(ra, max_pages)
        if ra.size + add_pages <= max_pages:
            ra.async_size = add_pages
            ra.size += add_pages
        else:
            ra.size = max_pages
            ra.async_size = max_pages >> 1
    return ra.window()


# -- entry points (mm/readahead.c) ---------------------------------------------------


def page_cache_sync_readahead_decision(
    ra: FileRaState,
    offset: int,
    req_size: int,
    *,
    blkcg_congested: bool,
    cached: Container[int] = _NO_PAGES,
    io_pages: int = 0,
) -> ReadaheadDecision:
    """Decision half of ``mm/readahead.c:page_cache_sync_readahead()`` at v4.19.

    Returns early when ``ra_pages == 0`` or ``blk_cgroup_congested()`` (the
    task's blkcg has ``use_delay`` set), else runs ``ondemand_readahead``.

    Emulation notes:
        ``FMODE_RANDOM`` (forced readahead of exactly *req_size*) is not modelled.
    """
    if not ra.ra_pages:
        return ReadaheadDecision(outcome=RaOutcome.NO_RA_PAGES)
    if blkcg_congested:
        return ReadaheadDecision(outcome=RaOutcome.BLKCG_CONGESTED)
    window = ondemand_readahead(
        ra, offset, req_size, hit_readahead_marker=False, cached=cached, io_pages=io_pages
    )
    return _submit(window, calls_readahead=False, clears=False)


def page_cache_async_readahead_decision(
    ra: FileRaState,
    offset: int,
    req_size: int,
    *,
    page_writeback: bool,
    inode_congested: bool,
    blkcg_congested: bool,
    cached: Container[int] = _NO_PAGES,
    io_pages: int = 0,
) -> ReadaheadDecision:
    """Decision half of ``mm/readahead.c:page_cache_async_readahead()`` at v4.19.

    The caller must clear ``PG_readahead`` on the page iff
    ``clears_pg_readahead``. With ``ra_pages == 0`` or a page under writeback
    the flag stays set, so every later fault on the page comes back here
    (docs/DESIGN.md D4, B11).
    """
    if not ra.ra_pages:
        return ReadaheadDecision(outcome=RaOutcome.NO_RA_PAGES)
    if page_writeback:
        return ReadaheadDecision(outcome=RaOutcome.WRITEBACK)
    if inode_congested:
        return ReadaheadDecision(outcome=RaOutcome.INODE_CONGESTED, clears_pg_readahead=True)
    if blkcg_congested:
        return ReadaheadDecision(outcome=RaOutcome.BLKCG_CONGESTED, clears_pg_readahead=True)
    window = ondemand_readahead(
        ra, offset, req_size, hit_readahead_marker=True, cached=cached, io_pages=io_pages
    )
    return _submit(window, calls_readahead=False, clears=True)


def _submit(window: RaWindow | None, *, calls_readahead: bool, clears: bool) -> ReadaheadDecision:
    if window is None:
        return ReadaheadDecision(
            outcome=RaOutcome.NOTHING_TO_READ, calls_readahead=calls_readahead, clears_pg_readahead=clears
        )
    return ReadaheadDecision(
        outcome=RaOutcome.SUBMIT, window=window, calls_readahead=calls_readahead, clears_pg_readahead=clears
    )


# -- the fault path's helpers (mm/filemap.c) ------------------------------------------


def mmap_read_around(ra: FileRaState, offset: int) -> RaWindow | None:
    """Read-around tail of ``mm/filemap.c:do_sync_mmap_readahead()`` at v4.19 (no VM_SEQ_READ).

    Returns ``None`` when ``ra_pages == 0`` (checked before counting the miss)
    or when, after counting this miss (``mmap_miss`` saturates at
    ``MMAP_MISS_MAX``), ``mmap_miss > MMAP_LOTSAMISS``. Otherwise records and
    returns ``[max(0, offset - ra_pages/2), +ra_pages)`` with
    ``async_size = ra_pages/4``.
    """
    if not ra.ra_pages:
        return None
    if ra.mmap_miss < MMAP_MISS_MAX:
        ra.mmap_miss += 1
    if ra.mmap_miss > MMAP_LOTSAMISS:
        return None
    ra.start = max(0, offset - ra.ra_pages // 2)
    ra.size = ra.ra_pages
    ra.async_size = ra.ra_pages // 4
    return ra.window()


def decrement_mmap_miss(ra: FileRaState) -> None:
    """A cache hit pays back one miss: ``if (ra->mmap_miss > 0) ra->mmap_miss--``.

    Used by ``do_async_mmap_readahead()`` and by ``filemap_map_pages()`` for
    each page fault-around maps (mm/filemap.c, v4.19).
    """
    if ra.mmap_miss > 0:
        ra.mmap_miss -= 1


def do_sync_mmap_readahead_decision(
    ra: FileRaState,
    offset: int,
    *,
    madvise: Madvise,
    blkcg_congested: bool,
    cached: Container[int] = _NO_PAGES,
    io_pages: int = 0,
) -> ReadaheadDecision:
    """Decision half of ``mm/filemap.c:do_sync_mmap_readahead()`` at v4.19.

    ``calls_readahead`` is set where 5.1+ drops ``mmap_sem``: before
    ``page_cache_sync_readahead`` (even if that then returns early because the
    blkcg is congested) and before the read-around ``ra_submit``.

    Emulation notes:
        In v4.19 read-around does not consult ``blk_cgroup_congested()``
        (``ra_submit`` goes straight to ``__do_page_cache_readahead``); only
        the ``MADV_SEQUENTIAL`` path does.
    """
    if madvise is Madvise.RANDOM:
        return ReadaheadDecision(outcome=RaOutcome.RAND_READ)
    if not ra.ra_pages:
        return ReadaheadDecision(outcome=RaOutcome.NO_RA_PAGES)
    if madvise is Madvise.SEQUENTIAL:
        inner = page_cache_sync_readahead_decision(
            ra, offset, ra.ra_pages, blkcg_congested=blkcg_congested, cached=cached, io_pages=io_pages
        )
        return attrs.evolve(inner, calls_readahead=True)
    window = mmap_read_around(ra, offset)
    if window is None:
        return ReadaheadDecision(outcome=RaOutcome.LOTSAMISS)
    return ReadaheadDecision(outcome=RaOutcome.SUBMIT, window=window, calls_readahead=True)


def do_async_mmap_readahead_decision(
    ra: FileRaState,
    offset: int,
    *,
    madvise: Madvise,
    page_readahead: bool,
    page_writeback: bool,
    inode_congested: bool,
    blkcg_congested: bool,
    zero_readahead_fix: bool = False,
    cached: Container[int] = _NO_PAGES,
    io_pages: int = 0,
) -> ReadaheadDecision:
    """Decision half of ``mm/filemap.c:do_async_mmap_readahead()`` at v4.19.

    Called when the fault found the page cached (and not ``FAULT_FLAG_TRIED``).
    Pays back one ``mmap_miss``; if the page has ``PG_readahead``, runs
    ``page_cache_async_readahead`` with ``req_size = ra_pages``.

    Args:
        zero_readahead_fix: 5c72feee3e45 (v5.7): return before anything else
            when ``ra_pages == 0``, so 5.1+ does not drop ``mmap_sem`` for a
            readahead that cannot happen (and ``mmap_miss`` is not decremented).

    ``calls_readahead`` is set where 5.1+ (and V3) drop ``mmap_sem``.
    """
    if madvise is Madvise.RANDOM:
        return ReadaheadDecision(outcome=RaOutcome.RAND_READ)
    if zero_readahead_fix and not ra.ra_pages:
        return ReadaheadDecision(outcome=RaOutcome.NO_RA_PAGES)
    decrement_mmap_miss(ra)
    if not page_readahead:
        return ReadaheadDecision(outcome=RaOutcome.NO_MARKER)
    inner = page_cache_async_readahead_decision(
        ra,
        offset,
        ra.ra_pages,
        page_writeback=page_writeback,
        inode_congested=inode_congested,
        blkcg_congested=blkcg_congested,
        cached=cached,
        io_pages=io_pages,
    )
    return attrs.evolve(inner, calls_readahead=True)
