"""Tests for actors/sched/core.py: CPU work through the run queue, the wake-up latency, and costs in runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import emu
from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy
from actors.schema import CostsConfig, MachineConfig
from actors.sched.core import COST_NAMES, Scheduler, charge, cpu_work, min_granularity_ns, resolve_costs, wakeup

US = 1_000
MS = 1_000_000


def _machine(cpus: int, **costs: Any) -> tuple[emu.Engine, Any]:
    engine = emu.Engine(seed=1, horizon_ns=100 * MS)
    kernel = SimpleNamespace(sched=Scheduler(engine, MachineConfig(cpus=cpus), CostsConfig(**costs)))
    return engine, kernel


def _spawn(engine: emu.Engine, kernel: Any, name: str, program: Any, done: dict[str, int]) -> None:
    async def main(actor: emu.Actor) -> None:
        current = SimpleNamespace(actor=actor, comm=name, kernel=kernel, cpu_debt=0)
        await program(current)
        done[name] = actor.now_ns

    engine.spawn(name, main)


@pytest.mark.parametrize(("cpus", "finish"), [(1, [1 * MS, 2 * MS, 3 * MS]), (2, [1 * MS, 1 * MS, 2 * MS]), (0, [1 * MS] * 3)])
def test_cpu_work_contends_for_cpus(cpus: int, finish: list[int]) -> None:
    """Three tasks with 1 ms of CPU work each: one CPU runs them one after another, FIFO; two CPUs
    two at a time; cpus = 0 gives each its own."""
    engine, kernel = _machine(cpus)
    done: dict[str, int] = {}
    for name in ("a", "b", "c"):
        _spawn(engine, kernel, name, lambda current: cpu_work(current, extra_ns=1 * MS), done)
    engine.run()
    assert [done[name] for name in ("a", "b", "c")] == finish
    stats = kernel.sched.statistics()
    assert stats.cpu_ns == 3 * MS and stats.running == 0
    assert stats.wait_ns == sum(finish) - 3 * MS
    waits = [r for r in engine.trace.records() if r["event"] == "sched_runqueue_wait"]
    assert len(waits) == stats.nr_waits == (2 if cpus == 1 else 1 if cpus == 2 else 0)


def test_a_task_waiting_for_a_cpu_runs_when_one_frees_not_before() -> None:
    """cpus = 1: a short burst queued behind a long one starts when the long one ends."""
    engine, kernel = _machine(1)
    done: dict[str, int] = {}
    _spawn(engine, kernel, "long", lambda current: cpu_work(current, extra_ns=5 * MS), done)

    async def short(current: Any) -> None:
        await current.actor.sleep(1 * MS)
        await cpu_work(current, extra_ns=100 * US)

    _spawn(engine, kernel, "short", short, done)
    engine.run()
    assert done == {"long": 5 * MS, "short": 5 * MS + 100 * US}


def test_named_costs_charges_and_scale_add_up() -> None:
    """A burst pays its named costs (n times), what was charged before, and extra; scale multiplies costs."""
    engine, kernel = _machine(0, minor_fault=2 * US, page_alloc=500, scale=2.0)
    done: dict[str, int] = {}

    async def program(current: Any) -> None:
        charge(current, "page_alloc", 3)
        assert current.cpu_debt == 3 * 1000
        await cpu_work(current, "minor_fault", None, extra_ns=7, n=2)
        assert current.cpu_debt == 0

    _spawn(engine, kernel, "t", program, done)
    engine.run()
    assert done["t"] == 3 * 1000 + 2 * 4 * US + 7


def test_wakeup_is_a_delay_that_holds_no_cpu() -> None:
    """With one CPU busy, a waking task still pays only the wake-up latency before it runs on."""
    engine, kernel = _machine(1, wakeup=20 * US)
    done: dict[str, int] = {}
    _spawn(engine, kernel, "busy", lambda current: cpu_work(current, extra_ns=1 * MS), done)
    _spawn(engine, kernel, "waker", wakeup, done)
    engine.run()
    assert done == {"busy": 1 * MS, "waker": 20 * US}


def test_without_a_scheduler_cpu_work_is_free_but_holds_still_pass() -> None:
    """Test doubles without ``kernel.sched``: named costs are free, an explicit hold still takes its time."""
    engine = emu.Engine(seed=1, horizon_ns=10 * MS)
    done: dict[str, int] = {}

    async def main(actor: emu.Actor) -> None:
        current = SimpleNamespace(actor=actor, comm="t")
        await cpu_work(current, "major_fault", extra_ns=3 * US)
        await wakeup(current)
        done["t"] = actor.now_ns

    engine.spawn("t", main)
    engine.run()
    assert done == {"t": 3 * US}


def test_resolve_costs_covers_every_cost() -> None:
    assert set(resolve_costs(CostsConfig())) == set(COST_NAMES)
    assert resolve_costs(CostsConfig(scale=0)) == dict.fromkeys(COST_NAMES, 0)


# -- costs in whole runs ------------------------------------------------------------------------


def _config(costs: dict[str, Any], machine: dict[str, Any] | None = None, threads: int = 1, cached: float = 0.0,
            vm: bool = True) -> Any:  # fmt: skip
    vm_process = {
        "name": "q",
        "threads": [{"name": "vm", "iterations": 5, "program": [{"op": "mmap", "hold": "10us"}, {"op": "munmap", "hold": "10us"}]}],
    }
    return config_from_dict(
        {
            "name": "costs",
            "horizon": "50ms",
            "machine": machine or {},
            "device": {"latency": "1ms", "jitter_pct": 0, "parallelism": 1},
            "costs": costs,
            "files": [{"name": "f", "size": "64MiB", "cached": cached}],
            "processes": [
                {
                    "name": "p",
                    "mappings": [{"name": "m", "file": "f", "madvise": "random"}],
                    "threads": [
                        {"name": f"t{i}", "iterations": 10, "program": [{"op": "touch", "mapping": "m", "pattern": "random"}]}
                        for i in range(threads)
                    ],
                },
                *([vm_process] if vm else []),
            ],
        }
    )


def test_fault_and_vma_costs_are_paid_where_the_kernel_pays_them() -> None:
    """A major fault costs its IO plus bio_build, page_alloc, minor_fault and major_fault (and
    fault_entry before it); mmap holds the sem for hold + vma_alloc, munmap for hold + vma_free +
    pgtable_teardown (no PTEs were mapped, so no TLB shootdown); syscall is paid outside the sem."""
    costs = {"fault_entry": "1us", "minor_fault": "2us", "major_fault": "10us", "page_alloc": "1us", "bio_build": "3us",
             "syscall": "1us", "vma_alloc": "4us", "vma_free": "5us", "pgtable_teardown": "6us", "wakeup": 0, "access": 0}  # fmt: skip
    run = run_policy(_config(costs), "v2.6.36", keep_trace=True)
    free = run_policy(_config({"scale": 0}), "v2.6.36", keep_trace=True)

    def faults(result: Any) -> list[int]:
        return [r["latency_ns"] for r in result.trace.records() if r["event"] == "fault_done" and r["actor"] == "p.t0"]

    # v2.6.36, MADV_RANDOM, one faulting thread: one 1 ms page read per fault, all under the sem.
    assert {a - b for a, b in zip(faults(run), faults(free), strict=True)} == {3_000 + 1_000 + 2_000 + 10_000}
    assert run.results["mmap_sem"]["q"]["hold_max_ns"] == 10_000 + 5_000 + 6_000  # munmap
    assert free.results["mmap_sem"]["q"]["hold_max_ns"] == 10_000
    assert run.results["latency"]["vm/mmap"]["max_ns"] == 1_000 + 10_000 + 4_000


def test_one_cpu_makes_two_faulting_threads_wait_for_each_other() -> None:
    """Two threads taking minor faults of 100 us CPU each: on one CPU each fault waits for the
    other thread's, about doubling its latency; on two CPUs they run side by side."""
    costs = {"minor_fault": "100us", "fault_entry": 0, "access": 0, "wakeup": 0, "fault_around_pte": 0}
    one = run_policy(_config(costs, {"cpus": 1}, threads=2, cached=1.0, vm=False), "v4.19", keep_trace=False).results
    two = run_policy(_config(costs, {"cpus": 2}, threads=2, cached=1.0, vm=False), "v4.19", keep_trace=False).results
    assert one["counters"]["major_faults"] == two["counters"]["major_faults"] == 0
    assert one["counters"]["runqueue_waits"] >= 10 and two["counters"]["runqueue_waits"] == 0
    mean_one, mean_two = (r["latency"]["t1/touch"]["mean_ns"] for r in (one, two))
    assert mean_two == 100_000 and 1.8 * mean_two <= mean_one <= 2 * mean_two


@pytest.mark.parametrize(("cpus", "granularity"), [(0, 750 * US), (1, 750 * US), (2, 1_500 * US), (4, 2_250 * US), (8, 3 * MS), (64, 3 * MS)])
def test_min_granularity_scales_with_the_log_of_the_cpus(cpus: int, granularity: int) -> None:
    """sysctl_sched_min_granularity: 0.75 ms times 1 + ilog2(min(cpus, 8)), as fair.c's log scaling gives."""
    assert min_granularity_ns(cpus) == granularity


def test_burst_limit_is_what_one_granularity_holds() -> None:
    """50 ns accesses on 2 CPUs: 1.5 ms / 50 ns = 30,000 a burst; a free cost has no limit; at least one."""
    engine, kernel = _machine(2)
    assert kernel.sched.burst_limit("access") == 30_000
    _engine, free = _machine(2, access=0)
    assert free.sched.burst_limit("access") > 10**18
    _engine, slow = _machine(1, access=1 * MS)
    assert slow.sched.burst_limit("access") == 1


def _warm_config(machine: dict[str, Any], pages: int, threads: int = 1, iterations: int = 2) -> Any:
    """Threads touching all *pages* of a fully cached file *iterations* times: the first pass faults, the others are warm."""
    return config_from_dict(
        {
            "name": "warm",
            "horizon": "1s",
            "machine": machine,
            "costs": {"wakeup": 0},
            "device": {"latency": "1ms", "jitter_pct": 0},
            "files": [{"name": "f", "size": f"{pages * 4}KiB", "cached": 1.0}],
            "processes": [
                {
                    "name": "p",
                    "mappings": [{"name": "m", "file": "f"}],
                    "threads": [
                        {"name": f"t{i}", "iterations": iterations, "program": [{"op": "touch", "mapping": "m", "pattern": "sequential", "pages": pages}]}
                        for i in range(threads)
                    ],
                }
            ],
        }
    )


def test_warm_touches_cost_the_same_time_in_one_burst_per_granularity() -> None:
    """A warm pass over 65,536 resident pages costs 65,536 x 50 ns of CPU, in ceil(65,536 / 15,000)
    bursts on one CPU (0.75 ms each): a handful of engine steps where each page used to be one."""
    pages = 65_536
    run = run_policy(_warm_config({"cpus": 1}, pages), "v4.19", keep_trace=False)
    touch = run.results["latency"]["t0/touch"]
    assert touch["count"] == 2 and run.results["counters"]["major_faults"] == 0
    assert touch["min_ns"] == pages * 50  # the warm pass: every access, none faulting
    cold = run_policy(_warm_config({"cpus": 1}, pages, iterations=1), "v4.19", keep_trace=False)
    assert run.stats.steps - cold.stats.steps <= -(-pages // 15_000) + 2  # the warm pass: its bursts and the op's end


def test_two_warm_threads_on_one_cpu_take_turns_by_granularity() -> None:
    """Two threads' warm passes on one CPU interleave in 0.75 ms bursts, so each pass takes about twice its CPU time."""
    pages = 60_000  # 3 ms of accesses: four bursts each
    results = run_policy(_warm_config({"cpus": 1}, pages, threads=2), "v4.19", keep_trace=False).results
    for name in ("t0", "t1"):
        warm = results["latency"][f"{name}/touch"]["min_ns"]
        assert 2 * pages * 50 - 750 * US <= warm <= 2 * pages * 50 + 750 * US
    assert results["counters"]["runqueue_waits"] >= 7
