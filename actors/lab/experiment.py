"""Running experiments: one config, several policies, results in schema 1.

``run_policy(config, "v4.19")`` builds an engine and a ``Kernel``
(``build_policy``), runs to the horizon or until every non-daemon task ends
(``simulate``) and returns a ``RunResult`` (``finish_policy``)
whose ``results`` is one entry of ``results.json``'s ``runs`` (docs/DESIGN.md,
"Run directory") and whose ``trace`` holds the records. ``run_experiment`` does the
same for every policy the config (or the caller) names, on the same seed.

A run is a pure function of (config, policy, seed, tie seed): same inputs,
same ``trace_digest``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from actors.invariants import check_invariants
from actors.kernel import Kernel
from actors.lab.config import ExperimentConfig, resolve_policy
from actors.mm.swap import swap_summary
from emu import EmulatorError, Engine, RunStats, Trace
from emu.gcheap import frozen_heap

SCHEMA = 1
#: Livelock guard: heap entries per virtual second of horizon, at least.
STEPS_PER_SECOND = 5_000_000
#: Counters every run reports, even when zero.
BASE_COUNTERS = (
    "faults",
    "major_faults",
    "fault_retries",
    "bios",
    "throttled_bios",
    "mmap_sem_held_across_io",
    "mmap_sem_held_across_io_ns",
    "mmap_sem_held_across_throttle",
    "mmap_sem_held_across_throttle_ns",
    "mmap_sem_held_across_fs_sleep",
    "mmap_sem_held_across_fs_sleep_ns",
)


@attrs.frozen(kw_only=True)
class RunResult:
    """One policy's run: the results entry, the trace and the engine's end state."""

    policy: str
    results: dict[str, Any]
    #: ``None`` once its files are written and it is dropped (``actors.lab.policy_files``).
    trace: Trace | None
    stats: RunStats
    #: Every latency sample behind ``results["latency"]``, keyed ``<task>/<op>``
    #: in ns, in recording order (the plots' CDFs; optional).
    samples: dict[str, list[int]] = attrs.field(factory=dict)
    #: ``{actor: (tgid, pid)}`` of every task (kernel threads: ``(pid, pid)``), for the Perfetto timeline's ids.
    tasks: dict[str, tuple[int, int]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ExperimentResult:
    """Every run of an experiment, plus what ``results.json`` needs at the top."""

    config: ExperimentConfig
    config_sha256: str
    runs: list[RunResult]

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` document (schema 1)."""
        return {
            "schema": SCHEMA,
            "experiment": self.config.name,
            "config_sha256": self.config_sha256,
            "runs": [run.results for run in self.runs],
        }


def config_digest(config: ExperimentConfig) -> str:
    """SHA-256 of the config's source text if it came from a file, else of its repr."""
    try:
        with open(config.source, "rb") as src:
            return hashlib.sha256(src.read()).hexdigest()
    except OSError:
        return hashlib.sha256(repr(config).encode()).hexdigest()


def run_policy(
    config: ExperimentConfig,
    policy: str,
    *,
    seed: int | None = None,
    tie_seed: int | None = None,
    keep_trace: bool = True,
    driver: str = "trio",
) -> RunResult:
    """Run *config* under *policy*; see the module docstring. *driver*: the engine's (same results)."""
    engine, kernel = build_policy(config, policy, seed=seed, tie_seed=tie_seed, keep_trace=keep_trace, driver=driver)
    return finish_policy(kernel, policy, simulate(engine))


def build_policy(
    config: ExperimentConfig,
    policy: str,
    *,
    seed: int | None = None,
    tie_seed: int | None = None,
    keep_trace: bool = True,
    driver: str = "trio",
) -> tuple[Engine, Kernel]:
    """The set-up phase of ``run_policy``: the engine and the kernel, ready to run."""
    engine = Engine(
        seed=config.seed if seed is None else seed,
        tie_seed=tie_seed,
        horizon_ns=config.horizon,
        max_steps=max(1_000_000, STEPS_PER_SECOND * config.horizon // 1_000_000_000),
        trace=Trace(keep=keep_trace),
        driver=driver,
    )
    return engine, Kernel(engine, config, resolve_policy(config, policy))


def simulate(engine: Engine) -> RunStats:
    """The simulation phase of ``run_policy``: run to the end with the set-up heap frozen (``emu.gcheap``)."""
    with frozen_heap():
        return engine.run()


def finish_policy(kernel: Kernel, policy: str, stats: RunStats) -> RunResult:
    """The summary phase of ``run_policy``: the results entry, the samples and the task ids.

    Inside ``frozen_heap``, as the simulation: just after it, the run's whole
    heap is in the collector's oldest generation, and the summary's
    allocations would set off a full collection of it (0.3-0.5 s for a
    seed-inversion policy) that finds nothing to free.
    """
    with frozen_heap():
        return _finish_policy(kernel, policy, stats)


def _finish_policy(kernel: Kernel, policy: str, stats: RunStats) -> RunResult:
    engine, config = kernel.engine, kernel.config
    results = {
        "policy": policy,
        "seed": engine.seed,
        "tie_seed": engine.tie_seed,
        "trace_digest": stats.trace_digest,
        "virtual_ns": config.horizon if stats.reason == "horizon" else stats.now_ns,  # the horizon itself, not the last event before it
        "events": stats.events,
        "end": stats.reason,
        "latency": latency_summary(kernel.latency),
        "counters": counters(kernel),
        "mmap_sem": mmap_sem_summary(kernel),
        "iolatency": iolatency_summary(kernel),
    }
    results["faults"] = fault_summary(kernel)
    if kernel.memcg.limited or kernel.swap is not None:
        results["memcg"] = memcg_summary(kernel, engine.now_ns)
    if kernel.swap is not None:
        results["swap"] = swap_summary(kernel)
    results["invariants"] = check_invariants(kernel)
    samples = {f"{task}/{op}": list(values) for (task, op), values in sorted(kernel.latency.items())}
    tasks = {task.comm: (task.tgid or task.pid, task.pid) for task in kernel.tasks}
    return RunResult(policy=policy, results=results, trace=engine.trace, stats=stats, samples=samples, tasks=tasks)


@attrs.frozen(kw_only=True)
class PolicyFailure:
    """A run that raised, as a worker process reports it (exceptions need not pickle).

    Attributes:
        policy: the policy that failed.
        error: ``"<ExceptionType>: <message>"``.
        emulator_error: an ``EmulatorError`` (a hung task, a livelock), not an emulator bug.
        traceback: the formatted traceback (shown for emulator bugs).
    """

    policy: str
    error: str
    emulator_error: bool
    traceback: str


def run_policy_job(
    config: ExperimentConfig,
    policy: str,
    seed: int | None,
    tie_seed: int | None,
    then: Callable[[RunResult], Any] | None = None,
    driver: str = "trio",
) -> Any:
    """``run_policy`` in a worker process: any failure of the run comes back as a ``PolicyFailure``.

    *then*: applied to the run's result in the worker (``emu run`` writes
    the policy's own files there, ``PolicyFiles.write``); its return value
    is the job's. A failure inside it is not the run's and is not caught.

    Ctrl-C that reaches a worker ends it at once and silently (the parent
    says "interrupted" and writes nothing); a worker whose parent is gone
    (interrupted, killed) stops within half a second of wall time. Nothing
    here reads the wall clock for the run itself.
    """
    signal.signal(signal.SIGINT, lambda _signum, _frame: os._exit(130))
    _watch_parent(os.getppid())
    try:
        run = run_policy(config, policy, seed=seed, tie_seed=tie_seed, driver=driver)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which exits
        text = "".join(traceback.format_exception(error))
        return PolicyFailure(policy=policy, error=f"{type(error).__name__}: {error}", emulator_error=isinstance(error, EmulatorError), traceback=text)
    return run if then is None else then(run)


@functools.cache
def _watch_parent(parent: int) -> None:
    """Once per worker process: a thread that ends the process when *parent* is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(130)

    threading.Thread(target=watch, name="emu-parent-watch", daemon=True).start()


def run_experiment(
    config: ExperimentConfig,
    policies: list[str] | None = None,
    *,
    seed: int | None = None,
    tie_seed: int | None = None,
    keep_trace: bool = True,
) -> ExperimentResult:
    """Run every policy of *policies* (default: the config's) on the same seed."""
    names = list(config.policies if not policies else policies)
    runs = [run_policy(config, name, seed=seed, tie_seed=tie_seed, keep_trace=keep_trace) for name in names]
    return ExperimentResult(config=config, config_sha256=config_digest(config), runs=runs)


def latency_summary(samples: dict[tuple[str, str], list[int]]) -> dict[str, dict[str, int]]:
    """Exact percentiles (a real sample each) of every ``<task>/<op>``, in ns."""
    out: dict[str, dict[str, int]] = {}
    for (task, op), values in sorted(samples.items()):
        data = np.asarray(values, dtype=np.int64)
        p50, p90, p99, p999 = np.percentile(data, [50, 90, 99, 99.9], method="inverted_cdf")
        out[f"{task}/{op}"] = {
            "count": int(data.size),
            "min_ns": int(data.min()),
            "p50_ns": int(p50),
            "p90_ns": int(p90),
            "p99_ns": int(p99),
            "p999_ns": int(p999),
            "max_ns": int(data.max()),
            "mean_ns": int(data.sum() // data.size),
        }
    return out


def counters(kernel: Kernel) -> dict[str, int]:
    """Run counters: the base set, the block layer's, then everything counted, sorted."""
    bdev = kernel.bdev.statistics()
    out = {name: 0 for name in BASE_COUNTERS}
    out.update(sorted(kernel.counters.items()))
    out["bios"] = bdev.nr_submitted
    out["throttled_bios"] = bdev.nr_throttled
    out["throttle_wait_ns"] = bdev.throttle_wait_ns
    out["bio_errors"] = bdev.nr_errors
    out["merged_bios"] = bdev.nr_merged
    if kernel.bdev.throtl.active:
        throtl = kernel.bdev.throtl.statistics()
        out["throtl_queued_bios"] = throtl.nr_queued
        out["throtl_wait_ns"] = throtl.wait_ns
    sched = kernel.sched.statistics()
    out["runqueue_waits"] = sched.nr_waits
    out["runqueue_wait_ns"] = sched.wait_ns
    return out


def fault_summary(kernel: Kernel) -> dict[str, dict[str, int]]:
    """Each thread's ``min_flt`` and ``maj_flt`` (as ``/proc/<pid>/task/<tid>/stat``), summed over processes, by thread name."""
    out: dict[str, dict[str, int]] = {}
    for task in kernel.tasks:
        if task.mm is not None:
            counts = out.setdefault(task.thread, {"min_flt": 0, "maj_flt": 0})
            counts["min_flt"] += task.min_flt
            counts["maj_flt"] += task.maj_flt
    return dict(sorted(out.items()))


def mmap_sem_summary(kernel: Kernel) -> dict[str, dict[str, int]]:
    """Per-process mmap_sem statistics, ``perf lock contention`` style."""
    out = {}
    for name, mm in kernel.mms.items():
        st = mm.mmap_sem.statistics()
        out[name] = {
            "read_acquires": st.read_acquires,
            "write_acquires": st.write_acquires,
            "contended": st.contended,
            "wait_max_ns": st.wait_max_ns,
            "wait_total_ns": st.wait_total_ns,
            "hold_max_ns": st.hold_max_ns,
        }
    return out


def iolatency_summary(kernel: Kernel) -> dict[str, dict[str, int]]:
    """io.latency state of every group at the end of the run."""
    out = {}
    iolat = kernel.bdev.iolat
    for path in iolat.groups():
        st = iolat.statistics(path)
        out[path or "/"] = {
            "depth": st.depth,
            "use_delay": st.use_delay,
            "scale_cookie": st.scale_cookie,
            "min_lat_nsec": st.min_lat_nsec or 0,
        }
    return out


def memcg_summary(kernel: Kernel, now_ns: int) -> dict[str, dict[str, Any]]:
    """Each memcg at the end of the run: usage, limits and peak in pages, ``memory.events``, PSI totals."""
    out = {}
    psi = kernel.psi.totals(now_ns)
    for path, memcg in kernel.memcg.groups.items():
        some, full = psi[path]
        out[path or "/"] = {
            "usage_pages": memcg.usage,
            "max_pages": memcg.max,
            "high_pages": memcg.high,
            "watermark_pages": memcg.watermark,
            **memcg.events,
            "psi_some_ns": some,
            "psi_full_ns": full,
        }
    return out
