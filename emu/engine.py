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
  without a Trio switch at all. Every actor, spawned before the run or
  during it, is started as a Trio task only when its start entry comes up,
  holding the baton (an actor that never reaches its start costs no task).

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

Same-instant fast path: in canonical runs (no tie seed) an entry due *now*
goes on a FIFO deque instead of the heap. Heap entries due now were pushed
before time reached now, so they carry smaller sequence numbers than anything
on the deque; popping heap-entries-due-now first and then the deque is exactly
``(time_ns, 0, seq)`` order, without a heap operation per message.

The baton, fast: the engine sends a constant ``_BATON`` into the parked
coroutine (the resume value travels in ``Actor._value``) through Trio's own
``WaitTaskRescheduled`` trap and ``Runner.reschedule``, so a switch allocates
no ``outcome.Value`` and no extra coroutine frames. These are Trio internals
(stable for years); if they are missing the engine uses the public
``trio.lowlevel`` pair instead, with identical scheduling.

The direct driver (``Engine(driver="direct")``) runs the same actor
coroutines without Trio: ``park`` yields the next actor to a plain loop that
``send``s the baton into that actor's coroutine. Order comes from the same
heap, so both drivers produce the same trace digest; teardown closes
unfinished coroutines.

Not here: any kernel vocabulary. Actors see the engine through ``Actor``
(``emu.actor``) and ``WaitQueue`` (``emu.waitqueue``).
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from heapq import heappop, heappush
from typing import Any, Final

import attrs
import outcome
import trio

from emu.actor import DELIVER, Actor
from emu.errors import ActorCrashed, HungTaskError, LivelockError
from emu.rng import Streams
from emu.trace import Trace

# Entry kinds, stored where a resume keeps its generation number (negative; wait numbers are not).
_CALLBACK: Final = -1

#: Larger than any virtual time a run reaches (int, so comparisons stay int/int).
_NO_LIMIT: Final = 1 << 126


class _Baton:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<baton>"


#: What the engine sends into a parked actor; the value rides in ``Actor._value``.
_BATON: Final = _Baton()


def _abort(_raise_cancel: object) -> trio.lowlevel.Abort:
    # Parked actors may be cancelled at teardown; nothing to undo.
    return trio.lowlevel.Abort.SUCCEEDED


try:  # Trio's own trap message and run context (internal, see the header).
    from trio._core._run import GLOBAL_RUN_CONTEXT as _RUN_CONTEXT
    from trio._core._traps import WaitTaskRescheduled as _WaitTaskRescheduled

    _WAIT: Any = _WaitTaskRescheduled(_abort)
except ImportError:  # pragma: no cover - depends on the installed Trio
    _RUN_CONTEXT = None
    _WAIT = None


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


#: The engine drivers (``Engine(driver=...)``); they give the same traces.
DRIVERS = ("trio", "direct")


class Engine:
    """A deterministic discrete-event engine whose processes are Trio tasks.

    Args:
        seed: the run's seed; every random stream derives from it.
        tie_seed: ``None`` for canonical order; otherwise same-instant events
            are ordered by draws from a stream seeded with it.
        horizon_ns: stop once the next event lies beyond this virtual time.
        max_steps: heap entries to process before declaring a livelock.
        trace: where records go; a fresh in-memory ``Trace`` by default.
        driver: ``"trio"`` (actors are Trio tasks in one nursery) or
            ``"direct"`` (the engine steps the same actor coroutines itself,
            no Trio; several times faster, same order, same digest).

    Attributes:
        tasks: the Trio tasks this engine runs (its main task and one per
            started actor), task → name. Emptied when teardown starts. Read by
            ``emu.testing.OneRunnable``; nothing else should need it.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tie_seed: int | None = None,
        horizon_ns: int | None = None,
        max_steps: int | None = None,
        trace: Trace | None = None,
        driver: str = "trio",
    ) -> None:
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {', '.join(map(repr, DRIVERS))}, not {driver!r}")
        self.driver = driver
        self._direct = driver == "direct"
        self.now_ns = 0
        self.seed = seed
        self.tie_seed = tie_seed
        self.horizon_ns = _NO_LIMIT if horizon_ns is None else horizon_ns
        self.max_steps = _NO_LIMIT if max_steps is None else max_steps
        self.streams = Streams(seed)
        self.trace = Trace() if trace is None else trace
        self.steps = 0
        self.actors: list[Actor] = []
        self.tasks: dict[trio.lowlevel.Task, str] = {}
        self._names: set[str] = set()
        self._heap: list[tuple[int, int, int, Any, int, Any]] = []
        self._now_q: deque[tuple[Any, int, Any]] = deque()
        self._seq = 0
        self._tie = None if tie_seed is None else Streams(tie_seed).get("engine", "tie")
        # Same-instant FIFO fast path, canonical runs only (see the header).
        self._fast_now = tie_seed is None
        # Trio's internal trap (see the header); tests may turn it off.
        self._fast_trio = _WAIT is not None and not self._direct
        self._reschedule: Callable[..., None] = trio.lowlevel.reschedule
        self._live = 0
        self._started = False
        self._reason: str | None = None
        self._error: BaseException | None = None
        self._main_task: trio.lowlevel.Task | None = None
        self._main_woken = False
        self._nursery: trio.Nursery | None = None
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
        actor (a server loop) does not keep the run alive. An actor spawned
        during the run starts (as a Trio task) when its start entry comes up.
        """
        if name in self._names:
            raise ValueError(f"an actor named {name!r} already exists")
        actor = Actor(self, name, fn, args, daemon=daemon)
        self._names.add(name)
        self.actors.append(actor)
        if not daemon:
            self._live += 1
        self.schedule(self.now_ns, actor, actor._gen, None)
        return actor

    def call_at(self, time_ns: int, fn: Callable[..., object], *args: object) -> None:
        """Run the plain function ``fn(*args)`` at virtual *time_ns*.

        The function runs on the engine's baton, between actor steps, and must
        not block; use it for timers (``mod_timer``) and interrupts.
        """
        self.schedule(time_ns, None, _CALLBACK, (fn, args))

    def call_later(self, delay_ns: int, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` *delay_ns* from now (see ``call_at``)."""
        self.schedule(self.now_ns + delay_ns, None, _CALLBACK, (fn, args))

    # -- running ----------------------------------------------------------

    def run(self) -> RunStats:
        """Run to the end (in a fresh ``trio.run`` with the Trio driver); return how it ended."""
        if self._direct:
            return self._run_direct()
        return trio.run(self.run_async)

    async def run_async(self) -> RunStats:
        """Run to the end inside an existing Trio run (the direct driver just runs)."""
        if self._direct:
            return self._run_direct()
        if self._started:
            raise RuntimeError("an Engine runs once")
        self._started = True
        if self._fast_trio:
            self._reschedule = _RUN_CONTEXT.runner.reschedule
        self._main_task = trio.lowlevel.current_task()
        self.tasks[self._main_task] = "<engine>"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._handoff(self._next())  # each actor's Trio task starts when its start entry comes up
                if self._reason is None:
                    await self._wait_baton()
                self.tasks.clear()  # teardown: cancelled tasks wake together
                nursery.cancel_scope.cancel()
        finally:
            self.tasks.clear()
        return self._stats()

    def _stats(self) -> RunStats:
        if self._error is not None:
            raise self._error
        return RunStats(
            reason=self._reason or "finished",
            now_ns=self.now_ns,
            steps=self.steps,
            events=self.trace.count,
            trace_digest=self.trace.digest(),
        )

    async def _actor_main(self, actor: Actor) -> None:
        """The Trio task of *actor*, started holding the baton when its start entry comes up."""
        task = trio.lowlevel.current_task()
        actor._task = task
        self.tasks[task] = actor.name
        try:
            await self._run_fn(actor)
        except trio.Cancelled as cancelled:
            # Teardown. Its traceback would keep the actor's whole stack in a reference
            # cycle (frames, outcomes, nursery state: ~35 objects an actor, one full
            # collection of them at the end of a large run); without it they free at once.
            cancelled.__traceback__ = None
            raise
        self.tasks.pop(task, None)
        self._handoff(None if self._reason is not None else self._next())

    # -- the direct driver ------------------------------------------------

    def _run_direct(self) -> RunStats:
        """Step the actor coroutines in engine order, without Trio.

        The same ``park`` yields to this loop instead of to Trio. Each actor's
        coroutine is created when its start entry comes up (so actors still
        start one at a time, in spawn order). At the end, unfinished
        coroutines are closed (``GeneratorExit`` at their ``await``), which
        runs their ``finally`` blocks and cannot hang.
        """
        if self._started:
            raise RuntimeError("an Engine runs once")
        self._started = True
        try:
            actor = self._next()
            while actor is not None:
                coro = actor._task
                try:
                    if coro is None:
                        actor._task = coro = self._actor_body(actor)
                        actor = coro.send(None)
                    else:
                        actor = coro.send(_BATON)
                except StopIteration as stop:
                    actor = stop.value
        finally:
            for actor in self.actors:
                if actor._task is not None:
                    actor._task.close()
        return self._stats()

    async def _run_fn(self, actor: Actor) -> None:
        """Run the actor's code; record how it ended (both drivers)."""
        try:
            await actor.fn(actor, *actor.args)
        except (trio.Cancelled, GeneratorExit):  # teardown: the Trio nursery, or closing the coroutine
            raise
        except BaseException as error:  # any other exception is an emulator bug
            self._fail(ActorCrashed(actor.name, self.now_ns, error), error)
        else:
            actor.finished = True
            if not actor.daemon:
                self._live -= 1
                if self._live == 0:
                    self._end("finished")
        actor.waiting = None

    async def _actor_body(self, actor: Actor) -> Actor | None:
        """The direct driver's coroutine of *actor*; returns the actor to run next (``None``: the run is over)."""
        await self._run_fn(actor)
        return None if self._reason is not None else self._next()

    # -- the baton --------------------------------------------------------

    @types.coroutine
    def _wait_baton(self) -> Generator[Any, Any, None]:
        """Park the current Trio task until the engine hands it the baton."""
        if self._fast_trio:
            msg = yield _WAIT
            if msg is not _BATON:
                msg.unwrap()  # teardown's Cancelled (or an interrupt)
        else:
            yield from trio.lowlevel.wait_task_rescheduled(_abort).__await__()

    @types.coroutine
    def park(self, actor: Actor) -> Generator[Any, Any, Any]:
        """Block *actor* (the running one) until an entry resumes it.

        The caller registered its wake-up sources with ``actor._gen`` first.
        Returns the value the resume carries. (A generator-based coroutine:
        ``await engine.park(actor)`` costs one frame, not three.)
        """
        if self._reason is None:
            nxt = self._next()
            if nxt is actor:
                return actor._value
            if self._direct:
                yield nxt  # the direct loop runs it (None: the run is over), then sends the baton back here
                return actor._value
            # _handoff's common cases, inlined
            if self._fast_trio and nxt is not None and nxt._task is not None:
                self._reschedule(nxt._task, _BATON)
            else:
                self._handoff(nxt)
        elif self._direct:
            yield None  # the run is over: the direct loop stops, and teardown closes us here
            return actor._value
        # Parked; if the run is over, teardown cancels us here.
        if self._fast_trio:
            msg = yield _WAIT
            if msg is not _BATON:
                msg.unwrap()  # teardown's Cancelled (or an interrupt)
        else:
            yield from trio.lowlevel.wait_task_rescheduled(_abort).__await__()
        return actor._value

    def _handoff(self, actor: Actor | None) -> None:
        """Make *actor* (resumed by ``_next``) runnable, or end the run if ``None`` (the Trio driver)."""
        if actor is None:
            # The run is over: wake the main task, which tears down.
            main = self._main_task
            if main is not None and not self._main_woken and main is not trio.lowlevel.current_task():
                self._main_woken = True
                self._reschedule(main, _BATON if self._fast_trio else outcome.Value(None))
            return
        task = actor._task
        if task is None:
            # Its start entry: its Trio task starts now, holding the baton.
            self._nursery.start_soon(self._actor_main, actor, name=actor.name)
        elif self._fast_trio:
            self._reschedule(task, _BATON)
        else:
            self._reschedule(task, outcome.Value(None))

    def _next(self) -> Actor | None:
        """Pop entries until one resumes an actor; ``None`` if the run ended.

        The resumed actor gets its value in ``_value``, stops waiting and
        becomes ``current``.
        """
        heap = self._heap
        now_q = self._now_q
        while True:
            if heap and (not now_q or heap[0][0] == self.now_ns):
                if heap[0][0] > self.horizon_ns:
                    self._end("horizon")
                    return None
                time_ns, _tie, _seq, actor, gen, value = heappop(heap)
                self.now_ns = time_ns
            elif now_q:
                actor, gen, value = now_q.popleft()
            else:
                break
            steps = self.steps = self.steps + 1
            if steps > self.max_steps:
                self.steps = steps - 1
                self._fail(LivelockError(self.now_ns, steps - 1, self.blocked_report()))
                return None
            if gen >= 0:  # a resume, the common entry (the kinds are negative)
                if gen != actor._gen or actor.waiting is None:
                    continue  # stale: that wait already ended another way
            elif gen == _CALLBACK:
                fn, args = value
                try:
                    fn(*args)
                except BaseException as error:
                    self._fail(ActorCrashed(getattr(fn, "__qualname__", "callback"), self.now_ns, error), error)
                    return None
                if self._reason is not None:
                    return None
                continue
            else:  # DELIVER
                mailbox = actor.mailbox
                mailbox.append(value)
                if not actor.receiving:
                    continue
                actor.receiving = False
                value = mailbox.popleft()
            actor._value = value
            actor.waiting = None
            self.current = actor
            return actor
        if self._live > 0:
            self._fail(HungTaskError(self.now_ns, self.blocked_report()))
        else:
            self._end("finished")
        return None

    def schedule(self, time_ns: int, actor: Actor | None, gen: int, value: Any) -> None:
        """Queue an entry: at *time_ns* (now if earlier), end *actor*'s wait *gen* with *value*.

        The one way anything becomes runnable; ``emu.actor`` uses it for
        sleeps, deliveries and replies. *gen* is the wait's number, or
        ``DELIVER`` for a mailbox delivery (*value* is the ``Envelope``).
        """
        if time_ns <= self.now_ns:
            if self._fast_now:
                self._now_q.append((actor, gen, value))
                return
            time_ns = self.now_ns
        self._seq = seq = self._seq + 1
        tie = 0 if self._tie is None else self._tie.getrandbits(32)
        heappush(self._heap, (time_ns, tie, seq, actor, gen, value))

    def resume(self, actor: Actor, gen: int, value: Any = None, *, delay_ns: int = 0) -> None:
        """Schedule the end of *actor*'s wait number *gen*, carrying *value*."""
        self.schedule(self.now_ns + delay_ns, actor, gen, value)

    def deliver(self, actor: Actor, message: Any, *, delay_ns: int = 0) -> None:
        """Schedule the arrival of *message* in *actor*'s mailbox."""
        self.schedule(self.now_ns + delay_ns, actor, DELIVER, message)

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
