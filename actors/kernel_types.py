"""Shared kernel vocabulary: flag families, result codes and errno values.

Names follow the kernel by a mechanical rule: a macro family becomes an enum
named after the family (``FAULT_FLAG_TRIED`` → ``FaultFlag.TRIED``). Values
are those of v4.19 ``include/linux/mm.h`` unless noted.

Naming exceptions (one each, documented here):

* ``vm_fault_t``'s ``VM_FAULT_*`` bits are ``VmFaultResult``, because
  ``VmFault`` is ``struct vm_fault``.
* ``FAULT_FLAG_USED_CACHED`` (0x200) exists only in the V3 series as posted
  (patch 5/7); 5.7's ``FAULT_FLAG_INTERRUPTIBLE`` later reused the value, which
  this emulator does not model.
* Page flags are ``PageFlag`` members named after ``PG_*`` without the prefix.

Flag families are plain classes of ``int`` bits, as the kernel's are
``unsigned int`` macros: ``FaultFlag.WRITE | FaultFlag.USER`` is an ``int``.
An ``enum.IntFlag`` builds a member object on every ``|`` and ``&`` (about a
microsecond each), and the fault path does a dozen of them per fault, which
was a tenth of a large run's time. ``flag_names`` spells a value the way the
trace records it. ``vm_fault_t`` is the type of a ``VmFaultResult`` set, as in
the kernel (include/linux/mm_types.h, 4.17+).
"""

from __future__ import annotations

import enum
import functools


class FaultFlag:
    """``FAULT_FLAG_*`` (include/linux/mm.h, v4.19; USED_CACHED from V3 patch 5/7; VMA_LOCK from 6.4)."""

    WRITE = 0x01
    MKWRITE = 0x02
    ALLOW_RETRY = 0x04
    RETRY_NOWAIT = 0x08
    KILLABLE = 0x10
    TRIED = 0x20
    USER = 0x40
    REMOTE = 0x80
    INSTRUCTION = 0x100
    USED_CACHED = 0x200
    #: 6.4 (``enum fault_flag``, 1 << 12): the fault holds the VMA's lock, not mmap_lock.
    VMA_LOCK = 0x1000


class VmFaultResult:
    """``VM_FAULT_*`` bits of ``vm_fault_t`` (include/linux/mm.h, v4.19)."""

    OOM = 0x0001
    SIGBUS = 0x0002
    MAJOR = 0x0004
    WRITE = 0x0008
    HWPOISON = 0x0010
    HWPOISON_LARGE = 0x0020
    SIGSEGV = 0x0040
    NOPAGE = 0x0100
    LOCKED = 0x0200
    RETRY = 0x0400
    FALLBACK = 0x0800
    DONE_COW = 0x1000
    NEEDDSYNC = 0x2000


#: ``vm_fault_t``: a set of ``VmFaultResult`` bits (``0``: the fault is done, nothing to report).
vm_fault_t = int

#: ``VM_FAULT_ERROR``: any of these means the fault failed.
VM_FAULT_ERROR = (
    VmFaultResult.OOM
    | VmFaultResult.SIGBUS
    | VmFaultResult.SIGSEGV
    | VmFaultResult.HWPOISON
    | VmFaultResult.HWPOISON_LARGE
    | VmFaultResult.FALLBACK
)


class PageFlag:
    """``PG_*`` page flags that the fault path looks at (include/linux/page-flags.h).

    ``READAHEAD`` aliases ``PG_reclaim`` in the kernel; the emulator keeps one
    bit and ``WRITEBACK`` separately, and ``page_cache_async_readahead`` checks
    writeback first, as 4.19 does.
    """

    LOCKED = 0x01
    UPTODATE = 0x02
    DIRTY = 0x04
    WRITEBACK = 0x08
    READAHEAD = 0x10
    ERROR = 0x20
    SWAPBACKED = 0x40
    SWAPCACHE = 0x80


class ReqFlag:
    """``REQ_*`` bio flags that matter here (include/linux/blk_types.h)."""

    META = 0x01
    SWAP = 0x02
    SYNC = 0x04
    RAHEAD = 0x08


class ReqOp(enum.IntEnum):
    """``REQ_OP_*``."""

    READ = 0
    WRITE = 1


class BlkStatus(enum.IntEnum):
    """``blk_status_t`` values used here (block/blk-core.c)."""

    OK = 0
    IOERR = 10


class Errno(enum.IntEnum):
    """errno values (include/uapi/asm-generic/errno-base.h)."""

    EINTR = 4
    EIO = 5
    EAGAIN = 11
    ENOMEM = 12
    EFAULT = 14
    EBUSY = 16
    ENOSPC = 28


class Signal(enum.IntEnum):
    """Signals the fault path can deliver (x86 numbering)."""

    SIGKILL = 9
    SIGBUS = 7
    SIGSEGV = 11


#: The value a killable wait is resumed with when a fatal signal ends it.
FATAL_WAKE = "fatal_signal"

PAGE_SIZE = 4096
PAGE_SHIFT = 12


@functools.cache
def flag_names(family: type, value: int) -> str:
    """``flag_names(FaultFlag, flags)``: ``"ALLOW_RETRY|KILLABLE|USER"`` for trace records, or ``"0"``.

    Names in *family*'s definition order; a few combinations recur in every fault, hence the cache.
    """
    return "|".join(name for name, bit in vars(family).items() if name.isupper() and bit & value) or "0"
