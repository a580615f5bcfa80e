"""Actors: the processes of the engine, with a mailbox and a logger.

An actor is a coroutine function ``fn(actor, *args)`` run as a Trio task. It
sees the world only through this object:

* ``await actor.sleep(ns)`` / ``sleep_until(t)``: virtual time passes;
* ``actor.send(dst, msg)``: cast a message, delivered now (or after a delay);
* ``await actor.receive()``: the next ``Envelope`` from its mailbox;
* ``await actor.call(dst, msg)``: send and wait for ``reply()``;
* ``emu.WaitQueue``: park until a state machine wakes it by key;
* ``actor.log``: a structlog bound logger writing to the run's trace;
* ``actor.rng(purpose)``: its own named random stream.

Every blocking method ends in ``Engine.park``; nothing here imports Trio, so
actor code never does either. ``sleep``, ``sleep_until``, ``wait`` and
``call`` are plain methods that do their bookkeeping at the call and return
``Engine.park``'s awaitable: ``await actor.sleep(ns)`` reads the same, and
each switch passes through one coroutine frame fewer. Await them at once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from emu.trace import bind_logger

if TYPE_CHECKING:
    from emu.engine import Engine

#: What an actor waits on: a description and, if known, who holds it.
Waiting = tuple[str, Callable[[], list[str]] | None]

#: ``Engine.schedule``'s *gen* for a mailbox delivery (not a wait number).
DELIVER = -2

_SLEEP: Waiting = ("sleep", None)
_RECEIVE: Waiting = ("receive", None)


class Envelope:
    """A message in flight: routing data around the payload.

    A plain slotted class rather than an attrs one: one is built per message,
    on the engine's hottest path. Treat it as immutable.

    Attributes:
        src: the sending actor.
        msg: the payload (a frozen attrs message class).
        reply_gen: the sender's wait number when it used ``call``; ``None``
            for a cast.
    """

    __slots__ = ("src", "msg", "reply_gen")

    def __init__(self, src: Actor, msg: Any, reply_gen: int | None = None) -> None:
        self.src = src
        self.msg = msg
        self.reply_gen = reply_gen

    def __repr__(self) -> str:
        return f"Envelope(src={self.src!r}, msg={self.msg!r}, reply_gen={self.reply_gen!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Envelope:
            return NotImplemented
        return (self.src, self.msg, self.reply_gen) == (other.src, other.msg, other.reply_gen)

    __hash__ = None  # type: ignore[assignment]


class Actor:
    """One process of the engine. Built by ``Engine.spawn``, never by hand."""

    __slots__ = (
        "engine",
        "name",
        "fn",
        "args",
        "daemon",
        "mailbox",
        "receiving",
        "waiting",
        "finished",
        "log",
        "_gen",
        "_task",
        "_value",
        "_called",
    )

    def __init__(self, engine: Engine, name: str, fn: Callable[..., Any], args: tuple, *, daemon: bool) -> None:
        self.engine = engine
        self.name = name
        self.fn = fn
        self.args = args
        self.daemon = daemon
        self.mailbox: deque[Envelope] = deque()
        self.receiving = False
        self.waiting: Waiting | None = ("start", None)
        self.finished = False
        self.log = bind_logger(engine, engine.trace, actor=name)
        self._gen = 0
        self._task: Any = None
        self._value: Any = None  # the value of the resume that ended the last wait
        self._called: Waiting = (f"call {name}", None)  # what a caller of this actor waits on

    def __repr__(self) -> str:
        return f"<Actor {self.name}>"

    @property
    def now_ns(self) -> int:
        """The engine's virtual time."""
        return self.engine.now_ns

    def rng(self, purpose: str) -> random.Random:
        """This actor's random stream for *purpose* (independent of all others)."""
        return self.engine.streams.get(self.name, purpose)

    # -- waiting ----------------------------------------------------------

    def prepare_wait(self, what: str, holders: Callable[[], list[str]] | None = None) -> int:
        """Start a new wait; return its number for the wake-up sources.

        The caller registers the number with whatever will wake it, then
        ``await actor.wait()``. Used by ``WaitQueue`` and by killable waits
        that can end two ways (the loser's resume is dropped as stale).
        """
        self._gen += 1
        self.waiting = (what, holders)
        return self._gen

    def wait(self) -> Awaitable[Any]:
        """Park until the wait prepared last is resumed; await it at once for its value."""
        return self.engine.park(self)

    def sleep(self, ns: int) -> Awaitable[None]:
        """Let *ns* nanoseconds of virtual time pass (0 yields to same-instant events); await it at once."""
        self._gen = gen = self._gen + 1
        self.waiting = _SLEEP
        engine = self.engine
        engine.schedule(engine.now_ns + ns, self, gen, None)
        return engine.park(self)

    def sleep_until(self, time_ns: int) -> Awaitable[None]:
        """Sleep until virtual *time_ns* (at once if it has passed); await it at once."""
        return self.sleep(max(0, time_ns - self.engine.now_ns))

    # -- messages ---------------------------------------------------------

    def send(self, dst: Actor, msg: Any, *, delay_ns: int = 0) -> None:
        """Cast *msg* to *dst*; it arrives now, or after *delay_ns*."""
        engine = self.engine
        engine.schedule(engine.now_ns + delay_ns, dst, DELIVER, Envelope(self, msg))

    async def receive(self) -> Envelope:
        """The next envelope in the mailbox, waiting for one if it is empty."""
        mailbox = self.mailbox
        if mailbox:
            return mailbox.popleft()
        self._gen += 1
        self.receiving = True
        self.waiting = _RECEIVE
        return await self.engine.park(self)

    def call(self, dst: Actor, msg: Any) -> Awaitable[Any]:
        """Send *msg* to *dst* and wait for its ``reply``; await it at once for the reply value."""
        self._gen = gen = self._gen + 1
        self.waiting = dst._called
        engine = self.engine
        engine.schedule(engine.now_ns, dst, DELIVER, Envelope(self, msg, gen))
        return engine.park(self)

    def reply(self, envelope: Envelope, value: Any = None, *, delay_ns: int = 0) -> None:
        """Answer a ``call``: resume its sender with *value*."""
        if envelope.reply_gen is None:
            raise ValueError(f"{self.name}: reply to a cast from {envelope.src.name}")
        engine = self.engine
        engine.schedule(engine.now_ns + delay_ns, envelope.src, envelope.reply_gen, value)
