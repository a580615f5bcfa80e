"""Tests for actors/locking/vma_lock.py: the per-VMA lock and its sequence numbers.

Plain tests drive the sans-IO lock directly; a Hypothesis
``RuleBasedStateMachine`` runs two VMAs of one mm beside a small independent
model (a reader count, a queued writer, the sequence numbers) and checks the
invariants after every step: no reader while a VMA is write-locked, no VMA
changed under a reader, sequence numbers that only grow.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.locking.rwsem import RwsemWake
from actors.locking.vma_lock import MmLockSeq, VmaLock


def _lock(seq: MmLockSeq | None = None) -> VmaLock:
    return VmaLock("mm.data.vm_lock", MmLockSeq() if seq is None else seq)


def test_readers_share_and_a_writer_locks_by_sequence() -> None:
    """Readers share the lock; vma_start_write with no reader sets vm_lock_seq = mm_lock_seq at once."""
    lock = _lock()
    assert lock.start_read("f1", 0) and lock.start_read("f2", 0)
    assert lock.readers() == ("f1", "f2")
    assert lock.end_read("f1", 1) == [] and lock.end_read("f2", 1) == []
    assert lock.vm_lock_seq == -1 and not lock.write_locked()
    assert lock.start_write("mapper", 2)
    assert lock.write_locked() and lock.vm_lock_seq == 0
    assert lock.readers() == () and lock.lock.statistics().writer is None  # the rwsem is free again


def test_write_locked_vma_refuses_readers_until_mmap_write_unlock() -> None:
    """vma_start_read fails on the sequence match alone; vma_end_write_all unlocks every VMA at once."""
    seq = MmLockSeq()
    a, b = _lock(seq), VmaLock("mm.b.vm_lock", seq)
    assert a.start_write("mapper", 0) and b.start_write("mapper", 0)
    assert not a.start_read("f", 1) and not b.start_read("f", 1)
    assert a.start_write("mapper", 1)  # already locked: a no-op
    assert seq.vma_end_write_all() == 1
    assert a.start_read("f", 2) and b.start_read("g", 2)


def test_writer_waits_for_readers_and_blocks_new_ones() -> None:
    """vma_start_write queues behind a reader; while it waits a new reader's trylock fails; the last end_read wakes it."""
    lock = _lock()
    assert lock.start_read("fault", 0)
    assert not lock.start_write("munmap", 1)
    assert not lock.start_read("fault2", 2)  # down_read_trylock fails with a waiter queued
    assert lock.end_read("fault", 3) == [RwsemWake(owner="munmap", write=True, granted=False)]
    assert lock.start_write_retry("munmap", 3)
    assert lock.write_locked() and lock.vm_lock_seq == 0


def test_detach_requires_the_write_lock() -> None:
    """vma_mark_detached(true) of a VMA not write-locked is vma_assert_write_locked firing."""
    lock = _lock()
    with pytest.raises(AssertionError, match="detached without vma_start_write"):
        lock.mark_detached(True)
    assert lock.start_write("munmap", 0)
    lock.mark_detached(True)
    assert lock.detached


# -- the state machine ------------------------------------------------------------------


READERS = ("f0", "f1", "f2")
VMAS = ("a", "b")


class VmaLockModel:
    """What the per-VMA lock promises, kept independently: per VMA, readers, a queued writer and vm_lock_seq."""

    def __init__(self) -> None:
        self.mm_seq = 0
        self.writer_holds_mmap = False
        self.vmas = {name: {"readers": [], "queued": False, "seq": -1} for name in VMAS}

    def locked(self, name: str) -> bool:
        return self.vmas[name]["seq"] == self.mm_seq


class VmaLockMachine(RuleBasedStateMachine):
    """Two VMAs of one mm, three faulting readers and one writer that takes mmap_lock for write."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = MmLockSeq()
        self.locks = {name: VmaLock(f"mm.{name}.vm_lock", self.seq) for name in VMAS}
        self.model = VmaLockModel()
        self.now = 0
        self.history: list[tuple[int, dict[str, int]]] = []

    def _queued(self) -> str | None:
        return next((name for name in VMAS if self.model.vmas[name]["queued"]), None)

    @rule(reader=st.sampled_from(READERS), vma=st.sampled_from(VMAS))
    def start_read(self, reader: str, vma: str) -> None:
        state = self.model.vmas[vma]
        if reader in state["readers"]:
            return  # one hold per fault
        expected = not self.model.locked(vma) and not state["queued"]
        assert self.locks[vma].start_read(reader, self.now) == expected
        if expected:
            state["readers"].append(reader)

    @precondition(lambda self: any(self.model.vmas[v]["readers"] for v in VMAS))
    @rule(data=st.data())
    def end_read(self, data: st.DataObject) -> None:
        vma = data.draw(st.sampled_from([v for v in VMAS if self.model.vmas[v]["readers"]]))
        state = self.model.vmas[vma]
        reader = data.draw(st.sampled_from(state["readers"]))
        state["readers"].remove(reader)
        wakes = self.locks[vma].end_read(reader, self.now)
        if state["queued"] and not state["readers"]:
            assert wakes == [RwsemWake(owner="writer", write=True, granted=False)]
            assert self.locks[vma].start_write_retry("writer", self.now)
            state["queued"] = False
            state["seq"] = self.model.mm_seq
        else:
            assert wakes == []

    @precondition(lambda self: not self.model.writer_holds_mmap)
    @rule()
    def mmap_write_lock(self) -> None:
        self.model.writer_holds_mmap = True

    @precondition(lambda self: self.model.writer_holds_mmap and self._queued() is None)
    @rule(vma=st.sampled_from(VMAS))
    def vma_start_write(self, vma: str) -> None:
        state = self.model.vmas[vma]
        done = self.model.locked(vma) or not state["readers"]
        assert self.locks[vma].start_write("writer", self.now) == done
        if done:
            state["seq"] = self.model.mm_seq
        else:
            state["queued"] = True

    @precondition(lambda self: self.model.writer_holds_mmap and self._queued() is None)
    @rule()
    def mmap_write_unlock(self) -> None:
        self.model.writer_holds_mmap = False
        self.model.mm_seq += 1
        assert self.seq.vma_end_write_all() == self.model.mm_seq

    @rule()
    def tick(self) -> None:
        self.now += 1_000

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.seq.value == self.model.mm_seq
        for name in VMAS:
            lock, state = self.locks[name], self.model.vmas[name]
            assert sorted(lock.readers()) == sorted(state["readers"])
            assert lock.vm_lock_seq == state["seq"]
            assert lock.write_locked() == self.model.locked(name)

    @invariant()
    def no_reader_on_a_write_locked_vma(self) -> None:
        for lock in self.locks.values():
            assert not (lock.write_locked() and lock.readers())

    @invariant()
    def sequence_numbers_only_grow(self) -> None:
        now = (self.seq.value, {name: lock.vm_lock_seq for name, lock in self.locks.items()})
        if self.history:
            before = self.history[-1]
            assert now[0] >= before[0]
            assert all(now[1][name] >= before[1][name] for name in VMAS)
        self.history.append(now)


TestVmaLockMachine = VmaLockMachine.TestCase
TestVmaLockMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
