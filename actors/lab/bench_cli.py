"""``emu bench``: time the engine and the emulator, as ratios measured in one run.

::

    emu bench rwsem     [--t-end S] [--driver D] [--repeats N] [--json]
    emu bench pingpong  [--messages N] [--driver D] [--repeats N] [--json]
    emu bench saturated [--waiters N] [--rounds N] [--driver D] [--repeats N] [--json]
    emu bench munmap    [--pages N] [--mapped N] [--repeats N] [--json]
    emu bench scenario CONFIG [--policy NAME]... [--repeats N] [--json]
    emu bench scale     [--tasks 10,100,...] [--horizons 0.5,2,...] [--base-tasks N] [--repeats N] [--json]

rwsem and pingpong are the SimPy peer benchmark's workloads (the peer runs
in another process; its driver alternates the two and takes ratios).
saturated runs its SimPy twin in this process, alternating with it round by
round, and reports the median per-acquisition ratio with its spread. The
machine may be shared: read ratios and medians, not single wall times.
Workloads are in ``actors.lab.bench``; docs/PERFORMANCE.md has the figures.
"""

from __future__ import annotations

import pathlib
import statistics

import click
import orjson

from emu.engine import DRIVERS

_repeats = click.option(
    "--repeats", type=click.IntRange(1, 1000), default=1, show_default=True, help="Time the workload N times; report the median and the spread."
)
_driver = click.option("--driver", type=click.Choice(DRIVERS), default="trio", show_default=True, help="Engine driver.")
_json = click.option("--json", "as_json", is_flag=True, help='One JSON line {"name", "ops", "wall_s" (median), "ops_per_s", "repeats", "wall_s_all", ...}.')


@click.group("bench")
def bench_command() -> None:
    """Time the engine on the SimPy peer's workloads (only the simulation is timed)."""


def _spread(values: list[float]) -> str:
    median = statistics.median(values)
    return f"median of {len(values)}; min {min(values):.3f}, max {max(values):.3f}, ±{(max(values) - min(values)) / 2 / median:.1%}"


def _report(name: str, ops: int, walls: list[float], driver: str, as_json: bool) -> None:
    median = statistics.median(walls)
    rate = ops / median if median > 0 else float("inf")
    if as_json:
        click.echo(orjson.dumps({"name": name, "ops": ops, "wall_s": median, "ops_per_s": rate, "repeats": len(walls), "wall_s_all": walls}).decode())
        return
    spread = "" if len(walls) == 1 else f" ({_spread(walls)} s)"
    click.echo(f"{name}: {ops} ops in {median:.3f} s = {rate:,.0f}/s ({driver} driver){spread}")


@bench_command.command()
@click.option("--t-end", type=float, default=1000.0, show_default=True, help="Virtual seconds to run.")
@_driver
@_repeats
@_json
def rwsem(t_end: float, driver: str, repeats: int, as_json: bool) -> None:
    """100 tasks take one mmap_sem through the fault path's down_read/down_write."""
    from actors.lab.bench import bench_rwsem

    runs = [bench_rwsem(t_end, driver) for _ in range(repeats)]
    _report("rwsem", runs[0][0], [wall for _, wall in runs], driver, as_json)


@bench_command.command()
@click.option("--messages", type=int, default=200_000, show_default=True, help="Deliveries.")
@_driver
@_repeats
@_json
def pingpong(messages: int, driver: str, repeats: int, as_json: bool) -> None:
    """Two actors pass one message back and forth through the engine's messaging."""
    from actors.lab.bench import bench_pingpong

    runs = [bench_pingpong(messages, driver) for _ in range(repeats)]
    _report("pingpong", runs[0][0], [wall for _, wall in runs], driver, as_json)


@bench_command.command()
@click.option("--waiters", type=click.IntRange(1), default=10_000, show_default=True, help="Tasks, every one always acquiring.")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True, help="Acquisitions per task.")
@_driver
@_repeats
@_json
def saturated(waiters: int, rounds: int, driver: str, repeats: int, as_json: bool) -> None:
    """A wait list about --waiters long: wall time per acquisition, against SimPy's, alternately."""
    from actors.lab.bench import bench_saturated, saturated_simpy

    ours: list[float] = []
    peer: list[float] = []
    for _ in range(repeats):
        ops, wall = bench_saturated(waiters, rounds, driver)
        ours.append(wall / ops * 1e6)
        peer_ops, peer_wall = saturated_simpy(waiters, rounds)
        peer.append(peer_wall / peer_ops * 1e6)
    ratios = [a / b for a, b in zip(ours, peer, strict=True)]
    us, ratio = statistics.median(ours), statistics.median(ratios)
    if as_json:
        record = {"name": "saturated", "ops": ops, "waiters": waiters, "us_per_op": us, "simpy_us_per_op": statistics.median(peer)}
        click.echo(orjson.dumps({**record, "ratio": ratio, "ratio_all": ratios, "repeats": repeats}).decode())
        return
    click.echo(
        f"saturated: {waiters} waiters, {ops} acquisitions: {us:.1f} us each ({driver} driver), "
        f"SimPy {statistics.median(peer):.1f} us; ratio {ratio:.2f}" + ("" if repeats == 1 else f" ({_spread(ratios)})")
    )


@bench_command.command()
@click.option("--pages", type=click.IntRange(1), default=1 << 20, show_default=True, help="The VMA's size in pages.")
@click.option("--mapped", type=click.IntRange(0), default=0, show_default=True, help="Pages with a present PTE (from the start).")
@_repeats
@_json
def munmap(pages: int, mapped: int, repeats: int, as_json: bool) -> None:
    """mprotect read-only, then munmap, one large VMA: cost of the page-table walks."""
    from actors.lab.bench import bench_munmap

    if mapped > pages:
        raise click.BadParameter(f"{mapped} is more than --pages {pages}", param_hint="--mapped")
    walls = [bench_munmap(pages, mapped)[1] for _ in range(repeats)]
    if as_json:
        click.echo(orjson.dumps({"name": "munmap", "pages": pages, "mapped": mapped, "wall_s": statistics.median(walls), "repeats": repeats, "wall_s_all": walls}).decode())
        return
    ms = [wall * 1e3 for wall in walls]
    spread = "" if repeats == 1 else f" ({_spread(ms)} ms)"
    click.echo(f"munmap: {pages}-page VMA, {mapped} mapped: {statistics.median(ms):.3f} ms{spread}")


def _floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise click.BadParameter(f"expected positive numbers, got {text!r}")
    return values


@bench_command.command()
@click.option("--tasks", "tasks_text", default="10,100,1000,10000", show_default=True, help="Task counts to run (at the first horizon).")
@click.option("--horizons", "horizons_text", default="0.5,2,16", show_default=True, help="Virtual seconds to run (at --base-tasks).")
@click.option("--base-tasks", type=click.IntRange(1), default=100, show_default=True, help="Tasks of the horizon series.")
@_repeats
@_json
def scale(tasks_text: str, horizons_text: str, base_tasks: int, repeats: int, as_json: bool) -> None:
    """Simulation cost per trace record as tasks and virtual time grow (the flatter the better)."""
    from actors.lab.bench import bench_scale

    tasks = [int(t) for t in _floats(tasks_text)]
    horizons = _floats(horizons_text)
    points = [(t, horizons[0]) for t in tasks] + [(base_tasks, h) for h in horizons[1:]]
    rows = []
    for n, horizon in points:
        runs = [bench_scale(n, horizon) for _ in range(repeats)]
        per_record = [wall / records * 1e6 for records, wall in runs]
        rows.append({"tasks": n, "horizon_s": horizon, "records": runs[0][0], "us_per_record": statistics.median(per_record), "us_per_record_all": per_record})
    costs = [row["us_per_record"] for row in rows]
    spread = max(costs) / min(costs)
    if as_json:
        click.echo(orjson.dumps({"name": "scale", "points": rows, "max_over_min": spread, "repeats": repeats}).decode())
        return
    for row in rows:
        click.echo(f"scale: {row['tasks']:>6} tasks, {row['horizon_s']:>5g} s: {row['records']:>8} records, {row['us_per_record']:.1f} us/record")
    click.echo(f"scale: max/min cost per record {spread:.2f}")


@bench_command.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
@click.option("--policy", "policies", multiple=True, metavar="NAME", help="Only this policy (repeatable; default: the config's).")
@_driver
@_repeats
@_json
def scenario(config_path: pathlib.Path, policies: tuple[str, ...], driver: str, repeats: int, as_json: bool) -> None:
    """Time one config as emu run does, by phase: set-up, simulation, results, plots, perfetto."""
    from actors.lab.bench_scenario import PHASES, share, summarise, time_scenario
    from actors.lab.cli import _load, policy_names

    config = _load(config_path)
    unknown = [name for name in policies if name not in policy_names(config)]
    if unknown:
        raise click.BadParameter(f"unknown policy {', '.join(map(repr, unknown))}; valid: {', '.join(policy_names(config))}", param_hint="--policy")
    names = list(dict.fromkeys(policies or config.policies))
    passes, digests = [], {}
    for _ in range(repeats):
        seconds, digests = time_scenario(config, names, driver=driver)
        passes.append(seconds)
    summary = summarise(passes)
    if as_json:
        click.echo(orjson.dumps({"name": "scenario", "config": str(config_path), "policies": names, "driver": driver, "repeats": repeats, "phases": summary, "digests": digests}).decode())
        return
    shares = share(summary)
    for phase in (*PHASES, "total"):
        row = summary[phase]
        part = "" if phase == "total" else f" {shares[phase]:5.1%}"
        click.echo(f"{phase:>10}: {row['median']:8.3f} s{part}  (min {row['min']:.3f}, max {row['max']:.3f}; median of {repeats})")
    click.echo("digests: " + " ".join(f"{policy}={digest}" for policy, digest in digests.items()))


@bench_command.command()
@click.option("--processes", type=click.IntRange(1), default=100, show_default=True, help="Processes, each mapping the whole file.")
@click.option("--file-mib", type=click.IntRange(1), default=4096, show_default=True, help="The fully cached file's size in MiB.")
@click.option("--hot-pages", type=click.IntRange(1), default=4096, show_default=True, help="Pages of each process's hot set.")
@click.option("--horizon", "horizon_s", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True, help="Virtual seconds to run.")
@click.option("--cpus", type=click.IntRange(1), default=8, show_default=True, help="[machine] cpus.")
@_json
def warm(processes: int, file_mib: int, hot_pages: int, horizon_s: float, cpus: int, as_json: bool) -> None:
    """A warm page cache at scale: steps against the livelock guard's budget, and wall time."""
    from actors.lab.bench_warm import bench_warm

    record = bench_warm(processes, file_mib, hot_pages, horizon_s, cpus)
    if as_json:
        click.echo(orjson.dumps({"name": "warm", "processes": processes, "file_mib": file_mib, **record}).decode())
        return
    click.echo(
        f"warm: {processes} processes on a cached {file_mib} MiB file, {cpus} CPUs: {record['end']} at {record['virtual_s']:g} virtual s; "
        f"{record['steps']:,} steps of the guard's {record['max_steps']:,}; {record['faults']:,} faults, "
        f"{record['cpu_s']:.2f} CPU s; {record['wall_s']:.1f} s wall"
    )
