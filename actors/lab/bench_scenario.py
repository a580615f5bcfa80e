"""``emu bench scenario CONFIG``: one shipped config, timed phase by phase.

The phases are those of ``emu run``: set-up (engine and kernel,
``build_policy``), simulation (``simulate``), then each output: results
(``finish_policy``, results.json, trace.jsonl), plots and the Perfetto
file, written into a scratch directory that is removed afterwards. As in
``emu run``, each policy's trace is decoded once for its Perfetto file and
its timeline (``actors.lab.policy_files``); that pass counts as Perfetto
time, working out the timeline's intervals from it as plot time. Each
phase is summed over the config's policies; ``repeats`` runs of the whole
give the median and the spread of each. Nothing here changes what a run
does: the digests are printed so a before/after comparison can check them.
"""

from __future__ import annotations

import pathlib
import statistics
import tempfile
import time
from typing import Any

from actors.lab.config import ExperimentConfig
from actors.lab.drawn import drawn_records
from actors.lab.experiment import ExperimentResult, build_policy, config_digest, finish_policy, simulate
from actors.lab.output import TraceFiles, _write_contents, policy_files
from actors.lab.policy_files import WrittenRun
from actors.lab.rundir import TRACE_JSONL, policy_dir_name
from actors.lab.timeline_intervals import timeline_intervals
from emu.gcheap import frozen_heap

PHASES = ("setup", "simulation", "results", "plots", "perfetto")


def time_scenario(config: ExperimentConfig, policies: list[str], *, driver: str = "trio") -> tuple[dict[str, float], dict[str, str]]:
    """One timed pass over *policies* on the engine *driver*: (seconds per phase, trace digest per policy)."""
    seconds = dict.fromkeys(PHASES, 0.0)
    runs = []
    clock = time.perf_counter
    for policy in policies:
        start = clock()
        engine, kernel = build_policy(config, policy, driver=driver)
        built = clock()
        stats = simulate(engine)
        simulated = clock()
        runs.append(finish_policy(kernel, policy, stats))
        seconds["setup"] += built - start
        seconds["simulation"] += simulated - built
        seconds["results"] += clock() - simulated
    result = ExperimentResult(config=config, config_sha256=config_digest(config), runs=runs)
    from actors.lab.plots import plot_runs, write_plots, write_timeline

    with tempfile.TemporaryDirectory(prefix="emu-bench-") as scratch, frozen_heap():  # as PolicyFiles.write and _write_contents
        root = pathlib.Path(scratch)
        files = policy_files(root, config, result.config_sha256, TraceFiles(), plots=True)
        written = {}
        for index, run in enumerate(runs):  # each run's own files, as emu run's workers write them
            assert run.trace is not None
            run_dir = root / policy_dir_name(run.policy)
            start = clock()
            run_dir.mkdir()
            run.trace.write_jsonl(run_dir / TRACE_JSONL)
            jsonl = clock()
            drawn = drawn_records(run.trace.records(), files.drawn_events())
            files.write_perfetto(run_dir, run, drawn)
            exported = clock()
            written[index] = WrittenRun(run=run, intervals=timeline_intervals(drawn.records, actors=drawn.actors, end_ns=drawn.end_ns))
            seconds["results"] += jsonl - start
            seconds["perfetto"] += exported - jsonl
            seconds["plots"] += clock() - exported
        start = clock()
        _write_contents(root, result, TraceFiles(jsonl=False, perfetto="none"), plots=False, jobs=1, written=written)
        summarised = clock()
        write_plots(root, result, timelines=False)
        for index in written:
            write_timeline(root, plot_runs(result), index, intervals=written[index].intervals)
        seconds["results"] += summarised - start
        seconds["plots"] += clock() - summarised
    return seconds, {run.policy: run.results["trace_digest"] for run in runs}


def summarise(passes: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each phase (and of the total) over the passes."""
    table: dict[str, list[float]] = {phase: [p[phase] for p in passes] for phase in PHASES}
    table["total"] = [sum(p.values()) for p in passes]
    return {phase: {"median": statistics.median(v), "min": min(v), "max": max(v)} for phase, v in table.items()}


def share(summary: dict[str, Any]) -> dict[str, float]:
    """Each phase's median as a fraction of the median total."""
    total = summary["total"]["median"]
    return {phase: summary[phase]["median"] / total for phase in PHASES}
