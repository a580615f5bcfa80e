"""``emu bench warm``: many processes touching a fully cached file, the warm page cache at scale.

Every page of the file is in the page cache from the start; each process
maps the whole file and touches pages of a hot set in 4,096-page ops, with
no think time, on ``cpus`` CPUs. After its first touch of each page (a minor
fault; fault-around maps 16 PTEs) every access is a PTE hit: CPU time but
no fault. A run of such hits is one CPU burst (``actors.sched.task``), so
the engine's steps grow with the faults and the scheduler's granularity,
not with the accesses; the livelock guard (``STEPS_PER_SECOND`` per virtual
second) is what a run that took a step per access would trip.

The figures: how the run ended, engine steps against the guard's budget,
faults, CPU time spent, wall time of the simulation.
"""

from __future__ import annotations

import time
from typing import Any

from actors.lab.config import ExperimentConfig, config_from_dict
from emu import NSEC_PER_SEC, EmulatorError


def warm_config(processes: int, file_mib: int, hot_pages: int, horizon_s: float, cpus: int) -> ExperimentConfig:
    """The warm-cache workload (see the module docstring)."""
    return config_from_dict(
        {
            "name": "bench-warm",
            "horizon": f"{round(horizon_s * NSEC_PER_SEC)}ns",
            "policies": ["v4.19"],
            "machine": {"cpus": cpus},
            "files": [{"name": "big", "size": f"{file_mib}MiB", "cached": 1.0}],
            "processes": [
                {
                    "name": "svc",
                    "count": processes,
                    "mappings": [{"name": "big", "file": "big"}],
                    "threads": [{"name": "t", "program": [{"op": "touch", "mapping": "big", "pattern": "hotset", "hot_pages": hot_pages, "pages": 4096}]}],
                }
            ],
        }
    )


def bench_warm(processes: int, file_mib: int, hot_pages: int, horizon_s: float, cpus: int) -> dict[str, Any]:
    """Run the warm-cache workload as ``emu run`` does; how it ended, its steps, the guard's budget and wall seconds."""
    from actors.lab.experiment import build_policy, simulate  # noqa: PLC0415 - the lab's phases, not the engine alone

    engine, kernel = build_policy(warm_config(processes, file_mib, hot_pages, horizon_s, cpus), "v4.19")
    start = time.perf_counter()
    try:
        stats = simulate(engine)
        end, steps = stats.reason, stats.steps
    except EmulatorError as error:
        end, steps = type(error).__name__, engine.steps
    wall = time.perf_counter() - start
    return {
        "end": end,
        "steps": steps,
        "max_steps": engine.max_steps,
        "virtual_s": engine.now_ns / NSEC_PER_SEC,
        "faults": kernel.counters.get("faults", 0),
        "cpu_s": kernel.sched.statistics().cpu_ns / NSEC_PER_SEC,
        "wall_s": wall,
    }
