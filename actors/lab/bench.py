"""The engine benchmarks of ``emu bench``, the SimPy peer's workloads.

They are defined so that the same workload written for SimPy gives the same
sequence of acquisitions: timing both alternately in one run gives the
engine's speed as a ratio to SimPy's (docs/PERFORMANCE.md).

* rwsem: 100 tasks, ``pid % 10 == 0`` writes, the others read; each uses
  ``random.Random(pid)``; until ``t_end`` virtual seconds: think Exp(1 s),
  acquire, hold Exp(10 ms) read / Exp(20 ms) write, release. The lock is the
  fault path's own: an ``MmStruct``'s mmap_sem taken with
  ``actors.mm.mmap.down_read``/``down_write`` (4.19 rules, mmap_lock
  tracepoints into a ``Trace(keep=False)``, so the digest is still computed).
* pingpong: ``emu.bench.pingpong``, two actors and the engine's messaging.
* saturated: the same lock and path with nobody thinking: *waiters* tasks
  (``pid % 10 == 0`` writes) each acquire, hold Exp(10 ms) read / Exp(20 ms)
  write and release *rounds* times, so the wait list stays about *waiters*
  long. The figure is wall time per acquisition; ``saturated_simpy`` runs the
  same workload on SimPy with the peer's FIFO rw-semaphore (a deque, O(1) per
  acquisition), so the two alternate in one run and give a ratio.

* scale: ``scale_config(tasks, horizon)``, a fault workload run as ``emu
  run`` runs it; the figure is simulation wall time per trace record, which
  should not grow with the number of tasks or the length of the run.
* munmap: ``mprotect_vma`` (read-only) then ``remove_vma`` of one large
  VMA with a few pages mapped: what a page-table walk costs.

Only ``engine.run()`` (``env.run()``; for munmap the two calls) is timed.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

from actors.kernel import Kernel
from actors.lab.config import ExperimentConfig, config_from_dict
from actors.locking.rwsem import RwsemSemantics
from actors.mm.mmap import MmStruct, VmFlag, down_read, down_write, up_read, up_write
from actors.mm.page import Page
from actors.policy import PRESETS
from actors.sched.task import TaskStruct
from emu import NSEC_PER_SEC, Engine, Trace
from emu.bench import pingpong

NPROC = 100
THINK_MEAN_S = 1.0
HOLD_READ_S = 0.010
HOLD_WRITE_S = 0.020


def bench_rwsem(t_end_s: float, driver: str = "trio") -> tuple[int, float]:
    """Run the rwsem workload; return (lock acquisitions, wall seconds of the run)."""
    engine = Engine(seed=0, trace=Trace(keep=False), driver=driver)
    kernel = Kernel(engine, ExperimentConfig(name="bench"), PRESETS["v4.19"])  # the invariant checks ride along
    mm = MmStruct(engine, "bench", 1, RwsemSemantics.V4_19)
    t_end_ns = round(t_end_s * NSEC_PER_SEC)
    acquired = [0]

    async def proc(actor: Any, pid: int) -> None:
        current = TaskStruct(kernel, actor.name, "bench", pid, 1, mm, "")
        current.actor = actor
        rng = random.Random(pid)
        write = pid % 10 == 0
        think_rate = 1.0 / THINK_MEAN_S
        hold_rate = 1.0 / (HOLD_WRITE_S if write else HOLD_READ_S)
        down, up = (down_write, up_write) if write else (down_read, up_read)
        engine, sleep, expovariate = actor.engine, actor.sleep, rng.expovariate  # looked up once, not per acquisition
        while engine.now_ns < t_end_ns:
            await sleep(round(expovariate(think_rate) * NSEC_PER_SEC))
            await down(current, mm)
            acquired[0] += 1
            await sleep(round(expovariate(hold_rate) * NSEC_PER_SEC))
            up(current, mm)

    for pid in range(NPROC):
        engine.spawn(f"bench{pid}", proc, pid)
    start = time.perf_counter()
    engine.run()
    return acquired[0], time.perf_counter() - start


def bench_saturated(waiters: int, rounds: int, driver: str = "trio") -> tuple[int, float]:
    """Run the saturated workload; return (lock acquisitions, wall seconds of the run)."""
    engine = Engine(seed=0, trace=Trace(keep=False), driver=driver)
    kernel = Kernel(engine, ExperimentConfig(name="bench"), PRESETS["v4.19"])
    mm = MmStruct(engine, "bench", 1, RwsemSemantics.V4_19)
    acquired = [0]

    async def proc(actor: Any, pid: int) -> None:
        current = TaskStruct(kernel, actor.name, "bench", pid, 1, mm, "")
        current.actor = actor
        rng = random.Random(pid)
        write = pid % 10 == 0
        hold_rate = 1.0 / (HOLD_WRITE_S if write else HOLD_READ_S)
        for _ in range(rounds):
            if write:
                await down_write(current, mm)
            else:
                await down_read(current, mm)
            acquired[0] += 1
            await actor.sleep(round(rng.expovariate(hold_rate) * NSEC_PER_SEC))
            if write:
                up_write(current, mm)
            else:
                up_read(current, mm)

    for pid in range(waiters):
        engine.spawn(f"bench{pid}", proc, pid)
    start = time.perf_counter()
    engine.run()
    return acquired[0], time.perf_counter() - start


def saturated_simpy(waiters: int, rounds: int) -> tuple[int, float]:
    """The saturated workload on SimPy (the ``bench`` extra): (acquisitions, wall seconds)."""
    import simpy  # noqa: PLC0415 - only this benchmark needs it

    env = simpy.Environment()
    queue: collections.deque[tuple[bool, Any]] = collections.deque()
    state = {"readers": 0, "writer": False}
    acquired = [0]

    def release(write: bool) -> None:
        if write:
            state["writer"] = False
        else:
            state["readers"] -= 1
        while queue:
            waiter_write, event = queue[0]
            if waiter_write:
                if state["readers"] == 0 and not state["writer"]:
                    queue.popleft()
                    state["writer"] = True
                    event.succeed()
                break
            if state["writer"]:
                break
            queue.popleft()
            state["readers"] += 1
            event.succeed()

    def proc(pid: int) -> Any:
        rng = random.Random(pid)
        write = pid % 10 == 0
        hold_rate = 1.0 / (HOLD_WRITE_S if write else HOLD_READ_S)
        for _ in range(rounds):
            free = not queue and not state["writer"] and (not write or state["readers"] == 0)
            if free:
                state["writer" if write else "readers"] = True if write else state["readers"] + 1
            else:
                granted = env.event()
                queue.append((write, granted))
                yield granted
            acquired[0] += 1
            yield env.timeout(rng.expovariate(hold_rate))
            release(write)

    for pid in range(waiters):
        env.process(proc(pid))
    start = time.perf_counter()
    env.run()
    return acquired[0], time.perf_counter() - start


def bench_pingpong(messages: int, driver: str = "trio") -> tuple[int, float]:
    """Run pingpong; return (messages delivered, wall seconds)."""
    start = time.perf_counter()
    ops = pingpong(messages, driver=driver)
    return ops, time.perf_counter() - start


def bench_munmap(pages: int, mapped: int) -> tuple[int, float]:
    """mprotect (read-only) then munmap one *pages*-page VMA with *mapped* pages present; return (pages, wall seconds)."""
    engine = Engine(seed=0, trace=Trace(keep=False))
    mm = MmStruct(engine, "bench", 1, RwsemSemantics.V4_19)
    vma = mm.insert_vma(pages, VmFlag.READ | VmFlag.WRITE | VmFlag.MAYWRITE, None, "bench")
    for address in range(vma.vm_start, vma.vm_start + mapped):
        page = Page(None, address)
        page.refcount = 1
        mm.set_pte(address, page, True)
    start = time.perf_counter()
    mm.mprotect_vma(vma, write=False)
    mm.remove_vma(vma)
    return pages, time.perf_counter() - start


def scale_config(tasks: int, horizon_s: float) -> ExperimentConfig:
    """The scale workload: *tasks* single-thread processes touching random pages of one half-cached file.

    Each thinks ``tasks x 500 us`` between touches, so the whole run
    touches about 2,000 pages per virtual second whatever *tasks* is:
    records grow with the horizon, the heap (tasks, stacks, PTEs) with both.
    """
    return config_from_dict(
        {
            "name": "bench-scale",
            "horizon": f"{round(horizon_s * NSEC_PER_SEC)}ns",
            "policies": ["v5.1"],
            "files": [{"name": "data", "size": "1GiB", "cached": 0.5}],
            "processes": [
                {
                    "name": "p",
                    "count": tasks,
                    "mappings": [{"name": "data", "file": "data", "madvise": "random"}],
                    "threads": [{"name": "t", "program": [{"op": "touch", "mapping": "data"}, {"op": "think", "time": f"{tasks * 500}us"}]}],
                }
            ],
        }
    )


def bench_scale(tasks: int, horizon_s: float) -> tuple[int, float]:
    """Run the scale workload as ``emu run`` does (GC policy included); return (trace records, wall seconds of the simulation)."""
    from actors.lab.experiment import build_policy, simulate  # noqa: PLC0415 - the lab's phases, not the engine alone

    engine, _kernel = build_policy(scale_config(tasks, horizon_s), "v5.1")
    start = time.perf_counter()
    stats = simulate(engine)
    return stats.events, time.perf_counter() - start
