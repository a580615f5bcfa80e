"""Engine benchmark workloads, timed by the command line (``emu bench``).

Each function builds a fresh engine, runs one workload to the end and returns
its operation count; the caller times the call. The workloads match the SimPy
peer's (``bench/peer_simpy.py`` beside DESIGN.md), so the ratio of rates is
the figure of merit.
"""

from __future__ import annotations

from emu.actor import Actor
from emu.engine import Engine


async def _ping(actor: Actor, rounds: int, peer: list[Actor]) -> None:
    pong = peer[0]
    for i in range(rounds):
        actor.send(pong, i)
        await actor.receive()


async def _pong(actor: Actor, rounds: int) -> None:
    for _ in range(rounds):
        envelope = await actor.receive()
        actor.send(envelope.src, envelope.msg)


def pingpong(messages: int, *, driver: str = "trio") -> int:
    """Two actors pass one message back and forth through send/receive.

    Args:
        messages: deliveries to make (rounded down to an even number).
        driver: the engine driver, ``"trio"`` or ``"direct"``.

    Returns:
        The number of messages delivered (the benchmark's ops).
    """
    rounds = messages // 2
    engine = Engine(seed=0, driver=driver)
    peer: list[Actor] = []
    engine.spawn("ping", _ping, rounds, peer)
    peer.append(engine.spawn("pong", _pong, rounds))
    stats = engine.run()
    if stats.reason != "finished":  # pragma: no cover - a broken engine
        raise RuntimeError(f"pingpong ended early: {stats.reason}")
    return 2 * rounds
