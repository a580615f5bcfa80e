"""Tests for emu/gcheap.py: GC settings restored, digests unchanged."""

from __future__ import annotations

import gc

import pytest

from emu import Engine
from emu.gcheap import RUN_THRESHOLD, frozen_heap


async def _chatter(actor, rounds: int) -> None:
    junk = []
    for i in range(rounds):
        node: list = [i]
        node.append(node)  # a cycle per step: the collector has work
        junk.append(node)
        actor.log.info("step", i=i)
        await actor.sleep(1_000 + i % 7)


def _digest(n_actors: int = 20, rounds: int = 300) -> str:
    engine = Engine(seed=5)
    for k in range(n_actors):
        engine.spawn(f"a{k}", _chatter, rounds)
    return engine.run().trace_digest


def test_frozen_heap_restores_threshold_and_unfreezes() -> None:
    before = gc.get_threshold()
    with frozen_heap():
        assert gc.get_threshold() == RUN_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_frozen_heap_restores_on_exception_and_nests() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), frozen_heap():
        with frozen_heap((10, 1, 1)):
            assert gc.get_threshold() == (10, 1, 1)
        assert gc.get_threshold() == RUN_THRESHOLD and gc.get_freeze_count() > 0  # the inner one left the outer's freeze
        raise RuntimeError("boom")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_digest_is_the_same_under_any_gc_settings() -> None:
    plain = _digest()
    with frozen_heap():
        frozen = _digest()
    with frozen_heap((1, 1, 1)):  # collect all the time
        eager = _digest()
    gc.disable()
    try:
        off = _digest()
    finally:
        gc.enable()
    assert plain == frozen == eager == off
