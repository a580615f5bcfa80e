"""Wait queues: parked actors that a state machine wakes in the order it chooses.

The kernel's sleeping locks and page waits keep their own queues and decide
whom to wake (an rw_semaphore wakes the head writer, or the readers at the
head). Here the sans-IO state machine makes that decision and the caller
wakes those waiters by key, one heap entry each, in that order, so a batch
wake-up is as deterministic as a single one.

A ``WaitQueue`` also tells the hung-task report what a blocked actor waits on
(its name) and who holds it (the ``holders`` callable).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emu.actor import Actor
    from emu.engine import Engine


class WaitQueue:
    """Actors parked until woken by key.

    Args:
        engine: the engine whose heap the wake-ups go on.
        name: what waiters wait on, as the hung-task report prints it.
        holders: returns the names of whoever holds the resource now.
    """

    __slots__ = ("engine", "name", "holders", "_waiters")

    def __init__(self, engine: Engine, name: str, holders: Callable[[], list[str]] | None = None) -> None:
        self.engine = engine
        self.name = name
        self.holders = holders
        self._waiters: dict[Hashable, tuple[Actor, int]] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiters

    def __iter__(self) -> Iterator[Hashable]:
        """Waiter keys in arrival order (a snapshot: waking while iterating is safe)."""
        return iter(list(self._waiters))

    def first(self) -> Hashable | None:
        """The longest-waiting key, or ``None`` if nobody waits; O(1), unlike a walk of the snapshot."""
        return next(iter(self._waiters), None)

    async def wait(self, actor: Actor, key: Hashable | None = None) -> Any:
        """Park *actor* under *key* (default: the actor) until woken; return the wake value.

        If something else ended the wait (a killable wait hit by a signal),
        the entry is removed on the way out.
        """
        key = actor if key is None else key
        if key in self._waiters:
            raise ValueError(f"{self.name}: key {key!r} is already waiting")
        self._waiters[key] = (actor, actor.prepare_wait(self.name, self.holders))
        try:
            return await actor.wait()
        finally:
            self._waiters.pop(key, None)

    def wake(self, key: Hashable, value: Any = None, *, delay_ns: int = 0) -> bool:
        """Wake the waiter registered under *key*; ``False`` if there is none."""
        entry = self._waiters.pop(key, None)
        if entry is None:
            return False
        actor, gen = entry
        self.engine.resume(actor, gen, value, delay_ns=delay_ns)
        return True

    def wake_all(self, value: Any = None) -> int:
        """Wake every waiter, in arrival order; return how many."""
        keys = list(self._waiters)
        for key in keys:
            self.wake(key, value)
        return len(keys)
