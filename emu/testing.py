"""Test support: prove the one-runnable rule, run engines checked, capture traces.

The engine promises that exactly one of its Trio tasks is runnable at any
instant (docs/DESIGN.md, "Layers"). ``OneRunnable`` is a Trio instrument
that watches ``task_scheduled`` / ``before_task_step`` for the tasks the
engine registered in ``Engine.tasks`` (Trio's own system tasks are ignored)
and records every moment when two or more of them are runnable together.

Trio swallows exceptions raised inside an instrument (it logs them and removes
the instrument), so the instrument only *records*; tests assert on
``violations`` after the run. ``run_checked`` attaches one for a whole run.

The direct driver (``Engine(driver="direct")``) has no Trio tasks: it steps
one coroutine at a time by construction, so ``run_checked`` simply runs it
and reports no violations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from emu.engine import Engine, RunStats

#: One violation: the names of the engine's tasks runnable together.
Violation = tuple[str, ...]


class OneRunnable(trio.abc.Instrument):
    """Record every instant at which more than one engine task is runnable.

    Args:
        ours: the engine's task registry (``Engine.tasks``, task → name). It
            is read live: the engine fills it as actors start and empties it
            when teardown begins (cancelled tasks then wake together).
    """

    def __init__(self, ours: Mapping[trio.lowlevel.Task, str]) -> None:
        self.ours = ours
        self.runnable: dict[trio.lowlevel.Task, None] = {}
        self.violations: list[Violation] = []
        self.scheduled = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        ours = self.ours
        if task not in ours:
            return
        self.scheduled += 1
        runnable = self.runnable
        for stale in [t for t in runnable if t not in ours]:
            del runnable[stale]
        runnable[task] = None
        if len(runnable) > 1:
            self.violations.append(tuple(ours[t] for t in runnable))

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.runnable.pop(task, None)


def run_checked(engine: Engine, instrument: OneRunnable | None = None) -> tuple[RunStats, list[Violation]]:
    """Run *engine* to the end with a ``OneRunnable`` attached.

    Args:
        engine: a fresh engine (either driver).
        instrument: pass one to inspect its violations even when the run
            raises (the engine's errors propagate).

    Returns:
        The run's statistics and the violations found (empty when correct).
    """
    if engine.driver == "direct":
        return engine.run(), []
    check = OneRunnable(engine.tasks) if instrument is None else instrument

    async def main() -> RunStats:
        trio.lowlevel.add_instrument(check)
        try:
            return await engine.run_async()
        finally:
            try:
                trio.lowlevel.remove_instrument(check)
            except KeyError:  # Trio dropped it after it raised: a bug in OneRunnable
                check.violations.append(("<instrument removed by Trio>",))

    stats = trio.run(main)
    return stats, check.violations


def run_strict(engine: Engine) -> RunStats:
    """Run *engine* checked and fail if the one-runnable rule was ever broken."""
    check = OneRunnable(engine.tasks)
    try:
        stats, violations = run_checked(engine, check)
    finally:
        assert check.violations == [], f"more than one engine task runnable: {check.violations[:5]}"
    assert violations == []
    return stats


def records(engine: Engine) -> list[dict[str, Any]]:
    """The engine's trace records, decoded, in order."""
    return list(engine.trace.records())


def events(engine: Engine, *, drop: tuple[str, ...] = ("seq",)) -> list[dict[str, Any]]:
    """Trace records without the fields in *drop*: handy for equality checks."""
    return [{k: v for k, v in record.items() if k not in drop} for record in engine.trace.records()]


def crowd_scenario(engine: Engine, actors: int = 60) -> None:
    """Spawn a busy, tie-heavy scenario: the determinism tests' workload.

    *actors* workers sleep identical durations (so many wake at the same
    instant), draw from their own streams, call a daemon server, fan messages
    out to their neighbours and park on one ``WaitQueue`` that a coordinator
    wakes all at once, then by chosen keys. Every step logs to the trace.
    """
    from emu.waitqueue import WaitQueue

    gate = WaitQueue(engine, "gate", lambda: ["coordinator"])
    workers: list[Any] = []

    async def server(actor: Any) -> None:
        total = 0
        while True:
            envelope = await actor.receive()
            total += envelope.msg
            actor.log.info("serve", src=envelope.src.name, total=total)
            actor.reply(envelope, total, delay_ns=total % 3)

    async def worker(actor: Any, index: int, srv: Any) -> None:
        rng = actor.rng("think")
        for round_ in range(3):
            await actor.sleep(100)  # everyone wakes at the same instants
            actor.log.info("wake", round=round_)
            total = await actor.call(srv, rng.randrange(10))
            for offset in (1, 2, 3):
                actor.send(workers[(index + offset) % len(workers)], (actor.name, round_))
            value = await gate.wait(actor, key=actor.name)
            actor.log.info("through", round=round_, value=value, total=total)
            while actor.mailbox:
                envelope = await actor.receive()
                actor.log.info("mail", src=envelope.src.name, round=envelope.msg[1])
            await actor.sleep(rng.choice((0, 0, 5)))

    async def coordinator(actor: Any) -> None:
        for round_ in range(3):
            while len(gate) < len(workers):
                await actor.sleep(1)
            actor.log.info("open", round=round_, waiting=len(gate))
            if round_ == 1:
                for key in sorted(gate, reverse=True):  # a chosen order
                    gate.wake(key, round_)
            else:
                gate.wake_all(round_)

    srv = engine.spawn("server", server, daemon=True)
    for index in range(actors):
        workers.append(engine.spawn(f"w{index:02d}", worker, index, srv))
    engine.spawn("coordinator", coordinator)


def crowd_digest(seed: int = 0, tie_seed: int | None = None, driver: str = "trio", actors: int = 60) -> str:
    """Run ``crowd_scenario`` checked and return its trace digest."""
    engine = Engine(seed=seed, tie_seed=tie_seed, driver=driver)
    crowd_scenario(engine, actors)
    stats = run_strict(engine)
    assert stats.reason == "finished", stats
    return stats.trace_digest
