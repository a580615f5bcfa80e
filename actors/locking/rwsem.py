"""Emulated ``struct rw_semaphore``: the ``mmap_sem`` every fault path takes.

Mirrors kernel/locking/rwsem-xadd.c at v4.19 (with the x86 fast paths of
arch/x86/include/asm/rwsem.h) and kernel/locking/rwsem.c at v5.3, chosen per
semaphore by :class:`RwsemSemantics`. Sans-IO (STYLE 5.6): methods mutate the
state and *return* whom to wake; the async kernel path that called them does
the parking. Nothing here knows about Trio or the engine, and nothing reads a
clock: every method takes the caller's ``now_ns``.

Theory of operation::

    down_read  ── no writer holder and wait list empty ───────────► holder
               ── 5.3: no holder and no HANDOFF ── may steal ──────► holder
    down_write ── no holder (5.3: and no HANDOFF) ── may steal ───► holder
         │ otherwise
         ▼
    wait list (FIFO) ── up_*/downgrade_write/cancel_wait ──► rwsem_mark_wake
         head is a writer:  WOKEN only (granted=False) if no holder is left;
                            it re-tries in its own context (down_write_retry)
         head is a reader:  readers GRANTED (granted=True), unless a writer holds
                            v4.19: the consecutive readers at the head
                            v5.3:  readers anywhere, skipping writers, <= 256

Rules kept (invariants):

* Never a reader together with a writer; at most one writer.
* A queued waiter blocks new readers, even while only readers hold the sem
  (v4.19: the waiting bias makes the count negative; v5.3:
  ``RWSEM_READ_FAILED_MASK`` includes ``RWSEM_FLAG_WAITERS``/``HANDOFF``),
  with one exception from v5.3: a reader in ``down_read``'s slowpath takes
  a lock nobody holds, ahead of the woken writer at the head, unless
  HANDOFF is set (5.3-5.10: reader optimistic spinning,
  ``rwsem_try_read_lock_unqueued``; 5.11+: reader optimistic lock stealing,
  1a728dff855a, after 617f3ef95177 removed reader spinning). The woken
  writer's retry then fails; past the timeout it sets HANDOFF, so the next
  release is its.
* Readers are granted at wake time, writers only woken: between the wake and
  the retry the lock is free and an arriving writer may steal it; a woken
  writer whose retry fails stays at the head and sleeps until the next wake.
* v5.3 HANDOFF (4f23dbc1e657): once the head waiter has waited
  ``RWSEM_WAIT_TIMEOUT_NS`` the flag is set; while it is set no writer may
  steal, and it is cleared when the head waiter acquires (or leaves an
  otherwise empty list, or a head writer is killed).
* If the wait list is non-empty and nobody holds the sem, the head waiter is
  a woken writer (no lost wake-ups).
* Every hold is recorded by owner name; a release by a non-holder raises
  :class:`RwsemMisuse` (``DEBUG_RWSEMS_WARN_ON`` made fatal).

Emulation notes:
    Optimistic spinning takes no time here: an arriving writer steals a free
    lock at once or queues, and so does an arriving reader under v5.3 (the
    kernel's reader also spins while a running writer owns the lock; here a
    reader takes only a free lock, and ``down_read_trylock`` never passes a
    waiter, as ``__down_read_trylock``'s cmpxchg from the unlocked value
    does not). RT writers (who
    set HANDOFF immediately in v5.3) are not modelled. The count word layout
    (biases, flag bits) is replaced by explicit holder and waiter lists. v5.3
    sets HANDOFF for a head writer from the writer's own context, when a
    retry fails after the timeout (``rwsem_try_write_lock``), and for a head
    reader in the waker's ``rwsem_mark_wake``; so does the model, and the
    first steal after a writer's timeout still succeeds, the next is refused.
    ``RWSEM_WAIT_TIMEOUT`` is ``DIV_ROUND_UP(HZ, 250)`` jiffies, 4 ms for
    HZ=250 and HZ=1000. Spurious wake-ups do not happen.
"""

from __future__ import annotations

import collections
import enum
import heapq
import typing

import attrs

from emu.errors import KernelBug

__all__ = [
    "MAX_READERS_WAKEUP",
    "RWSEM_WAIT_TIMEOUT_NS",
    "RwSemaphore",
    "RwsemMisuse",
    "RwsemSemantics",
    "RwsemStatistics",
    "RwsemWaiter",
    "RwsemWake",
]

#: v5.3 ``MAX_READERS_WAKEUP`` (0x100): readers granted by one rwsem_mark_wake().
MAX_READERS_WAKEUP = 0x100
#: v5.3 ``RWSEM_WAIT_TIMEOUT`` (4 ms) in nanoseconds.
RWSEM_WAIT_TIMEOUT_NS = 4_000_000


class RwsemSemantics(enum.Enum):
    """Which kernel's rwsem rules a semaphore follows."""

    V4_19 = "4.19"  # kernel/locking/rwsem-xadd.c
    V5_3 = "5.3"  # kernel/locking/rwsem.c (d3681e269fff, 4f23dbc1e657)


class _RwsemWakeType(enum.Enum):
    """``enum rwsem_wake_type`` (``RWSEM_WAKE_READERS`` is not needed)."""

    ANY = "any"  # wake whatever is at the head of the queue
    READ_OWNED = "read_owned"  # the waker holds a read lock: readers only


class RwsemMisuse(KernelBug):
    """An rwsem used against its contract, e.g. released by a non-holder."""

    def __init__(self, sem: str, owner: str, what: str) -> None:
        self.sem = sem
        self.owner = owner
        super().__init__(f"rwsem {sem!r}: {owner!r} {what}")


@attrs.frozen(kw_only=True)
class RwsemWake:
    """One waiter to wake, as returned by a release.

    Attributes:
        owner: the waiter's name.
        write: True for a writer.
        granted: True if it now holds the sem (readers); False for a woken
            writer, which must call :meth:`RwSemaphore.down_write_retry`.
    """

    owner: str
    write: bool
    granted: bool


@attrs.define(kw_only=True)
class RwsemWaiter:
    """``struct rwsem_waiter``: one task on the wait list.

    Attributes:
        owner: the waiting task's name.
        write: ``RWSEM_WAITING_FOR_WRITE`` (True) or ``_FOR_READ``.
        queued_ns: when it first queued (v5.3 ``timeout`` minus 4 ms).
        woken: a writer that was woken and has not retried yet.
        seq: its place in the queue (arrival order across readers and writers).
    """

    owner: str
    write: bool
    queued_ns: int
    woken: bool = False
    seq: int = 0


@attrs.frozen(kw_only=True)
class RwsemStatistics:
    """A snapshot of one semaphore.

    Attributes:
        readers: read holders in first-acquire order, one entry per hold.
        writer: the write holder, if any.
        waiters: ``(owner, "R"|"W")`` in queue order.
        woken: the head writer that was woken and has not retried, if any.
        handoff: v5.3 ``RWSEM_FLAG_HANDOFF``.
        read_acquires, write_acquires: successful acquisitions, any path.
        contended: acquisitions that had to queue first.
        wait_total_ns, wait_max_ns: queue-to-acquire time of those.
        hold_max_ns: longest completed hold (acquire to release).
        read_steals: v5.3 readers that took a free lock ahead of a woken writer (``rwsem_rlock_steal``).
    """

    readers: tuple[str, ...]
    writer: str | None
    waiters: tuple[tuple[str, str], ...]
    woken: str | None
    handoff: bool
    read_acquires: int
    write_acquires: int
    contended: int
    wait_total_ns: int
    wait_max_ns: int
    hold_max_ns: int
    read_steals: int = 0


@typing.final
@attrs.define(eq=False, repr=False)
class RwSemaphore:
    """Emulated ``struct rw_semaphore`` (include/linux/rwsem.h).

    Args:
        name: stable name for reports, e.g. ``"mm1.mmap_sem"``.
        semantics: which kernel's rules to follow.
    """

    name: str
    semantics: RwsemSemantics = RwsemSemantics.V4_19
    # owner -> acquire times of its read holds (oldest first); insertion order.
    _readers: dict[str, list[int]] = attrs.field(init=False, factory=dict)
    _writer: str | None = attrs.field(init=False, default=None)
    _writer_since_ns: int = attrs.field(init=False, default=0)
    # The wait list, split by kind, each FIFO; ``seq`` orders the two into one queue.
    _wait_readers: collections.deque[RwsemWaiter] = attrs.field(init=False, factory=collections.deque)
    _wait_writers: collections.deque[RwsemWaiter] = attrs.field(init=False, factory=collections.deque)
    _waiting: set[str] = attrs.field(init=False, factory=set)
    _seq: int = attrs.field(init=False, default=0)
    _handoff: bool = attrs.field(init=False, default=False)
    _read_acquires: int = attrs.field(init=False, default=0)
    _read_steals: int = attrs.field(init=False, default=0)
    _write_acquires: int = attrs.field(init=False, default=0)
    _contended: int = attrs.field(init=False, default=0)
    _wait_total_ns: int = attrs.field(init=False, default=0)
    _wait_max_ns: int = attrs.field(init=False, default=0)
    _hold_max_ns: int = attrs.field(init=False, default=0)

    # ----------------------------------------------------------------- acquire

    def down_read_trylock(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``down_read_trylock()`` / ``__down_read_trylock()``.

        Succeeds only if no writer holds the sem and nobody waits.
        """
        waiting = self._waiting
        if owner in waiting:
            self._already_waiting(owner, "down_read_trylock")
        if self._writer is None and not waiting:
            self._grant_read(owner, now_ns, None)
            return True
        return False

    def down_read(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``down_read()`` / ``down_read_killable()``.

        Returns:
            True if acquired now; False if queued (v4.19
            ``rwsem_down_read_failed``, v5.3 ``rwsem_down_read_slowpath``): the
            caller parks until a release returns it as granted.
        """
        if self.down_read_trylock(owner, now_ns):
            return True
        if self.semantics is RwsemSemantics.V5_3 and self._writer is None and not self._readers and not self._handoff:
            self._read_steals += 1  # lockevent rwsem_rlock_steal: ahead of the woken writer at the head
            self._grant_read(owner, now_ns, None)
            return True
        self._enqueue(owner, False, now_ns)
        return False

    def down_write_trylock(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``down_write_trylock()`` / ``__down_write_trylock()``.

        Emulation notes:
            v4.19 x86 only tests the active mask, so it takes a free lock even
            with waiters queued; v5.3 cmpxchg()es from ``RWSEM_UNLOCKED_VALUE``
            and so fails whenever ``RWSEM_FLAG_WAITERS`` is set.
        """
        if owner in self._waiting:
            self._already_waiting(owner, "down_write_trylock")
        free = self._writer is None and not self._readers
        if free and (self.semantics is RwsemSemantics.V4_19 or not self._waiting):
            self._grant_write(owner, now_ns, None)
            return True
        return False

    def down_write(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``down_write()`` / ``down_write_killable()``.

        A free lock is taken even when others wait (optimistic spinning,
        ``rwsem_try_write_lock_unqueued``), except under v5.3 HANDOFF.

        Returns:
            True if acquired now; False if queued (``rwsem_down_write_failed``
            / ``rwsem_down_write_slowpath``).
        """
        if owner in self._waiting:
            self._already_waiting(owner, "down_write")
        if self._writer is None and not self._readers and not self._handoff:
            self._grant_write(owner, now_ns, None)
            return True
        self._enqueue(owner, True, now_ns)
        return False

    def down_write_retry(self, owner: str, now_ns: int) -> bool:
        """Mirror of ``rwsem_try_write_lock()`` run by a woken writer.

        Returns:
            True if it now holds the sem. False if a writer stole it first:
            it stays at the head, asleep until the next wake; under v5.3,
            after ``RWSEM_WAIT_TIMEOUT_NS`` of waiting, it sets HANDOFF.

        Raises:
            RwsemMisuse: *owner* is not the woken writer at the head.
        """
        head = self._head()
        if head is None or head.owner != owner or not head.woken:
            raise RwsemMisuse(self.name, owner, "retried down_write without being the woken head writer")
        if self._writer is None and not self._readers:
            self._wait_writers.popleft()
            self._waiting.discard(owner)
            self._handoff = False
            self._grant_write(owner, now_ns, head.queued_ns)
            return True
        head.woken = False
        if self._timed_out(head, now_ns):
            self._handoff = True
        return False

    # ----------------------------------------------------------------- release

    def up_read(self, owner: str, now_ns: int) -> list[RwsemWake]:
        """Mirror of ``up_read()``: wakes waiters only if the sem became free.

        Raises:
            RwsemMisuse: *owner* holds no read lock.
        """
        readers = self._readers
        holds = readers.get(owner)
        if not holds:
            raise RwsemMisuse(self.name, owner, f"called up_read without a read hold; holders: {self.holders()}")
        self._note_hold(now_ns - holds.pop(0))
        if not holds:
            del readers[owner]
        if readers or not self._waiting:
            return []
        return self._mark_wake(_RwsemWakeType.ANY, now_ns)

    def up_write(self, owner: str, now_ns: int) -> list[RwsemWake]:
        """Mirror of ``up_write()`` → ``rwsem_wake()``.

        Raises:
            RwsemMisuse: *owner* is not the write holder.
        """
        if self._writer != owner:
            raise RwsemMisuse(self.name, owner, f"called up_write without the write hold; holders: {self.holders()}")
        self._writer = None
        self._note_hold(now_ns - self._writer_since_ns)
        if not self._waiting:
            return []
        return self._mark_wake(_RwsemWakeType.ANY, now_ns)

    def downgrade_write(self, owner: str, now_ns: int) -> list[RwsemWake]:
        """Mirror of ``downgrade_write()`` → ``rwsem_downgrade_wake()``.

        The owner keeps a read hold (its hold time runs on from the write
        acquire); readers at the head are granted (``RWSEM_WAKE_READ_OWNED``).

        Raises:
            RwsemMisuse: *owner* is not the write holder.
        """
        if self._writer != owner:
            raise RwsemMisuse(self.name, owner, f"called downgrade_write without the write hold; holders: {self.holders()}")
        self._writer = None
        self._readers[owner] = [self._writer_since_ns]
        return self._mark_wake(_RwsemWakeType.READ_OWNED, now_ns)

    def cancel_wait(self, owner: str, now_ns: int) -> list[RwsemWake]:
        """Mirror of the ``out_nolock:`` exit of a killable slow path.

        A reader leaves quietly; a departing writer runs
        ``rwsem_mark_wake(RWSEM_WAKE_ANY)`` so readers it blocked are granted
        (or the next writer woken). A head writer takes HANDOFF with it.

        Raises:
            RwsemMisuse: *owner* is not waiting.
        """
        if owner not in self._waiting:
            raise RwsemMisuse(self.name, owner, "cancelled a wait it is not in")
        was_head = self._head()
        queue = self._wait_writers if any(w.owner == owner for w in self._wait_writers) else self._wait_readers
        waiter = next(w for w in queue if w.owner == owner)
        queue.remove(waiter)  # a rare exit (a fatal signal): the one O(queue) path
        self._waiting.discard(owner)
        if not self._waiting:
            self._handoff = False
            return []
        if not waiter.write:
            return []
        if waiter is was_head:
            self._handoff = False
        return self._mark_wake(_RwsemWakeType.ANY, now_ns)

    # ------------------------------------------------------------- inspection

    def holders(self) -> list[str]:
        """Current holders for hung-task reports, e.g. ``["t0 (read)"]``."""
        out = [f"{o} (read)" if len(t) == 1 else f"{o} (read x{len(t)})" for o, t in self._readers.items()]
        if self._writer is not None:
            out.append(f"{self._writer} (write)")
        return out

    def is_held_by(self, owner: str) -> str | None:
        """``"read"``, ``"write"`` or None (cf. ``lockdep_is_held``)."""
        if self._writer == owner:
            return "write"
        return "read" if owner in self._readers else None

    def statistics(self) -> RwsemStatistics:
        """Snapshot of holders, waiters and counters."""
        head = self._head()
        return RwsemStatistics(
            readers=tuple(o for o, t in self._readers.items() for _ in t),
            writer=self._writer,
            waiters=tuple((w.owner, "W" if w.write else "R") for w in self.wait_list()),
            woken=head.owner if head is not None and head.woken else None,
            handoff=self._handoff,
            read_acquires=self._read_acquires,
            write_acquires=self._write_acquires,
            contended=self._contended,
            wait_total_ns=self._wait_total_ns,
            wait_max_ns=self._wait_max_ns,
            hold_max_ns=self._hold_max_ns,
            read_steals=self._read_steals,
        )

    def wait_list(self) -> list[RwsemWaiter]:
        """The waiters in queue order (readers and writers merged by arrival)."""
        return list(heapq.merge(self._wait_readers, self._wait_writers, key=lambda w: w.seq))

    def first_waiting_writer(self) -> RwsemWaiter | None:
        """The writer nearest the head of the queue (the earliest queued), if any."""
        return self._wait_writers[0] if self._wait_writers else None

    def __repr__(self) -> str:
        waiters = [f"{w.owner}:{'W' if w.write else 'R'}{'*' if w.woken else ''}" for w in self.wait_list()]
        flag = " HANDOFF" if self._handoff else ""
        return f"<RwSemaphore {self.name} v{self.semantics.value}{flag} holders={self.holders()} waiters={waiters}>"

    # ---------------------------------------------------------------- helpers

    def _mark_wake(self, wake_type: _RwsemWakeType, now_ns: int) -> list[RwsemWake]:
        """Mirror of ``__rwsem_mark_wake()`` (v4.19) / ``rwsem_mark_wake()`` (v5.3).

        Emulation notes:
            The kernel walks its one list; with readers and writers queued
            apart, granting pops readers off the front of theirs (v4.19: those
            queued before the first writer; v5.3: the first 256), so a wake
            costs what it grants, not the length of the queue.
        """
        head = self._head()
        if head is None:
            return []
        if wake_type is _RwsemWakeType.ANY and not head.write and self._timed_out(head, now_ns):
            self._handoff = True  # v5.3 rwsem_mark_wake, for a reader at the head; a writer sets it itself (down_write_retry)
        if head.write:
            if head.woken or self._readers or self._writer is not None:
                return []
            head.woken = True
            return [RwsemWake(owner=head.owner, write=True, granted=False)]
        if self._writer is not None:  # a writer stole the lock
            return []
        readers = self._wait_readers
        if self.semantics is RwsemSemantics.V4_19:
            before = self._wait_writers[0].seq if self._wait_writers else None
            count = 0
            for waiter in readers:
                if before is not None and waiter.seq > before:
                    break
                count += 1
        else:
            count = min(len(readers), MAX_READERS_WAKEUP)
        granted = [readers.popleft() for _ in range(count)]
        self._handoff = False
        for waiter in granted:
            self._waiting.discard(waiter.owner)
            self._grant_read(waiter.owner, now_ns, waiter.queued_ns)
        return [RwsemWake(owner=w.owner, write=False, granted=True) for w in granted]

    def _head(self) -> RwsemWaiter | None:
        readers, writers = self._wait_readers, self._wait_writers
        if not readers:
            return writers[0] if writers else None
        if not writers or readers[0].seq < writers[0].seq:
            return readers[0]
        return writers[0]

    def _enqueue(self, owner: str, write: bool, now_ns: int) -> None:
        self._seq += 1
        waiter = RwsemWaiter(owner=owner, write=write, queued_ns=now_ns, seq=self._seq)
        (self._wait_writers if write else self._wait_readers).append(waiter)
        self._waiting.add(owner)

    def _timed_out(self, waiter: RwsemWaiter, now_ns: int) -> bool:
        return self.semantics is RwsemSemantics.V5_3 and now_ns - waiter.queued_ns >= RWSEM_WAIT_TIMEOUT_NS

    def _already_waiting(self, owner: str, what: str) -> typing.NoReturn:
        raise RwsemMisuse(self.name, owner, f"called {what} while already on the wait list")

    def _grant_read(self, owner: str, now_ns: int, queued_ns: int | None) -> None:
        """*owner* takes a read hold; *queued_ns* is when it queued (``None``: it did not)."""
        holds = self._readers.get(owner)
        if holds is None:
            self._readers[owner] = [now_ns]
        else:
            holds.append(now_ns)
        self._read_acquires += 1
        if queued_ns is not None:
            self._note_wait(now_ns, queued_ns)

    def _grant_write(self, owner: str, now_ns: int, queued_ns: int | None) -> None:
        """*owner* takes the write hold; *queued_ns* as for ``_grant_read``."""
        self._writer = owner
        self._writer_since_ns = now_ns
        self._write_acquires += 1
        if queued_ns is not None:
            self._note_wait(now_ns, queued_ns)

    def _note_wait(self, now_ns: int, queued_ns: int) -> None:
        self._contended += 1
        self._wait_total_ns += now_ns - queued_ns
        self._wait_max_ns = max(self._wait_max_ns, now_ns - queued_ns)

    def _note_hold(self, hold_ns: int) -> None:
        self._hold_max_ns = max(self._hold_max_ns, hold_ns)
