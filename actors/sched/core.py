"""CPU time and the run queue: what a task's CPU work costs and whom it waits for.

Mirrors, far from line by line, the part of kernel/sched/core.c that this
model needs: a task that has CPU work to do must be on a CPU
(``schedule()`` picks the next runnable task when one frees), and a task
that was asleep takes ``[costs] wakeup`` from ``try_to_wake_up()`` to
running. The costs are ``[costs]`` (``actors.schema.CostsConfig``, each
default's source in ``actors.schema.COST_SOURCES``), scaled by ``costs.scale``; the CPUs are
``[machine] cpus``.

How paths spend CPU:

* ``await cpu_work(current, "minor_fault", ...)``: the named costs, plus any
  ``extra_ns`` and whatever the task accrued with ``charge``, as one
  stretch of CPU time. With ``cpus = 0`` every task has a CPU of its own and
  this is a plain sleep; otherwise the task takes a free CPU or waits FIFO
  for one (``sched_runqueue_wait`` in the trace), runs, and hands the CPU to
  the next waiter.
* ``charge(current, "page_alloc")``: work done inside a function that cannot
  sleep (adding a page to the cache, mapping a PTE in fault-around); the
  time is paid at the task's next ``cpu_work``, which on these paths is the
  bio submission or the end of the fault attempt, still under the same locks.
* ``await cpu_work(current, "access", n=k)``: a run of *k* user accesses that
  need no fault, as one burst; ``burst_limit`` caps *k* at what fits in one
  ``sysctl_sched_min_granularity``, the shortest stretch CFS lets a task
  run before a waiter may preempt it.
* ``await wakeup(current)``: after every blocking wait (mmap_sem, page lock,
  request tag, io.latency throttle, IO completion): the wake-up latency, a
  delay that holds no CPU.

Costs run through the engine like any other wait: integer nanoseconds, no
randomness, the same trace for the same config and seed.

What it leaves out of CFS: it is a FIFO of CPU bursts, not a fair
scheduler. No vruntime, weights, nice levels or cgroup CPU shares; no time
slices and no preemption (a burst runs to its end, and a task may lose its
CPU between two bursts to a waiter); no wake-up preemption or wake-up
affinity; one global queue instead of per-CPU run queues and load
balancing; no idle states (``wakeup`` is one fixed latency whatever the
target CPU was doing); interrupts and softirqs (IO completions) take no
CPU. Optimistic spinning on mmap_sem is not CPU time here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import emu

if TYPE_CHECKING:
    from actors.schema import CostsConfig, MachineConfig

#: Every ``[costs]`` item (``CostsConfig`` fields but ``scale``), in documentation order.
COST_NAMES = (
    "access",
    "fault_entry",
    "minor_fault",
    "major_fault",
    "page_alloc",
    "bio_build",
    "fault_around_pte",
    "syscall",
    "vma_alloc",
    "vma_free",
    "pgtable_teardown",
    "tlb_shootdown",
    "proc_read",
    "wakeup",
)


#: kernel/sched/fair.c (v4.19) ``normalized_sysctl_sched_min_granularity``: 0.75 ms,
#: scaled by ``1 + ilog2(min(cpus, 8))`` (``get_update_sysctl_factor``, SCHED_TUNABLESCALING_LOG).
MIN_GRANULARITY_NS = 750_000


def min_granularity_ns(cpus: int) -> int:
    """``sysctl_sched_min_granularity`` on *cpus* CPUs (``cpus = 0``, no contention, counts as one)."""
    return MIN_GRANULARITY_NS * max(1, min(cpus, 8)).bit_length()


def resolve_costs(costs: CostsConfig) -> dict[str, int]:
    """Each cost in ns after ``scale`` (what ``emu validate`` prints and the run uses)."""
    return {name: int(getattr(costs, name) * costs.scale) for name in COST_NAMES}


@attrs.frozen(kw_only=True)
class SchedStatistics:
    """The run queue at one instant and its totals: waits for a CPU and their time."""

    cpus: int
    running: int
    waiting: int
    nr_waits: int
    wait_ns: int
    cpu_ns: int


class Scheduler:
    """The machine's CPUs and the costs of CPU work (``struct rq``, one for all CPUs).

    Args:
        engine: the engine the run queue's wait queue lives in.
        machine: ``[machine]`` (``cpus``; 0: no contention).
        costs: ``[costs]``.
    """

    def __init__(self, engine: emu.Engine, machine: MachineConfig, costs: CostsConfig) -> None:
        self.cpus = machine.cpus
        self.costs = resolve_costs(costs)
        self.min_granularity_ns = min_granularity_ns(machine.cpus)
        self._running = 0
        self._queue = emu.WaitQueue(engine, "run queue", self._holders)
        self._nr_waits = self._wait_ns = self._cpu_ns = 0

    def _holders(self) -> list[str]:
        return [f"{self._running}/{self.cpus} CPUs busy"]

    def burst_limit(self, what: str) -> int:
        """How many *what* fit in one ``sysctl_sched_min_granularity`` burst (at least one)."""
        cost = self.costs[what]
        return max(1, self.min_granularity_ns // cost) if cost else _UNLIMITED

    def cost(self, *whats: str | None, n: int = 1) -> int:
        """The sum of the named costs, *n* times each (``None`` names nothing)."""
        costs, ns = self.costs, 0
        for what in whats:
            if what is not None:
                ns += costs[what]
        return n * ns

    async def run(self, current: Any, ns: int) -> None:
        """Spend *ns* of CPU time on some CPU, waiting FIFO for one if all are busy."""
        actor = current.actor
        self._cpu_ns += ns
        if not self.cpus:
            await actor.sleep(ns)
            return
        if self._running < self.cpus and not len(self._queue):
            self._running += 1
        else:
            start = actor.now_ns
            await self._queue.wait(actor, current.comm)  # the CPU is handed over by pick_next()
            waited = actor.now_ns - start
            self._nr_waits += 1
            self._wait_ns += waited
            actor.log.info("sched_runqueue_wait", comm=current.comm, waited_ns=waited)
        try:
            await actor.sleep(ns)
        finally:
            self._pick_next()

    def _pick_next(self) -> None:
        """``schedule()`` on the CPU just freed: the first waiter gets it, else it goes idle."""
        key = self._queue.first()
        if key is not None:
            self._queue.wake(key)
            return
        self._running -= 1

    def statistics(self) -> SchedStatistics:
        return SchedStatistics(cpus=self.cpus, running=self._running, waiting=len(self._queue),
                               nr_waits=self._nr_waits, wait_ns=self._wait_ns, cpu_ns=self._cpu_ns)  # fmt: skip


#: ``burst_limit`` of a cost of zero: any run fits.
_UNLIMITED = 1 << 62


def burst_limit(current: Any, what: str) -> int:
    """How many *what* one ``cpu_work`` burst of *current* may batch (``Scheduler.burst_limit``)."""
    sched = _scheduler(current)
    return _UNLIMITED if sched is None else sched.burst_limit(what)


def _scheduler(current: Any) -> Scheduler | None:
    """The machine's scheduler, or ``None`` for test doubles without one (then CPU work is free)."""
    try:
        return current.kernel.sched
    except AttributeError:
        return None


def charge(current: Any, what: str, n: int = 1) -> None:
    """Accrue *n* times cost *what* to pay at *current*'s next ``cpu_work`` (for non-sleeping paths)."""
    sched = _scheduler(current)
    if sched is not None and n:
        current.cpu_debt += n * sched.costs[what]


async def cpu_work(current: Any, *whats: str | None, extra_ns: int = 0, n: int = 1) -> None:
    """Spend the named costs (*n* times each), *extra_ns* and the accrued debt as one CPU burst."""
    sched = _scheduler(current)
    if sched is None:
        if extra_ns:
            await current.actor.sleep(extra_ns)
        return
    ns = sched.cost(*whats, n=n) + extra_ns + current.cpu_debt
    current.cpu_debt = 0
    if ns:
        await sched.run(current, ns)


async def wakeup(current: Any) -> None:
    """The wake-up latency (``[costs] wakeup``) after a blocking wait; holds no CPU."""
    sched = _scheduler(current)
    if sched is not None and (ns := sched.costs["wakeup"]):
        await current.actor.sleep(ns)
