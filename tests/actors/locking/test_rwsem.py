"""Tests for actors/locking/rwsem.py: the emulated rw_semaphore (mmap_sem).

Plain tests drive the sans-IO state machine directly (STYLE 5.23); a Hypothesis
``RuleBasedStateMachine`` per semantics runs it beside a small independent
reference model and checks the invariants after every step.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.locking.rwsem import (
    MAX_READERS_WAKEUP,
    RwSemaphore,
    RwsemMisuse,
    RwsemSemantics,
    RwsemWake,
)
from emu.errors import KernelBug

V4_19 = RwsemSemantics.V4_19
V5_3 = RwsemSemantics.V5_3
BOTH = pytest.mark.parametrize("semantics", [V4_19, V5_3], ids=["4.19", "5.3"])
MS = 1_000_000


def granted(*owners: str) -> list[RwsemWake]:
    return [RwsemWake(owner=o, write=False, granted=True) for o in owners]


def woken(owner: str) -> list[RwsemWake]:
    return [RwsemWake(owner=owner, write=True, granted=False)]


# ------------------------------------------------------------ queueing (B1)


@BOTH
def test_down_read_blocks_behind_queued_writer(semantics: RwsemSemantics) -> None:
    """down_read queues behind a queued writer even though only readers hold the sem."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    assert sem.down_read("fault", 0)
    assert not sem.down_write("mprotect", 1)
    assert not sem.down_read("ps", 2)
    assert not sem.down_read_trylock("top", 3)
    stats = sem.statistics()
    assert stats.readers == ("fault",)
    assert stats.waiters == (("mprotect", "W"), ("ps", "R"))


@BOTH
def test_down_read_shares_with_readers_when_nobody_waits(semantics: RwsemSemantics) -> None:
    """down_read and down_read_trylock succeed at once beside other readers when the queue is empty."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    assert sem.down_read("a", 0)
    assert sem.down_read_trylock("b", 0)
    assert sem.down_read("a", 0)
    assert sem.holders() == ["a (read x2)", "b (read)"]
    assert sem.is_held_by("a") == "read"
    assert sem.is_held_by("c") is None


@BOTH
def test_up_read_wakes_writer_only_when_last_reader_leaves(semantics: RwsemSemantics) -> None:
    """up_read wakes the queued writer only when it drops the last read hold (rwsem_wake)."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("r1", 0)
    sem.down_read("r2", 0)
    sem.down_write("w", 0)
    assert sem.up_read("r1", 1) == []
    assert sem.up_read("r2", 2) == woken("w")
    assert sem.statistics().woken == "w"
    assert sem.down_write_retry("w", 3)
    assert sem.is_held_by("w") == "write"
    assert sem.statistics().waiters == ()


# ------------------------------------------------------------ wake rule (B2)


def test_up_write_grants_readers_at_head_4_19() -> None:
    """v4.19 __rwsem_mark_wake grants only the consecutive readers at the head, stopping at a writer."""
    sem = RwSemaphore("mm.mmap_sem", V4_19)
    sem.down_write("w0", 0)
    for owner, write in [("r1", False), ("r2", False), ("w1", True), ("r3", False)]:
        (sem.down_write if write else sem.down_read)(owner, 1)
    assert sem.up_write("w0", 2) == granted("r1", "r2")
    stats = sem.statistics()
    assert stats.readers == ("r1", "r2")
    assert stats.waiters == (("w1", "W"), ("r3", "R"))


def test_up_write_grants_readers_5_3_skips_writers_up_to_256() -> None:
    """v5.3 rwsem_mark_wake grants queued readers past writers, at most MAX_READERS_WAKEUP of them."""
    sem = RwSemaphore("mm.mmap_sem", V5_3)
    sem.down_write("w0", 0)
    readers = [f"r{i}" for i in range(300)]
    for owner in readers[:10]:
        sem.down_read(owner, 1)
    sem.down_write("w1", 1)
    for owner in readers[10:]:
        sem.down_read(owner, 1)
    assert MAX_READERS_WAKEUP == 256
    assert sem.up_write("w0", 2) == granted(*readers[:256])
    assert sem.statistics().waiters == (("w1", "W"), *((o, "R") for o in readers[256:]))
    for owner in readers[:255]:
        assert sem.up_read(owner, 3) == []
    assert sem.up_read(readers[255], 3) == woken("w1")


@BOTH
def test_up_write_wakes_head_writer_without_granting(semantics: RwsemSemantics) -> None:
    """up_write only wakes a head writer (granted=False); the readers behind it stay queued."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_write("w0", 0)
    sem.down_write("w1", 1)
    sem.down_read("r1", 2)
    assert sem.up_write("w0", 3) == woken("w1")
    stats = sem.statistics()
    assert (stats.readers, stats.writer) == ((), None)
    assert stats.waiters == (("w1", "W"), ("r1", "R"))


@BOTH
def test_downgrade_write_grants_readers_at_head(semantics: RwsemSemantics) -> None:
    """downgrade_write keeps a read hold and grants the readers at the head (RWSEM_WAKE_READ_OWNED)."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_write("munmap", 0)
    sem.down_read("r1", 1)
    sem.down_write("w1", 2)
    assert sem.downgrade_write("munmap", 3) == granted("r1")
    assert sem.holders() == ["munmap (read)", "r1 (read)"]
    assert sem.statistics().waiters == (("w1", "W"),)


# ------------------------------------------------- stealing and handoff (B3)


@BOTH
def test_writer_lock_stealing_before_retry(semantics: RwsemSemantics) -> None:
    """An arriving down_write takes the lock between a writer's wake-up and its rwsem_try_write_lock."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("r", 0)
    sem.down_write("w1", 0)
    assert sem.up_read("r", MS) == woken("w1")
    assert sem.down_write("thief", MS)
    assert not sem.down_write_retry("w1", MS)
    stats = sem.statistics()
    assert (stats.writer, stats.waiters, stats.woken) == ("thief", (("w1", "W"),), None)
    assert sem.up_write("thief", 2 * MS) == woken("w1")
    assert sem.down_write_retry("w1", 2 * MS)


def test_down_write_trylock_steals_with_waiters_4_19_only() -> None:
    """x86 v4.19 __down_write_trylock ignores the waiting bias; v5.3 needs RWSEM_UNLOCKED_VALUE."""
    for semantics, expected in [(V4_19, True), (V5_3, False)]:
        sem = RwSemaphore("mm.mmap_sem", semantics)
        sem.down_write("w0", 0)
        sem.down_write("w1", 0)
        sem.up_write("w0", 1)
        assert sem.down_write_trylock("thief", 1) is expected


def test_handoff_after_4ms_blocks_stealing_5_3() -> None:
    """v5.3: a head writer that waited 4 ms sets RWSEM_FLAG_HANDOFF itself, when its retry finds the lock stolen; from then on no writer (or reader) can steal."""
    sem = RwSemaphore("mm.mmap_sem", V5_3)
    sem.down_read("r", 0)
    sem.down_write("w1", 0)
    assert sem.up_read("r", 5 * MS) == woken("w1")
    assert not sem.statistics().handoff  # the waker does not set it for a writer
    assert sem.down_write("thief", 5 * MS)  # the first steal after the timeout still succeeds
    assert not sem.down_write_retry("w1", 5 * MS)
    assert sem.statistics().handoff
    assert sem.up_write("thief", 6 * MS) == woken("w1")
    assert not sem.down_write("other", 6 * MS)
    assert not sem.down_write_trylock("late", 6 * MS)
    assert sem.down_write_retry("w1", 6 * MS)
    stats = sem.statistics()
    assert (stats.writer, stats.handoff, stats.waiters) == ("w1", False, (("other", "W"),))


def test_handoff_set_by_failed_retry_after_timeout_5_3() -> None:
    """v5.3 rwsem_try_write_lock sets HANDOFF when a timed-out head writer finds the lock stolen."""
    sem = RwSemaphore("mm.mmap_sem", V5_3)
    sem.down_write("w0", 0)
    sem.down_write("w1", 0)
    assert sem.up_write("w0", MS) == woken("w1")
    assert not sem.statistics().handoff
    assert sem.down_write("thief", MS)
    assert not sem.down_write_retry("w1", 4 * MS)
    assert sem.statistics().handoff
    assert sem.up_write("thief", 6 * MS) == woken("w1")
    assert not sem.down_write("thief2", 6 * MS)
    assert sem.down_write_retry("w1", 6 * MS)


def test_no_handoff_in_4_19() -> None:
    """v4.19 has no HANDOFF: a writer may steal however long the head waiter has waited."""
    sem = RwSemaphore("mm.mmap_sem", V4_19)
    sem.down_read("r", 0)
    sem.down_write("w1", 0)
    sem.up_read("r", 100 * MS)
    assert sem.down_write("thief", 100 * MS)
    assert not sem.down_write_retry("w1", 100 * MS)
    assert not sem.statistics().handoff


# ------------------------------------------------------------------ misuse


@BOTH
def test_up_read_by_non_holder_raises(semantics: RwsemSemantics) -> None:
    """up_read by a task without a read hold is a KernelBug naming the sem and the owner."""
    sem = RwSemaphore("mm7.mmap_sem", semantics)
    sem.down_read("a", 0)
    with pytest.raises(RwsemMisuse, match=r"'mm7\.mmap_sem'.*'b'") as info:
        sem.up_read("b", 1)
    assert isinstance(info.value, KernelBug)
    assert sem.holders() == ["a (read)"]


@BOTH
def test_up_write_and_downgrade_write_by_non_writer_raise(semantics: RwsemSemantics) -> None:
    """up_write and downgrade_write by a task that does not hold the write lock raise RwsemMisuse."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("a", 0)
    with pytest.raises(RwsemMisuse, match="up_write"):
        sem.up_write("a", 1)
    with pytest.raises(RwsemMisuse, match="downgrade_write"):
        sem.downgrade_write("a", 1)


@BOTH
def test_down_write_retry_requires_woken_head(semantics: RwsemSemantics) -> None:
    """down_write_retry by a writer that was not woken (or not queued) raises RwsemMisuse."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("r", 0)
    sem.down_write("w", 0)
    with pytest.raises(RwsemMisuse):
        sem.down_write_retry("w", 1)
    with pytest.raises(RwsemMisuse):
        sem.down_write_retry("nobody", 1)
    with pytest.raises(RwsemMisuse, match="wait list"):
        sem.down_read("w", 1)
    with pytest.raises(RwsemMisuse):
        sem.cancel_wait("nobody", 1)


# --------------------------------------------------------------- cancel_wait


@BOTH
def test_cancel_wait_grants_readers_behind_departing_writer(semantics: RwsemSemantics) -> None:
    """A killed down_write_killable waiter lets the readers it blocked share the read-held sem."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("fault", 0)
    sem.down_write("mprotect", 1)
    sem.down_read("ps", 2)
    sem.down_read("top", 3)
    assert sem.cancel_wait("mprotect", 4) == granted("ps", "top")
    assert sem.statistics().waiters == ()
    assert sem.holders() == ["fault (read)", "ps (read)", "top (read)"]


@BOTH
def test_cancel_wait_of_woken_writer_wakes_next_writer(semantics: RwsemSemantics) -> None:
    """A woken writer killed before its retry passes the wake-up on to the next head writer."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_write("w0", 0)
    sem.down_write("w1", 0)
    sem.down_write("w2", 0)
    assert sem.up_write("w0", 1) == woken("w1")
    assert sem.cancel_wait("w1", 2) == woken("w2")
    assert sem.statistics().woken == "w2"


@BOTH
def test_cancel_wait_of_reader_wakes_nobody(semantics: RwsemSemantics) -> None:
    """A killed down_read_killable waiter just leaves the queue (no rwsem_mark_wake)."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_write("w0", 0)
    sem.down_read("r1", 1)
    sem.down_write("w1", 1)
    assert sem.cancel_wait("r1", 2) == []
    assert sem.statistics().waiters == (("w1", "W"),)


def test_cancel_wait_of_head_writer_clears_handoff_5_3() -> None:
    """A killed head writer takes its RWSEM_FLAG_HANDOFF with it in v5.3."""
    sem = RwSemaphore("mm.mmap_sem", V5_3)
    sem.down_write("w0", 0)
    sem.down_write("w1", 0)
    sem.down_read("r1", 1 * MS)
    assert sem.up_write("w0", 5 * MS) == woken("w1")
    assert sem.down_write("thief", 5 * MS) and not sem.down_write_retry("w1", 5 * MS)
    assert sem.statistics().handoff
    assert sem.up_write("thief", 6 * MS) == woken("w1")
    assert sem.cancel_wait("w1", 6 * MS) == granted("r1")
    assert not sem.statistics().handoff


# ---------------------------------------------------------------- statistics


@BOTH
def test_statistics_wait_and_hold_times(semantics: RwsemSemantics) -> None:
    """statistics() counts acquisitions and measures wait (queue→acquire, retries included) and hold times."""
    sem = RwSemaphore("mm.mmap_sem", semantics)
    sem.down_read("r", 0)  # fast path
    sem.down_write("w", 10)  # queues at 10
    sem.down_read("late", 20)  # queues at 20
    assert sem.up_read("r", 100) == woken("w")  # r held 100
    assert sem.down_write("thief", 100)
    assert not sem.down_write_retry("w", 100)
    assert sem.up_write("thief", 130) == woken("w")  # thief held 30
    assert sem.down_write_retry("w", 150)  # w waited 140
    assert sem.up_write("w", 400) == granted("late")  # w held 250, late waited 380
    stats = sem.statistics()
    assert (stats.read_acquires, stats.write_acquires, stats.contended) == (2, 2, 2)
    assert (stats.wait_total_ns, stats.wait_max_ns, stats.hold_max_ns) == (140 + 380, 380, 250)


# ------------------------------------------------------- model-based testing


class RwsemModel:
    """Reference rwsem: holders as (owner, since) pairs, queue rows [owner, write, t0, woken]."""

    def __init__(self, v5_3: bool) -> None:
        self.v5_3, self.handoff = v5_3, False
        self.reads: list[tuple[str, int]] = []
        self.writer: tuple[str, int] | None = None
        self.queue: list[list] = []
        self.counts = dict(read=0, write=0, contended=0, wait_total=0, wait_max=0, hold_max=0)

    def free(self) -> bool:
        return not self.reads and self.writer is None

    def take(self, owner: str, write: bool, now: int, t0: int | None) -> None:
        if write:
            self.writer = (owner, now)
        else:
            self.reads.append((owner, now))
        self.counts["write" if write else "read"] += 1
        if t0 is not None:
            self.counts["contended"] += 1
            self.counts["wait_total"] += now - t0
            self.counts["wait_max"] = max(self.counts["wait_max"], now - t0)

    def acquire(self, owner: str, write: bool, now: int, block: bool) -> bool:
        if write:
            ok = self.free() and not self.handoff and (block or not (self.v5_3 and self.queue))
        else:  # v5.3: down_read (not trylock) takes a free lock ahead of the woken head writer, unless HANDOFF
            ok = self.writer is None and (not self.queue or (block and self.v5_3 and self.free() and not self.handoff))
        if ok:
            self.take(owner, write, now, None)
        elif block:
            self.queue.append([owner, write, now, False])
        return ok

    def retry(self, owner: str, now: int) -> bool:
        head = self.queue[0]
        if self.free():
            self.queue.pop(0)
            self.handoff = False
            self.take(owner, True, now, head[2])
            return True
        head[3] = False
        self.handoff |= self.v5_3 and now - head[2] >= 4 * MS
        return False

    def release(self, owner: str, now: int, mode: str) -> list[tuple[str, bool, bool]]:
        if mode == "read":
            i = next(i for i, (o, _) in enumerate(self.reads) if o == owner)
            self.counts["hold_max"] = max(self.counts["hold_max"], now - self.reads.pop(i)[1])
            return [] if self.reads else self.wake(now, True)
        assert self.writer is not None
        since, self.writer = self.writer[1], None
        if mode == "downgrade":
            self.reads.append((owner, since))
            return self.wake(now, False)
        self.counts["hold_max"] = max(self.counts["hold_max"], now - since)
        return self.wake(now, True)

    def cancel(self, owner: str, now: int) -> list[tuple[str, bool, bool]]:
        i = next(i for i, q in enumerate(self.queue) if q[0] == owner)
        row = self.queue.pop(i)
        if not self.queue or (i == 0 and row[1]):
            self.handoff = False
        return self.wake(now, True) if row[1] else []

    def wake(self, now: int, any_waker: bool) -> list[tuple[str, bool, bool]]:
        if not self.queue:
            return []
        head = self.queue[0]
        self.handoff |= self.v5_3 and any_waker and not head[1] and now - head[2] >= 4 * MS
        if head[1]:
            if head[3] or not self.free():
                return []
            head[3] = True
            return [(head[0], True, False)]
        if self.writer is not None:
            return []
        if self.v5_3:
            picks = [i for i, q in enumerate(self.queue) if not q[1]][:256]
        else:
            picks = list(itertools.takewhile(lambda i: not self.queue[i][1], range(len(self.queue))))
        rows = [self.queue[i] for i in picks]
        self.queue = [q for i, q in enumerate(self.queue) if i not in picks]
        self.handoff = False
        for row in rows:
            self.take(row[0], False, now, row[2])
        return [(row[0], False, True) for row in rows]


OWNERS = ("t0", "t1", "t2", "t3", "t4")
LATER = st.sampled_from([0, MS, 5 * MS])  # time passing before a release or a retry


class RwsemMachine(RuleBasedStateMachine):
    """RwSemaphore beside RwsemModel over a handful of tasks; subclasses pick the semantics."""

    semantics = V4_19

    def __init__(self) -> None:
        super().__init__()
        self.sem = RwSemaphore("mm.mmap_sem", self.semantics)
        self.model = RwsemModel(self.semantics is V5_3)
        self.now = 0

    def running(self) -> list[str]:
        queued = [o for o, _ in self.sem.statistics().waiters]
        return [o for o in OWNERS if o not in queued]

    def check_wakes(self, wakes: list[RwsemWake], model_wakes: list, queue_before: list) -> None:
        assert [(w.owner, w.write, w.granted) for w in wakes] == model_wakes
        readers = [w.owner for w in wakes if w.granted]
        if self.semantics is V4_19:  # no reader admitted past a queued writer
            assert readers == [o for o, _ in queue_before][: len(readers)]
        else:  # readers in queue order, none skipped
            assert readers == [o for o, kind in queue_before if kind == "R"][: len(readers)]
        writers = [w for w in wakes if not w.granted]
        assert len(writers) <= 1 and (not writers or writers[0].owner == queue_before[0][0])

    def acquire(self, data: st.DataObject, op: str) -> None:
        owner = data.draw(st.sampled_from(self.running()), label="owner")
        queue_was_empty = not self.sem.statistics().waiters
        got = getattr(self.sem, op)(owner, self.now)
        assert got == self.model.acquire(owner, op.startswith("down_write"), self.now, not op.endswith("trylock"))
        if got and op.startswith("down_read") and not queue_was_empty:  # only a v5.3 steal passes a waiter
            stats = self.sem.statistics()
            assert self.semantics is V5_3 and op == "down_read" and stats.readers == (owner,) and stats.woken is not None

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def down_read(self, data: st.DataObject) -> None:
        self.acquire(data, "down_read")

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def down_read_trylock(self, data: st.DataObject) -> None:
        self.acquire(data, "down_read_trylock")

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def down_write(self, data: st.DataObject) -> None:
        self.acquire(data, "down_write")

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def down_write_trylock(self, data: st.DataObject) -> None:
        self.acquire(data, "down_write_trylock")

    @precondition(lambda self: self.sem.statistics().woken is not None)
    @rule(delay_ns=LATER)
    def retry_woken_writer(self, delay_ns: int) -> None:
        self.now += delay_ns
        owner = self.sem.statistics().woken
        assert owner is not None
        assert self.sem.down_write_retry(owner, self.now) == self.model.retry(owner, self.now)

    @precondition(lambda self: any(self.sem.is_held_by(o) for o in self.running()))
    @rule(data=st.data(), downgrade=st.booleans(), held_ns=LATER)
    def release(self, data: st.DataObject, downgrade: bool, held_ns: int) -> None:
        self.now += held_ns
        owner = data.draw(st.sampled_from([o for o in self.running() if self.sem.is_held_by(o)]), label="owner")
        queue_before = list(self.sem.statistics().waiters)
        if self.sem.is_held_by(owner) == "read":
            wakes, mode = self.sem.up_read(owner, self.now), "read"
        elif downgrade:
            wakes, mode = self.sem.downgrade_write(owner, self.now), "downgrade"
        else:
            wakes, mode = self.sem.up_write(owner, self.now), "write"
        self.check_wakes(wakes, self.model.release(owner, self.now, mode), queue_before)

    @precondition(lambda self: self.sem.statistics().waiters)
    @rule(data=st.data())
    def cancel_wait(self, data: st.DataObject) -> None:
        waiters = self.sem.statistics().waiters
        owner = data.draw(st.sampled_from([o for o, _ in waiters]), label="owner")
        wakes = self.sem.cancel_wait(owner, self.now)
        self.check_wakes(wakes, self.model.cancel(owner, self.now), [w for w in waiters if w[0] != owner])

    @precondition(lambda self: any(not self.sem.is_held_by(o) for o in self.running()))
    @rule(data=st.data(), write=st.booleans())
    def release_by_non_holder_raises(self, data: st.DataObject, write: bool) -> None:
        owner = data.draw(st.sampled_from([o for o in self.running() if not self.sem.is_held_by(o)]), label="owner")
        before = self.sem.statistics()
        with pytest.raises(RwsemMisuse):
            (self.sem.up_write if write else self.sem.up_read)(owner, self.now)
        assert self.sem.statistics() == before

    @rule(delta_ns=st.sampled_from([1_000, MS, 2 * MS, 5 * MS]))
    def advance_time(self, delta_ns: int) -> None:
        self.now += delta_ns

    @invariant()
    def agrees_with_model(self) -> None:
        stats, model = self.sem.statistics(), self.model
        assert sorted(stats.readers) == sorted(o for o, _ in model.reads)
        assert stats.writer == (model.writer[0] if model.writer else None)
        assert stats.waiters == tuple((q[0], "W" if q[1] else "R") for q in model.queue)
        assert stats.woken == next((q[0] for q in model.queue[:1] if q[3]), None)
        assert stats.handoff == model.handoff
        counts = (stats.read_acquires, stats.write_acquires, stats.contended)
        assert counts == (model.counts["read"], model.counts["write"], model.counts["contended"])
        times = (stats.wait_total_ns, stats.wait_max_ns, stats.hold_max_ns)
        assert times == (model.counts["wait_total"], model.counts["wait_max"], model.counts["hold_max"])

    @invariant()
    def readers_and_writer_never_hold_together(self) -> None:
        stats = self.sem.statistics()
        assert not (stats.readers and stats.writer is not None)

    @invariant()
    def woken_writer_is_the_head_and_nothing_is_lost(self) -> None:
        stats = self.sem.statistics()
        if stats.woken is not None:
            assert stats.waiters[0] == (stats.woken, "W")
        if stats.waiters and not stats.readers and stats.writer is None:
            assert stats.woken == stats.waiters[0][0]  # no lost wake-up
        assert not stats.handoff or (self.semantics is V5_3 and stats.waiters)

    @invariant()
    def holders_report_matches_statistics(self) -> None:
        stats = self.sem.statistics()
        for owner in OWNERS:
            mode = self.sem.is_held_by(owner)
            assert (mode == "read") == (owner in stats.readers)
            assert (mode == "write") == (owner == stats.writer)


class RwsemMachine419(RwsemMachine):
    """The state machine under v4.19 rwsem-xadd rules."""

    semantics = V4_19


class RwsemMachine53(RwsemMachine):
    """The state machine under v5.3 rwsem rules (reader batching, HANDOFF)."""

    semantics = V5_3


MACHINE_SETTINGS = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRwsemMachine419 = RwsemMachine419.TestCase
TestRwsemMachine419.settings = MACHINE_SETTINGS
TestRwsemMachine53 = RwsemMachine53.TestCase
TestRwsemMachine53.settings = MACHINE_SETTINGS


def test_reader_takes_a_free_lock_ahead_of_the_woken_writer_5_3() -> None:
    """5.3+ (reader spinning, then 5.11's reader lock stealing): between a writer's wake and its retry, an arriving reader takes the free lock; the writer's retry fails and, past 4 ms of waiting, sets HANDOFF, which stops the next reader."""
    sem = RwSemaphore("mm.mmap_sem", V5_3)
    assert sem.down_read("memreader", 0)
    assert not sem.down_write("mapper", 1_000)
    assert sem.up_read("memreader", 100 * MS) == woken("mapper")
    assert sem.down_read("memreader", 100 * MS + 1_000)  # the woken writer has not run yet
    assert not sem.down_read_trylock("monitor", 100 * MS + 1_000)  # a trylock never passes a waiter
    assert not sem.down_write_retry("mapper", 100 * MS + 5_000)
    stats = sem.statistics()
    assert stats.read_steals == 1 and stats.handoff and stats.readers == ("memreader",)
    assert sem.up_read("memreader", 200 * MS) == woken("mapper")
    assert not sem.down_read("memreader", 200 * MS + 1_000)  # HANDOFF: it queues behind the writer
    assert sem.down_write_retry("mapper", 200 * MS + 5_000)


def test_no_reader_steal_in_4_19() -> None:
    """4.19's readers queue behind any waiter, a woken writer included."""
    sem = RwSemaphore("mm.mmap_sem", V4_19)
    assert sem.down_read("memreader", 0)
    assert not sem.down_write("mapper", 1_000)
    assert sem.up_read("memreader", 100 * MS) == woken("mapper")
    assert not sem.down_read("memreader", 100 * MS + 1_000)
    assert sem.down_write_retry("mapper", 100 * MS + 5_000) and sem.statistics().read_steals == 0
