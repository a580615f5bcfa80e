"""Emulated per-VMA lock: ``vma->vm_lock``, ``vm_lock_seq`` and ``mm->mm_lock_seq``.

Mirrors include/linux/mm.h (``vma_start_read``, ``vma_end_read``,
``vma_start_write``, ``vma_mark_detached``) and
include/linux/mmap_lock.h (``vma_end_write_all``, called by
``mmap_write_unlock`` and ``mmap_write_downgrade``) at v6.4 (5e31275cc997,
Suren Baghdasaryan) and v6.12, whose implementation is the same one: an
``rw_semaphore`` per VMA plus two sequence numbers (6.12 only adds memory
ordering, ``smp_load_acquire`` of ``mm_lock_seq``, which a sequential model
does not need). 6.13 turned ``mm_lock_seq`` into a seqcount and 6.15 replaced
the rwsem with a reference count; neither is modelled.

Theory of operation::

    writer (holds mmap_lock for write)          reader (a page fault, no mmap_lock)
    vma_start_write:                            vma_start_read (a trylock, never sleeps):
      vm_lock_seq == mm_lock_seq? done            vm_lock_seq == mm_lock_seq?  fail
      down_write(vm_lock)  (waits for readers)    down_read_trylock(vm_lock)   fail if a
      vm_lock_seq = mm_lock_seq                     writer holds it or waits for it
      up_write(vm_lock)                           vm_lock_seq == mm_lock_seq?  up_read, fail
    ... modify the VMA ...                      vma_end_read: up_read(vm_lock)
    mmap_write_unlock → vma_end_write_all: mm_lock_seq += 1 (every VMA unlocked at once)

A VMA is "write-locked" while its ``vm_lock_seq`` equals its mm's
``mm_lock_seq``: from ``vma_start_write`` until the writer releases
mmap_lock. The rwsem itself is held for write only for the instant of
setting the sequence number; its job is to wait out the readers that got in
before. Sans-IO like ``actors.locking.rwsem``: the methods decide and return
whom to wake; the sleeping side is ``actors.mm.mmap.vma_start_write``.

Rules kept (invariants):

* ``mm_lock_seq`` and every ``vm_lock_seq`` only grow.
* A reader never holds a write-locked VMA: it fails while the sequence
  numbers match, and ``vma_start_write`` waits for the readers already in.
* A reader never sleeps here; a writer queues only behind readers.

Emulation notes:
    Sequence numbers do not overflow (the kernel's are ``int`` and may wrap,
    giving a harmless false "locked"). The VMA lock's rwsem follows the 5.3
    rules (``RwsemSemantics.V5_3``), as every 6.x kernel's does; readers use
    only its trylock, which fails whenever a waiter is queued.
"""

from __future__ import annotations

import typing

import attrs

from actors.locking.rwsem import RwSemaphore, RwsemSemantics, RwsemWake

__all__ = ["MmLockSeq", "VmaLock"]


@typing.final
@attrs.define(eq=False)
class MmLockSeq:
    """``mm->mm_lock_seq`` (include/linux/mm_types.h, v6.4): bumped at every ``mmap_write_unlock``."""

    value: int = 0

    def vma_end_write_all(self) -> int:
        """Mirror of ``vma_end_write_all()``: unlock every VMA write-locked under this hold; the new value."""
        self.value += 1
        return self.value


@typing.final
@attrs.define(eq=False, repr=False)
class VmaLock:
    """``vma->vm_lock`` with ``vma->vm_lock_seq`` and ``vma->detached`` (v6.4).

    Args:
        name: stable name for reports, e.g. ``"batch0.data.vm_lock"``.
        mm_lock_seq: the owning mm's sequence.
    """

    name: str
    mm_lock_seq: MmLockSeq
    #: ``vma_lock_alloc()`` starts it at -1: never write-locked.
    vm_lock_seq: int = attrs.field(init=False, default=-1)
    detached: bool = attrs.field(init=False, default=False)
    lock: RwSemaphore = attrs.field(init=False)

    @lock.default
    def _lock(self) -> RwSemaphore:
        return RwSemaphore(self.name, RwsemSemantics.V5_3)

    def write_locked(self) -> bool:
        """``__is_vma_write_locked()``: locked by the current mmap_lock writer."""
        return self.vm_lock_seq == self.mm_lock_seq.value

    def start_read(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``vma_start_read()``: a trylock; False if write-locked or a writer holds or waits."""
        if self.write_locked():
            return False
        if not self.lock.down_read_trylock(owner, now_ns):
            return False
        if self.write_locked():  # the re-check under the lock (a writer finished meanwhile)
            self.lock.up_read(owner, now_ns)
            return False
        return True

    def end_read(self, owner: str, now_ns: int) -> list[RwsemWake]:
        """Mirror of ``vma_end_read()``: ``up_read``; a writer waiting for the last reader is woken."""
        return self.lock.up_read(owner, now_ns)

    def start_write(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``vma_start_write()``: True once write-locked; False if queued behind readers.

        A queued writer is woken by the last ``end_read`` and then calls
        :meth:`start_write_retry` in its own context.
        """
        if self.write_locked():
            return True
        if not self.lock.down_write(owner, now_ns):
            return False
        self._set_seq(owner, now_ns)
        return True

    def start_write_retry(self, owner: str, now_ns: int) -> bool:
        """The woken writer's ``down_write`` retry: True once write-locked."""
        if not self.lock.down_write_retry(owner, now_ns):
            return False
        self._set_seq(owner, now_ns)
        return True

    def mark_detached(self, detached: bool) -> None:
        """Mirror of ``vma_mark_detached()``: a VMA leaving the tree must be write-locked."""
        if detached and not self.write_locked():
            raise AssertionError(f"{self.name}: detached without vma_start_write (vma_assert_write_locked)")
        self.detached = detached

    def readers(self) -> tuple[str, ...]:
        """Who holds the VMA for read now."""
        return self.lock.statistics().readers

    def _set_seq(self, owner: str, now_ns: int) -> None:
        self.vm_lock_seq = self.mm_lock_seq.value
        wakes = self.lock.up_write(owner, now_ns)
        if wakes:  # readers never queue and one writer at a time holds mmap_lock
            raise AssertionError(f"{self.name}: up_write woke {wakes}")

    def __repr__(self) -> str:
        state = "write-locked" if self.write_locked() else f"readers={list(self.readers())}"
        return f"<VmaLock {self.name} seq={self.vm_lock_seq}/{self.mm_lock_seq.value} {state}>"
