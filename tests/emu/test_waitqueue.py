"""Tests for emu/waitqueue.py: wake order chosen by the caller, stale resumes, reports."""

from __future__ import annotations

import pytest

from emu import Engine, WaitQueue
from emu.testing import run_strict


def _waiters(engine: Engine, wq: WaitQueue, names: list[str], woke: list[tuple[str, object]]) -> None:
    async def waiter(actor):
        woke.append((actor.name, await wq.wait(actor, key=actor.name)))

    for name in names:
        engine.spawn(name, waiter)


def test_wake_order_is_the_callers_choice(engine: Engine) -> None:
    """Waiters woken one by one by key resume in exactly that order, not arrival order."""
    wq = WaitQueue(engine, "q")
    woke: list[tuple[str, object]] = []
    _waiters(engine, wq, ["w0", "w1", "w2", "w3"], woke)

    async def waker(actor):
        await actor.sleep(1)
        assert list(wq) == ["w0", "w1", "w2", "w3"]
        for key in ("w2", "w0", "w3", "w1"):
            assert wq.wake(key, key.upper())

    engine.spawn("waker", waker)
    run_strict(engine)
    assert woke == [("w2", "W2"), ("w0", "W0"), ("w3", "W3"), ("w1", "W1")]


def test_wake_all_wakes_in_arrival_order(engine: Engine) -> None:
    """``wake_all`` resumes every waiter, in the order they started waiting, and empties the queue."""
    wq = WaitQueue(engine, "q")
    woke: list[tuple[str, object]] = []
    _waiters(engine, wq, ["c", "a", "b"], woke)

    async def waker(actor):
        await actor.sleep(1)
        assert wq.wake_all("go") == 3
        assert len(wq) == 0

    engine.spawn("waker", waker)
    run_strict(engine)
    assert woke == [("c", "go"), ("a", "go"), ("b", "go")]


def test_first_is_the_longest_waiting_key(engine: Engine) -> None:
    """``first`` names the head of arrival order as the queue drains, then ``None``."""
    wq = WaitQueue(engine, "q")
    woke: list[tuple[str, object]] = []
    _waiters(engine, wq, ["c", "a", "b"], woke)
    heads = []

    async def waker(actor):
        assert wq.first() == "c"  # every waiter started before the waker
        await actor.sleep(1)
        while (key := wq.first()) is not None:
            heads.append(key)
            wq.wake(key)

    engine.spawn("waker", waker)
    run_strict(engine)
    assert heads == ["c", "a", "b"] and [name for name, _ in woke] == heads


def test_wake_of_missing_key_returns_false(engine: Engine) -> None:
    """Waking a key nobody waits under does nothing."""
    wq = WaitQueue(engine, "q")
    assert wq.wake("nobody") is False
    assert "nobody" not in wq


def test_duplicate_key_is_rejected(engine: Engine) -> None:
    """Two waiters under one key would make wake-ups ambiguous."""
    wq = WaitQueue(engine, "q")
    errors: list[Exception] = []

    async def waiter(actor):
        try:
            await wq.wait(actor, key="same")
        except ValueError as error:
            errors.append(error)

    engine.spawn("a", waiter)
    engine.spawn("b", waiter)

    async def waker(actor):
        await actor.sleep(1)
        wq.wake("same")

    engine.spawn("waker", waker)
    run_strict(engine)
    assert len(errors) == 1


def test_stale_resume_is_dropped(engine: Engine) -> None:
    """A wait ended by a timeout ignores the later wake-up, and vice versa (killable-wait pattern)."""
    results: list[tuple[str, int, object]] = []
    wq = WaitQueue(engine, "q")

    async def timed_waiter(actor, timeout_ns):
        gen = actor.prepare_wait("q or timeout")
        actor.engine.resume(actor, gen, "timeout", delay_ns=timeout_ns)
        wq._waiters[actor.name] = (actor, gen)
        value = await actor.wait()
        wq._waiters.pop(actor.name, None)
        results.append((actor.name, actor.now_ns, value))
        await actor.sleep(100)  # the losing source fires while we sleep: must not wake us
        results.append((actor.name, actor.now_ns, "slept"))

    async def waker(actor):
        await actor.sleep(50)
        wq.wake("slow", "woken")
        wq.wake("fast", "woken")  # already timed out: nobody under that key any more

    engine.spawn("fast", timed_waiter, 10)
    engine.spawn("slow", timed_waiter, 80)
    engine.spawn("waker", waker)
    run_strict(engine)
    assert results == [
        ("fast", 10, "timeout"),
        ("slow", 50, "woken"),
        ("fast", 110, "slept"),
        ("slow", 150, "slept"),
    ]


def test_wait_ended_elsewhere_leaves_the_queue(engine: Engine) -> None:
    """If a waiter is torn down while queued, its entry is removed."""
    wq = WaitQueue(engine, "q")

    async def waiter(actor):
        await wq.wait(actor)

    async def main(actor):
        await actor.sleep(5)

    engine.spawn("waiter", waiter, daemon=True)
    engine.spawn("main", main)
    run_strict(engine)
    assert len(wq) == 0


def test_delayed_wake(engine: Engine) -> None:
    """``wake(..., delay_ns=...)`` resumes the waiter later, with the value."""
    wq = WaitQueue(engine, "q")
    got: list[tuple[int, object]] = []

    async def waiter(actor):
        value = await wq.wait(actor)
        got.append((actor.now_ns, value))

    w = engine.spawn("w", waiter)
    engine.call_at(3, lambda: wq.wake(w, "v", delay_ns=7))
    run_strict(engine)
    assert got == [(10, "v")]


@pytest.mark.parametrize("holders", [None, lambda: ["h1", "h2"], lambda: []])
def test_report_shows_holders(engine: Engine, holders) -> None:
    """The hung-task report uses the queue's name and its holders callable."""
    from emu import HungTaskError

    wq = WaitQueue(engine, "mutex m", holders)

    async def waiter(actor):
        await wq.wait(actor)

    engine.spawn("w", waiter)
    with pytest.raises(HungTaskError) as info:
        run_strict(engine)
    suffix = {None: "", 2: " held by h1, h2", 0: " (no holder)"}[None if holders is None else len(holders())]
    assert info.value.report == [f"w: waiting on mutex m{suffix}"]
