"""Tests for emu/engine.py: order, ending, teardown, errors and the one-runnable rule."""

from __future__ import annotations

import gc

import pytest
import trio

from emu import ActorCrashed, Engine, HungTaskError, LivelockError, WaitQueue
from emu.testing import OneRunnable, run_checked, run_strict


def test_entries_run_in_time_then_sequence_order(engine: Engine) -> None:
    """Wake-ups run by virtual time, and same-time wake-ups in the order they were scheduled."""
    order: list[tuple[int, str]] = []

    async def sleeper(actor, ns):
        await actor.sleep(ns)
        order.append((actor.now_ns, actor.name))

    for name, ns in [("a", 30), ("b", 10), ("c", 30), ("d", 20), ("e", 10)]:
        engine.spawn(name, sleeper, ns)
    engine.call_at(10, lambda: order.append((engine.now_ns, "timer10")))
    engine.call_at(30, lambda: order.append((engine.now_ns, "timer30")))
    stats = run_strict(engine)
    # The timers were scheduled before the actors started (and slept): smaller seq.
    assert order == [(10, "timer10"), (10, "b"), (10, "e"), (20, "d"), (30, "timer30"), (30, "a"), (30, "c")]
    assert stats.reason == "finished" and stats.now_ns == 30


def test_sleep_zero_yields_to_same_instant_events_in_fifo_order(engine: Engine) -> None:
    """``sleep(0)`` lets everything already due now run first, FIFO, then continues at the same time."""
    order: list[str] = []

    async def yielder(actor):
        order.append("y1")
        await actor.sleep(0)
        order.append("y2")
        await actor.sleep(0)
        order.append("y3")

    async def other(actor):
        order.append(actor.name)
        await actor.sleep(0)
        order.append(actor.name + "'")

    engine.spawn("y", yielder)
    engine.spawn("p", other)
    engine.spawn("q", other)
    stats = run_strict(engine)
    assert order == ["y1", "p", "q", "y2", "p'", "q'", "y3"]
    assert stats.now_ns == 0


def test_call_later_callback_runs_between_actor_steps(engine: Engine) -> None:
    """A plain callback runs on the baton at its time and can wake an actor through a wait queue."""
    wq = WaitQueue(engine, "timer")
    seen: list[tuple[str, int, object]] = []

    async def waiter(actor):
        value = await wq.wait(actor)
        seen.append((actor.name, actor.now_ns, value))

    engine.spawn("w", waiter)
    engine.call_later(500, wq.wake, engine.actors[0], "fired")
    run_strict(engine)
    assert seen == [("w", 500, "fired")]


def test_run_ends_when_every_non_daemon_actor_finished(engine: Engine) -> None:
    """A daemon idle on ``receive`` does not keep the run alive, and pending timers do not either."""
    served: list[int] = []

    async def server(actor):
        while True:
            envelope = await actor.receive()
            served.append(envelope.msg)
            actor.reply(envelope, envelope.msg * 2)

    async def client(actor, srv):
        assert await actor.call(srv, 21) == 42
        await actor.sleep(100)

    srv = engine.spawn("server", server, daemon=True)
    engine.spawn("client", client, srv)
    engine.call_at(10_000, lambda: served.append(-1))
    stats = run_strict(engine)
    assert stats.reason == "finished"
    assert stats.now_ns == 100
    assert served == [21]


def test_run_stops_at_the_horizon(make_engine) -> None:
    """The run ends, reason ``horizon``, when the next event lies beyond the horizon."""
    engine = make_engine(horizon_ns=1_000)
    ticks: list[int] = []

    async def ticker(actor):
        while True:
            await actor.sleep(300)
            ticks.append(actor.now_ns)

    engine.spawn("ticker", ticker)
    stats = run_strict(engine)
    assert stats.reason == "horizon"
    assert ticks == [300, 600, 900]
    assert stats.now_ns == 900


def test_teardown_cancels_parked_actors_without_hanging(make_engine) -> None:
    """Actors parked at the end (sleeping, waiting, receiving) are torn down and their cleanup runs."""
    engine = make_engine(horizon_ns=50)
    wq = WaitQueue(engine, "never")
    cleaned: list[str] = []

    async def parked(actor, how):
        try:
            if how == "sleep":
                await actor.sleep(10**12)
            elif how == "wait":
                await wq.wait(actor)
            else:
                await actor.receive()
        finally:
            cleaned.append(actor.name)

    for how in ("sleep", "wait", "receive"):
        engine.spawn(how, parked, how)
    stats = run_strict(engine)
    assert stats.reason == "horizon"
    assert sorted(cleaned) == ["receive", "sleep", "wait"]
    assert len(wq) == 0


def test_actor_crash_names_the_actor(engine: Engine) -> None:
    """An exception in actor code ends the run with ``ActorCrashed`` naming the actor, the cause chained."""

    async def fine(actor):
        await actor.sleep(10**9)

    async def broken(actor):
        await actor.sleep(7)
        raise ZeroDivisionError("oops")

    engine.spawn("fine", fine)
    engine.spawn("broken", broken)
    with pytest.raises(ActorCrashed) as info:
        run_strict(engine)
    assert info.value.actor == "broken"
    assert info.value.now_ns == 7
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "broken" in str(info.value)


def test_callback_crash_is_reported(engine: Engine) -> None:
    """An exception in a timer callback ends the run with ``ActorCrashed`` naming the callback."""

    def bad_timer():
        raise KeyError("x")

    async def sleeper(actor):
        await actor.sleep(100)

    engine.spawn("s", sleeper)
    engine.call_at(5, bad_timer)
    with pytest.raises(ActorCrashed, match="bad_timer"):
        run_strict(engine)


def test_lost_release_raises_hung_task_naming_waiter_and_holder(engine: Engine) -> None:
    """A lock taken and never released: the waiter is reported with the lock and its holder, at once."""
    holder: list[str] = []
    lock = WaitQueue(engine, "lock demo_lock", lambda: list(holder))

    async def leaker(actor):
        await actor.sleep(10)
        holder.append(actor.name)  # "take" the lock ...
        await actor.sleep(10)
        # ... and return without releasing it (the bug).

    async def waiter(actor):
        await actor.sleep(15)
        await lock.wait(actor)

    engine.spawn("leaker", leaker)
    engine.spawn("waiter", waiter)
    with pytest.raises(HungTaskError) as info:
        run_strict(engine)
    assert info.value.report == ["waiter: waiting on lock demo_lock held by leaker"]
    assert info.value.now_ns == 20
    assert engine.steps <= 10  # detected in the very step the heap ran dry
    assert "waiter" in str(info.value) and "leaker" in str(info.value)


def test_hung_report_names_every_blocked_actor(engine: Engine) -> None:
    """Every blocked actor appears with what it waits on; daemons idle on receive do not."""
    wq = WaitQueue(engine, "resource")

    async def stuck(actor):
        await wq.wait(actor)

    async def caller(actor, dst):
        await actor.call(dst, "hello")

    async def silent_server(actor):
        while True:
            await actor.receive()

    srv = engine.spawn("srv", silent_server, daemon=True)
    engine.spawn("stuck", stuck)
    engine.spawn("caller", caller, srv)
    with pytest.raises(HungTaskError) as info:
        run_strict(engine)
    assert info.value.report == ["stuck: waiting on resource", "caller: waiting on call srv"]


def test_step_budget_raises_livelock(make_engine) -> None:
    """Two actors bouncing a message forever exhaust ``max_steps`` and get a ``LivelockError`` report."""
    engine = make_engine(max_steps=1_000)

    async def bouncer(actor, peers):
        if actor.name == "a":
            actor.send(peers[0], 0)
        while True:
            envelope = await actor.receive()
            actor.send(envelope.src, envelope.msg + 1)

    peers: list = []
    a = engine.spawn("a", bouncer, peers)
    peers.append(engine.spawn("b", bouncer, [a]))
    with pytest.raises(LivelockError) as info:
        run_strict(engine)
    assert info.value.steps == 1_000
    assert engine.steps == 1_000
    assert info.value.report == ["a: waiting on receive", "b: waiting on receive"]


def test_actor_spawned_during_the_run_starts_in_order(engine: Engine) -> None:
    """An actor spawned by another starts at its spawn time, after entries already due, holding the baton."""
    order: list[tuple[int, str]] = []

    async def child(actor, tag):
        order.append((actor.now_ns, tag))
        await actor.sleep(5)
        order.append((actor.now_ns, tag + "'"))

    async def parent(actor):
        await actor.sleep(10)
        actor.engine.spawn("child1", child, "c1")
        actor.engine.spawn("child2", child, "c2")
        order.append((actor.now_ns, "parent"))
        await actor.sleep(0)
        order.append((actor.now_ns, "parent'"))

    engine.spawn("parent", parent)
    stats = run_strict(engine)
    assert order == [(10, "parent"), (10, "c1"), (10, "c2"), (10, "parent'"), (15, "c1'"), (15, "c2'")]
    assert stats.reason == "finished"


def test_spawn_rejects_duplicate_names(engine: Engine) -> None:
    """Actor names identify actors in reports and traces, so they must be unique."""

    async def noop(actor):
        return None

    engine.spawn("x", noop)
    with pytest.raises(ValueError, match="already exists"):
        engine.spawn("x", noop)


def test_engine_runs_once(engine: Engine) -> None:
    """A second ``run`` is an error rather than a silent replay."""

    async def noop(actor):
        return None

    engine.spawn("x", noop)
    run_strict(engine)
    with pytest.raises(RuntimeError):
        engine.run()


def test_no_actors_finishes_at_once(engine: Engine) -> None:
    """An engine with nothing to run finishes at time zero."""
    stats = run_strict(engine)
    assert (stats.reason, stats.now_ns, stats.steps) == ("finished", 0, 0)


def _mixed_scenario(engine: Engine) -> None:
    wq = WaitQueue(engine, "gate")

    async def worker(actor, i):
        await actor.sleep(i % 3)
        actor.log.info("arrive", i=i)
        if i % 2:
            await wq.wait(actor)
        else:
            await actor.sleep(0)
        actor.log.info("leave", i=i)

    async def opener(actor):
        await actor.sleep(5)
        actor.log.info("open", waiting=len(wq))
        wq.wake_all()

    for i in range(12):
        engine.spawn(f"w{i}", worker, i)
    engine.spawn("opener", opener)


def test_fast_paths_do_not_change_order(driver: str) -> None:
    """The same-instant deque and Trio's internal trap give the digest of the plain heap and public API."""
    digests = set()
    for fast_now in (True, False):
        for fast_trio in (True, False):
            engine = Engine(seed=1, driver=driver)
            engine._fast_now = fast_now
            engine._fast_trio = fast_trio and driver == "trio"
            _mixed_scenario(engine)
            digests.add(run_strict(engine).trace_digest)
    assert len(digests) == 1


def test_drivers_agree() -> None:
    """The Trio driver and the direct driver produce the same trace for the same scenario."""
    digests = []
    for driver in ("trio", "direct"):
        engine = Engine(seed=3, driver=driver)
        _mixed_scenario(engine)
        digests.append(run_strict(engine).trace_digest)
    assert digests[0] == digests[1]


def test_unknown_driver_is_rejected() -> None:
    """Only the two drivers exist."""
    with pytest.raises(ValueError, match="driver"):
        Engine(driver="asyncio")


def test_one_runnable_instrument_catches_a_violation() -> None:
    """The instrument is not vacuous: two registered tasks woken together are reported."""
    ours: dict[trio.lowlevel.Task, str] = {}
    check = OneRunnable(ours)

    async def sleeper(name: str) -> None:
        ours[trio.lowlevel.current_task()] = name
        await trio.sleep(0)

    async def main() -> None:
        trio.lowlevel.add_instrument(check)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "x")
            nursery.start_soon(sleeper, "y")
        trio.lowlevel.remove_instrument(check)

    trio.run(main)
    assert check.violations
    assert set(check.violations[0]) == {"x", "y"}


def test_run_checked_watches_every_switch() -> None:
    """``run_checked`` sees the engine's baton passes (so an empty violation list means something)."""
    engine = Engine(seed=0)
    check = OneRunnable(engine.tasks)

    async def pinger(actor, n):
        for _ in range(n):
            await actor.sleep(1)

    engine.spawn("p1", pinger, 20)
    engine.spawn("p2", pinger, 20)
    stats, violations = run_checked(engine, check)
    assert violations == []
    assert check.scheduled >= 40
    assert stats.steps == 2 + 40


async def _sleep_past_horizon(actor) -> None:
    await actor.sleep(10**12)


@pytest.mark.parametrize("driver", ["trio", "direct"])
def test_teardown_leaves_no_cyclic_garbage(driver: str) -> None:
    """Actors still parked at the horizon end without leaving cycles for the collector.

    With the Trio driver each is cancelled; a ``Cancelled`` that kept its
    traceback would hold every frame of the actor's stack in a cycle, tens of
    objects per actor for one full collection at the end of a large run.
    """
    engine = Engine(seed=1, horizon_ns=1_000, driver=driver)
    for k in range(50):
        engine.spawn(f"a{k}", _sleep_past_horizon)
    gc.collect()
    gc.disable()
    try:
        assert engine.run().reason == "horizon"
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 50
