"""The engine: virtual time, one event heap, and a baton passed between actors.

Theory of operation
-------------------

Trio runs the actors: each is a Trio task in one nursery, so Trio gives us
lifetimes, cancellation and exception propagation. Trio does *not* decide who
runs next. It shuffles same-batch tasks, breaks deadline ties by address and
wakes ``trio.Event`` waiters in set order, so the engine keeps the order
itself, as a discrete-event simulator does:

* one heap of entries keyed ``(time_ns, tie, seq)``: ``seq`` is a global
  counter, ``tie`` is 0 in canonical runs and drawn from the tie stream when a
  tie seed perturbs same-instant order;
* exactly one actor is runnable at any instant. An actor that blocks (sleep,
  receive, call, wait queue) pops the next entry itself and hands the baton to
  that entry's actor with ``trio.lowlevel.reschedule``, then parks in
  ``wait_task_rescheduled``. If the next entry is its own, it continues
  without a Trio switch at all.

::

    actor A ── park ──▶ pop heap ──▶ entry for B ──▶ reschedule(B) ──▶ A parks
                                 └─▶ entry for A ──▶ A continues (no switch)
                                 └─▶ callback    ──▶ run it, pop again
                                 └─▶ empty       ──▶ hung-task report / end

Heap entries resume an actor with a value (timers, wake-ups, replies),
deliver a message to a mailbox (which resumes the receiver if it waits), or
run a plain callback (timer functions that do not sleep). Every resume
carries the *generation* of the wait it ends; a stale resume (a timer that
lost a race with a wake-up) is dropped.

A run ends when every non-daemon actor has returned, when the next event lies
beyond the horizon, or with an error: ``HungTaskError`` when nothing is
runnable and no timer is pending but actors are blocked (the report names
each, what it waits on and who holds it), ``LivelockError`` when the step
budget runs out, ``ActorCrashed`` when actor code raises. Teardown cancels the
parked actors; nothing hangs.

Not here: any kernel vocabulary. Actors see the engine through ``Actor``
(``emu.actor``) and ``WaitQueue`` (``emu.waitqueue``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Coroutine
from typing import Any, Final

import attrs
import outcome
import trio

from emu.actor import Actor
from emu.errors import ActorCrashed, HungTaskError, LivelockError
from emu.rng import Streams
from emu.trace import Trace

# Entry kinds, stored where a resume keeps its generation number.
_CALLBACK: Final = -1
_DELIVER: Final = -2


def _abort(_raise_cancel: object) -> trio.lowlevel.Abort:
    # Parked actors may be cancelled at teardown; nothing to undo.
    return trio.lowlevel.Abort.SUCCEEDED


@attrs.frozen(kw_only=True)
class RunStats:
    """How a run ended.

    Attributes:
        reason: ``"finished"`` (every non-daemon actor returned) or
            ``"horizon"`` (the next event lay beyond the horizon).
        now_ns: virtual time at the end.
        steps: heap entries processed.
        events: trace records written.
        trace_digest: BLAKE2b over the canonical trace: the run's identity.
    """

    reason: str
    now_ns: int
    steps: int
    events: int
    trace_digest: str


class Engine:
    """A deterministic discrete-event engine whose processes are Trio tasks.

    Args:
        seed: the run's seed; every random stream derives from it.
        tie_seed: ``None`` for canonical order; otherwise same-instant events
            are ordered by draws from a stream seeded with it.
        horizon_ns: stop once the next event lies beyond this virtual time.
        max_steps: heap entries to process before declaring a livelock.
        trace: where records go; a fresh in-memory ``Trace`` by default.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tie_seed: int | None = None,
        horizon_ns: int | None = None,
        max_steps: int | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.now_ns = 0
        self.seed = seed
        self.tie_seed = tie_seed
        self.horizon_ns = math.inf if horizon_ns is None else horizon_ns
        self.max_steps = math.inf if max_steps is None else max_steps
        self.streams = Streams(seed)
        self.trace = Trace() if trace is None else trace
        self.steps = 0
        self.actors: list[Actor] = []
        self._heap: list[tuple[int, int, int, Any, int, Any]] = []
        self._seq = 0
        self._tie = None if tie_seed is None else Streams(tie_seed).get("engine", "tie")
        self._live = 0
        self._started = False
        self._reason: str | None = None
        self._error: BaseException | None = None
        self._main_task: trio.lowlevel.Task | None = None
        self._main_woken = False
        self.current: Actor | None = None

    # -- building ---------------------------------------------------------

    def spawn(
        self,
        name: str,
        fn: Callable[..., Coroutine[Any, Any, object]],
        *args: object,
        daemon: bool = False,
    ) -> Actor:
        """Create an actor that will run ``fn(actor, *args)``.

        Actors start in spawn order at the current virtual time. A daemon
        actor (a server loop) does not keep the run alive.
        """
        if any(actor.name == name for actor in self.actors):
            raise ValueError(f"an actor named {name!r} already exists")
        actor = Actor(self, name, fn, args, daemon=daemon)
        self.actors.append(actor)
        if not daemon:
            self._live += 1
        self._push(self.now_ns, actor, actor._gen, None)
        if self._started:
            self._nursery.start_soon(self._actor_main, actor, name=name)
        return actor

    def call_at(self, time_ns: int, fn: Callable[..., object], *args: object) -> None:
        """Run the plain function ``fn(*args)`` at virtual *time_ns*.

        The function runs on the engine's baton, between actor steps, and must
        not block; use it for timers (``mod_timer``) and interrupts.
        """
        self._push(max(time_ns, self.now_ns), None, _CALLBACK, (fn, args))

    def call_later(self, delay_ns: int, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` *delay_ns* from now (see ``call_at``)."""
        self.call_at(self.now_ns + delay_ns, fn, *args)

    # -- running ----------------------------------------------------------

    def run(self) -> RunStats:
        """Run to the end in a fresh ``trio.run``; return how it ended."""
        return trio.run(self.run_async)

    async def run_async(self) -> RunStats:
        """Run to the end inside an existing Trio run."""
        if self._started:
            raise RuntimeError("an Engine runs once")
        self._started = True
        self._main_task = trio.lowlevel.current_task()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for actor in list(self.actors):
                await nursery.start(self._actor_main, actor, name=actor.name)
            self._handoff(self._next())
            if self._reason is None:
                await trio.lowlevel.wait_task_rescheduled(_abort)
            nursery.cancel_scope.cancel()
        if self._error is not None:
            raise self._error
        return RunStats(
            reason=self._reason or "finished",
            now_ns=self.now_ns,
            steps=self.steps,
            events=self.trace.count,
            trace_digest=self.trace.digest(),
        )

    async def _actor_main(self, actor: Actor, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        actor._task = trio.lowlevel.current_task()
        task_status.started()
        await trio.lowlevel.wait_task_rescheduled(_abort)
        try:
            await actor.fn(actor, *actor.args)
        except trio.Cancelled:
            raise
        except BaseException as error:  # any other exception is an emulator bug
            self._fail(ActorCrashed(actor.name, self.now_ns, error), error)
        else:
            actor.finished = True
            if not actor.daemon:
                self._live -= 1
                if self._live == 0:
                    self._end("finished")
        self._handoff(None if self._reason is not None else self._next())

    # -- the baton --------------------------------------------------------

    async def park(self, actor: Actor) -> Any:
        """Block *actor* (the running one) until an entry resumes it.

        The caller registered its wake-up sources with ``actor._gen`` first.
        Returns the value the resume carries.
        """
        if self._reason is not None:
            # The run is over; wait to be cancelled by teardown.
            return await trio.lowlevel.wait_task_rescheduled(_abort)
        nxt = self._next()
        if nxt is not None and nxt[0] is actor:
            actor.waiting = None
            return nxt[1]
        self._handoff(nxt)
        return await trio.lowlevel.wait_task_rescheduled(_abort)

    def _handoff(self, nxt: tuple[Actor, Any] | None) -> None:
        """Make the resumed actor of *nxt* runnable, or end the run if ``None``."""
        if nxt is None:
            # The run is over: wake the main task, which tears down.
            main = self._main_task
            if main is not None and not self._main_woken and main is not trio.lowlevel.current_task():
                self._main_woken = True
                trio.lowlevel.reschedule(main, outcome.Value(None))
            return
        actor, value = nxt
        actor.waiting = None
        self.current = actor
        trio.lowlevel.reschedule(actor._task, outcome.Value(value))

    def _next(self) -> tuple[Actor, Any] | None:
        """Pop entries until one resumes an actor; ``None`` if the run ended."""
        heap = self._heap
        pop = heapq.heappop
        while heap:
            if heap[0][0] > self.horizon_ns:
                self._end("horizon")
                return None
            time_ns, _tie, _seq, actor, gen, value = pop(heap)
            self.now_ns = time_ns
            self.steps += 1
            if self.steps > self.max_steps:
                self._fail(LivelockError(self.now_ns, self.steps - 1, self.blocked_report()))
                return None
            if gen == _CALLBACK:
                fn, args = value
                try:
                    fn(*args)
                except BaseException as error:
                    self._fail(ActorCrashed(getattr(fn, "__qualname__", "callback"), self.now_ns, error), error)
                    return None
                if self._reason is not None:
                    return None
                continue
            if gen == _DELIVER:
                actor.mailbox.append(value)
                if actor.receiving:
                    actor.receiving = False
                    return actor, actor.mailbox.popleft()
                continue
            if gen == actor._gen and actor.waiting is not None:
                return actor, value
            # stale: that wait already ended another way
        if self._live > 0:
            self._fail(HungTaskError(self.now_ns, self.blocked_report()))
        else:
            self._end("finished")
        return None

    def _push(self, time_ns: int, actor: Actor | None, gen: int, value: Any) -> None:
        self._seq += 1
        tie = 0 if self._tie is None else self._tie.getrandbits(32)
        heapq.heappush(self._heap, (time_ns, tie, self._seq, actor, gen, value))

    def resume(self, actor: Actor, gen: int, value: Any = None, *, delay_ns: int = 0) -> None:
        """Schedule the end of *actor*'s wait number *gen*, carrying *value*."""
        self._push(self.now_ns + delay_ns, actor, gen, value)

    def deliver(self, actor: Actor, message: Any, *, delay_ns: int = 0) -> None:
        """Schedule the arrival of *message* in *actor*'s mailbox."""
        self._push(self.now_ns + delay_ns, actor, _DELIVER, message)

    # -- ending -----------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason

    def _fail(self, error: BaseException, cause: BaseException | None = None) -> None:
        if self._error is None:
            if cause is not None:
                error.__cause__ = cause
            self._error = error
        self._end("error")

    def blocked_report(self) -> list[str]:
        """One line per actor that is blocked: what it waits on and who holds it."""
        lines = []
        for actor in self.actors:
            if actor.finished or actor.waiting is None:
                continue
            what, holders = actor.waiting
            if what == "receive" and actor.daemon:
                continue
            line = f"{actor.name}: waiting on {what}"
            if holders is not None:
                held_by = holders()
                line += f" held by {', '.join(held_by)}" if held_by else " (no holder)"
            lines.append(line)
        return lines
