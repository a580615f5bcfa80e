"""Tests for emu/rng.py: named streams are independent and stable."""

from __future__ import annotations

import random

import hypothesis
from hypothesis import strategies as st

from emu import Engine, Streams, derive_seed
from emu.rng import randbelow_many
from emu.testing import run_strict


def test_derive_seed_is_stable_and_name_sensitive() -> None:
    """The derivation is a fixed function of seed and names (BLAKE2b, not ``hash()``)."""
    assert derive_seed(1, "a", "b") == derive_seed(1, "a", "b")
    assert derive_seed(1, "a", "b") != derive_seed(2, "a", "b")
    assert derive_seed(1, "a", "b") != derive_seed(1, "b", "a")
    assert 0 <= derive_seed(7, "x") < 2**64


def test_adding_a_stream_leaves_others_unchanged() -> None:
    """Creating an extra stream, before or between draws, does not change another stream's draws."""
    plain = Streams(5)
    a_alone = [plain.get("a", "timing").random() for _ in range(5)]
    crowded = Streams(5)
    crowded.get("z", "other").random()
    a = crowded.get("a", "timing")
    draws = [a.random() for _ in range(2)]
    crowded.get("b", "timing").random()
    draws += [a.random() for _ in range(3)]
    assert draws == a_alone


def test_an_extra_draw_in_one_stream_leaves_others_unchanged() -> None:
    """One more draw in stream a does not shift stream b."""
    s1, s2 = Streams(11), Streams(11)
    s2.get("a", "x").random()
    assert [s1.get("b", "x").random() for _ in range(4)] == [s2.get("b", "x").random() for _ in range(4)]


def test_same_name_returns_the_same_stream() -> None:
    """An owner's draws form one sequence: ``get`` returns the stream it created."""
    streams = Streams(0)
    assert streams.get("a", "p") is streams.get("a", "p")
    assert streams.get("a", "p") is not streams.get("a", "q")


def _draws(make_engine, names: list[str], extra_draw: str | None = None) -> dict[str, list[float]]:
    engine: Engine = make_engine(seed=42)
    out: dict[str, list[float]] = {}

    async def drawer(actor):
        rng = actor.rng("think")
        if actor.name == extra_draw:
            rng.random()
        out[actor.name] = []
        for _ in range(3):
            out[actor.name].append(rng.random())
            await actor.sleep(int(rng.random() * 100))

    for name in names:
        engine.spawn(name, drawer)
    run_strict(engine)
    return out


def test_adding_an_actor_leaves_every_other_actors_draws_unchanged(make_engine) -> None:
    """A new actor (spawned first, even) does not change what the others draw."""
    base = _draws(make_engine, ["a", "b", "c"])
    more = _draws(make_engine, ["new", "a", "b", "c"])
    assert {k: more[k] for k in base} == base


def test_an_extra_draw_in_one_actor_leaves_the_others_unchanged(make_engine) -> None:
    """One extra draw by actor a changes a's values only."""
    base = _draws(make_engine, ["a", "b", "c"])
    extra = _draws(make_engine, ["a", "b", "c"], extra_draw="a")
    assert extra["b"] == base["b"] and extra["c"] == base["c"]
    assert extra["a"] != base["a"]


@hypothesis.given(seed=st.integers(0, 2**64 - 1), n=st.integers(1, 2**40), count=st.integers(0, 50))
def test_randbelow_many_draws_what_randrange_draws(seed: int, n: int, count: int) -> None:
    """The batched draws are ``randrange``'s, number for number, and leave the stream where it would."""
    batched, reference = random.Random(seed), random.Random(seed)
    assert randbelow_many(batched, n, count) == [reference.randrange(n) for _ in range(count)]
    assert batched.getrandbits(64) == reference.getrandbits(64)
