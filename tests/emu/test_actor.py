"""Tests for emu/actor.py: messages, calls, sleeps, streams and the envelope."""

from __future__ import annotations

import pytest

from emu import ActorCrashed, Engine, Envelope
from emu.testing import run_strict


def test_call_returns_the_reply_value(engine: Engine) -> None:
    """``call`` sends a request and returns what the callee passes to ``reply``, after its delay."""
    got: list[tuple[int, object]] = []

    async def server(actor):
        while True:
            envelope = await actor.receive()
            actor.reply(envelope, envelope.msg.upper(), delay_ns=25)

    async def client(actor, srv):
        for word in ("ping", "pong"):
            value = await actor.call(srv, word)
            got.append((actor.now_ns, value))

    srv = engine.spawn("srv", server, daemon=True)
    engine.spawn("client", client, srv)
    run_strict(engine)
    assert got == [(25, "PING"), (50, "PONG")]


def test_receive_returns_envelopes_in_arrival_order(engine: Engine) -> None:
    """Messages queue in the mailbox and come out FIFO, carrying their sender; delayed ones arrive later."""
    got: list[tuple[int, str, object]] = []

    async def sink(actor):
        for _ in range(4):
            envelope = await actor.receive()
            got.append((actor.now_ns, envelope.src.name, envelope.msg))

    async def source(actor, dst):
        actor.send(dst, "late", delay_ns=10)
        actor.send(dst, 1)
        actor.send(dst, 2)
        await actor.sleep(5)
        actor.send(dst, 3)

    dst = engine.spawn("sink", sink)
    engine.spawn("source", source, dst)
    run_strict(engine)
    assert got == [(0, "source", 1), (0, "source", 2), (5, "source", 3), (10, "source", "late")]


def test_receive_does_not_block_when_mail_is_waiting(engine: Engine) -> None:
    """A message already in the mailbox is returned without advancing time or switching."""
    got: list[int] = []

    async def early(actor, dst):
        actor.send(dst, "x")

    async def late(actor):
        await actor.sleep(100)
        envelope = await actor.receive()
        got.append(actor.now_ns)
        assert envelope.msg == "x"

    dst = engine.spawn("late", late)
    engine.spawn("early", early, dst)
    run_strict(engine)
    assert got == [100]


def test_reply_to_a_cast_is_an_error(engine: Engine) -> None:
    """Replying to a message that was sent, not called, is a bug in the replier."""

    async def server(actor):
        envelope = await actor.receive()
        actor.reply(envelope, 1)

    async def client(actor, srv):
        actor.send(srv, "cast")

    srv = engine.spawn("srv", server)
    engine.spawn("client", client, srv)
    with pytest.raises(ActorCrashed) as info:
        run_strict(engine)
    assert info.value.actor == "srv"
    assert isinstance(info.value.error, ValueError)


def test_sleep_until_and_now(engine: Engine) -> None:
    """``sleep_until`` wakes at the given time, or at once if it has passed."""
    times: list[int] = []

    async def sleeper(actor):
        await actor.sleep_until(1_000)
        times.append(actor.now_ns)
        await actor.sleep_until(10)
        times.append(actor.now_ns)

    engine.spawn("s", sleeper)
    run_strict(engine)
    assert times == [1_000, 1_000]


def test_actor_rng_is_per_actor_and_purpose(make_engine) -> None:
    """Each actor's named stream is its own and reproducible across engines with the same seed."""
    draws: dict[str, list[int]] = {}

    def scenario():
        engine = make_engine(seed=9)

        async def drawer(actor):
            draws[actor.name] = [actor.rng("think").randrange(1000) for _ in range(3)]
            assert actor.rng("think") is actor.rng("think")

        engine.spawn("a", drawer)
        engine.spawn("b", drawer)
        run_strict(engine)
        return dict(draws)

    first, second = scenario(), scenario()
    assert first == second
    assert first["a"] != first["b"]


def test_envelope_is_a_plain_value() -> None:
    """Envelopes compare by content, print their fields and are not hashable."""
    engine = Engine()

    async def noop(actor):
        return None

    a = engine.spawn("a", noop)
    assert Envelope(src=a, msg=1) == Envelope(a, 1, None)
    assert Envelope(a, 1, 3) != Envelope(a, 1, None)
    assert "reply_gen=3" in repr(Envelope(a, 1, 3))
    with pytest.raises(TypeError):
        hash(Envelope(a, 1))
