"""The ``emu`` command line: run experiments, check configs, time the engine.

::

    emu run CONFIG --out DIR [--policy NAME]... [--seed N] [--tie-seed N]
                   [--strict] [--plots/--no-plots] [--force]
    emu validate CONFIG
    emu bench rwsem|pingpong [--json] [--t-end S] [--messages N]

Exit status: 0 success; 1 a run failed (an ``EmulatorError`` such as a hung
task or a livelock) or, with ``--strict``, broke an invariant; 2 the command
line or the config is wrong (one line per problem on stderr, no traceback,
nothing written).

Every failure of a run prints one command line that replays it exactly
(``emu run CONFIG --policy P --seed S [--tie-seed T] --out DIR2``): a run is
a pure function of (config, policy, seed, tie seed).

The comparison table goes to stdout; progress and errors go to stderr, so
``emu run ... > table.txt`` captures the table alone. This module imports the
kernel model lazily: ``emu validate`` works even while parts of the model do
not import.
"""

from __future__ import annotations

import pathlib
import random
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from actors.config import OP_NAMES, ConfigError, ExperimentConfig, resolve_policy
from actors.policy import PRESETS
from emu import NSEC_PER_SEC, EmulatorError, format_ns

if TYPE_CHECKING:
    from actors.experiment import ExperimentResult

#: Exit statuses.
EXIT_FAILED = 1
EXIT_USAGE = 2


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _die(lines: list[str] | str, status: int = EXIT_USAGE) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        click.echo(line, err=True)
    sys.exit(status)


def _load(path: pathlib.Path) -> ExperimentConfig:
    try:
        return ExperimentConfig.from_toml(path)
    except ConfigError as error:
        _die(error.problems)


def policy_names(config: ExperimentConfig) -> list[str]:
    """Every policy *config* can run: the presets, then its custom policies."""
    return [*PRESETS, *(p.name for p in config.policy if p.name not in PRESETS)]


def replay_command(config_path: pathlib.Path | str, policy: str, seed: int, tie_seed: int | None, out: str) -> str:
    """The one command line that reruns a single run exactly."""
    words = ["emu", "run", str(config_path), "--policy", policy, "--seed", str(seed)]
    if tie_seed is not None:
        words += ["--tie-seed", str(tie_seed)]
    words += ["--out", out]
    return shlex.join(words)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """faultpath: a deterministic emulator of the Linux page-fault path."""


# -- emu run ---------------------------------------------------------------------


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=pathlib.Path), help="Run directory to create.")
@click.option("--policy", "policies", multiple=True, metavar="NAME", help="Policy to run (repeatable); default: the config's.")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--tie-seed", type=int, default=None, help="Perturb same-instant order with this seed.")
@click.option("--strict", is_flag=True, help="Exit 1 if any run breaks an invariant.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write plots (if actors.plots exists).")
@click.option("--force", is_flag=True, help="Replace a non-empty existing DIR.")
def run(
    config_path: pathlib.Path,
    out: pathlib.Path,
    policies: tuple[str, ...],
    seed: int | None,
    tie_seed: int | None,
    strict: bool,
    plots: bool,
    force: bool,
) -> None:
    """Run CONFIG under each policy, write DIR, print a comparison table."""
    config = _load(config_path)
    valid = policy_names(config)
    unknown = [name for name in policies if name not in valid]
    if unknown:
        _die(f"error: unknown policy {', '.join(map(repr, unknown))}; valid policies: {', '.join(valid)}")
    names = list(dict.fromkeys(policies or config.policies))
    seed = config.seed if seed is None else seed

    from actors.output import OutputError, check_out_dir, write_run_dir

    try:
        check_out_dir(out, force=force)
    except OutputError as error:
        _die(f"error: {error}")

    result = _run_all(config, config_path, names, seed, tie_seed, out)
    try:
        warnings = write_run_dir(out, result, plots=plots, force=force)
    except OutputError as error:
        _die(f"error: {error}")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)

    _print_table(comparison_table(result))
    click.echo(f"wrote {out}", err=True)

    if strict:
        broken = [(run.policy, v) for run in result.runs for v in run.results["invariants"]["violations"]]
        if broken:
            for policy, violation in broken:
                fields = " ".join(f"{k}={v}" for k, v in violation.items() if k not in ("invariant", "ts"))
                at = format_ns(violation["ts"]) if isinstance(violation.get("ts"), int) else "end of run"
                click.echo(f"invariant violated: {policy}: {violation.get('invariant')} at {at}: {fields}".rstrip(": "), err=True)
            for policy in dict.fromkeys(p for p, _ in broken):
                click.echo(f"replay: {replay_command(config_path, policy, seed, tie_seed, f'{out}-replay')}", err=True)
            sys.exit(EXIT_FAILED)


def _run_all(
    config: ExperimentConfig,
    config_path: pathlib.Path,
    names: list[str],
    seed: int,
    tie_seed: int | None,
    out: pathlib.Path,
) -> ExperimentResult:
    from actors.experiment import ExperimentResult, config_digest, run_policy

    runs = []
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    with progress:
        task = progress.add_task(config.name, total=len(names))
        for name in names:
            progress.update(task, description=f"{config.name}: {name}")
            try:
                runs.append(run_policy(config, name, seed=seed, tie_seed=tie_seed))
            except EmulatorError as error:
                progress.stop()
                _run_failed(error, config_path, name, seed, tie_seed, out)
            except Exception as error:  # an emulator bug outside the engine's wrapping
                progress.stop()
                _stderr().print_exception()
                _run_failed(error, config_path, name, seed, tie_seed, out)
            progress.advance(task)
    return ExperimentResult(config=config, config_sha256=config_digest(config), runs=runs)


def _run_failed(error: BaseException, config_path: pathlib.Path, policy: str, seed: int, tie_seed: int | None, out: pathlib.Path) -> NoReturn:
    click.echo(f"error: policy {policy}: {type(error).__name__}: {error}", err=True)
    click.echo(f"replay: {replay_command(config_path, policy, seed, tie_seed, f'{out}-replay')}", err=True)
    sys.exit(EXIT_FAILED)


def _print_table(table: Table) -> None:
    """Print *table* on stdout: fitted to a terminal, at its natural width into a file or pipe."""
    stdout = Console(highlight=False)
    if not stdout.is_terminal:
        natural = Console(highlight=False, width=100_000).measure(table).maximum
        stdout = Console(highlight=False, width=max(80, natural))
    stdout.print(table)


def comparison_table(result: ExperimentResult) -> Table:
    """One row per policy: latencies (p50/p99/max per ``<task>/<op>``), faults, mmap_sem."""
    runs = [run.results for run in result.runs]
    keys = list(dict.fromkeys(k for r in runs for k in r["latency"] if not k.endswith("/think")))
    table = Table(title=f"{result.config.name} (seed {runs[0]['seed'] if runs else result.config.seed})")
    table.add_column("policy", no_wrap=True)
    for key in keys:
        for stat in ("p50", "p99", "max"):
            table.add_column(f"{key}\n{stat}", justify="right")
    for header in (
        "fault\nretries",
        "major\nfaults",
        "held across IO\ncount",
        "held across IO\ntotal",
        "mmap_sem\ncontended",
        "mmap_sem\nwait total",
        "mmap_sem\nwait max",
        "invariant\nviolations",
    ):
        table.add_column(header, justify="right")
    for r in runs:
        row = [r["policy"]]
        for key in keys:
            lat = r["latency"].get(key)
            row += ["-"] * 3 if lat is None else [format_ns(lat["p50_ns"]), format_ns(lat["p99_ns"]), format_ns(lat["max_ns"])]
        counters = r["counters"]
        sems = list(r["mmap_sem"].values())
        violations = len(r["invariants"]["violations"])
        row += [
            str(counters.get("fault_retries", 0)),
            str(counters.get("major_faults", 0)),
            str(counters.get("mmap_sem_held_across_io", 0)),
            format_ns(counters.get("mmap_sem_held_across_io_ns", 0)),
            str(sum(s["contended"] for s in sems)),
            format_ns(sum(s["wait_total_ns"] for s in sems)),
            format_ns(max((s["wait_max_ns"] for s in sems), default=0)),
            f"[red]{violations}[/red]" if violations else "0",
        ]
        table.add_row(*row)
    return table


# -- emu validate ------------------------------------------------------------------


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
def validate(config_path: pathlib.Path) -> None:
    """Check CONFIG; print the effective configuration and its policies as JSON."""
    config = _load(config_path)
    document = {
        "config": effective_config(config),
        "policies": {name: attrs.asdict(resolve_policy(config, name)) for name in config.policies},
    }
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def effective_config(config: ExperimentConfig) -> dict[str, Any]:
    """*config* with every default filled in, ops tagged with their ``op`` name (durations in ns, sizes in bytes)."""
    document = attrs.asdict(config)
    for process, spec in zip(document["processes"], config.processes, strict=True):
        for thread, thread_spec in zip(process["threads"], spec.threads, strict=True):
            thread["program"] = [{"op": OP_NAMES[type(op)], **attrs.asdict(op)} for op in thread_spec.program]
    return document


# -- emu bench ---------------------------------------------------------------------

#: The rwsem workload (bench/README.md and peer_simpy.py beside DESIGN.md).
BENCH_NPROC = 100
BENCH_THINK_MEAN_S = 1.0
BENCH_HOLD_READ_S = 0.010
BENCH_HOLD_WRITE_S = 0.020


@main.command()
@click.argument("name", type=click.Choice(["rwsem", "pingpong"]))
@click.option("--t-end", type=float, default=1000.0, show_default=True, help="rwsem: virtual seconds to run.")
@click.option("--messages", type=int, default=200_000, show_default=True, help="pingpong: deliveries.")
@click.option("--json", "as_json", is_flag=True, help='One JSON line {"name", "ops", "wall_s", "ops_per_s"}.')
def bench(name: str, t_end: float, messages: int, as_json: bool) -> None:
    """Time the engine on the SimPy peer's workloads (only the simulation is timed)."""
    ops, wall = bench_rwsem(t_end) if name == "rwsem" else bench_pingpong(messages)
    rate = ops / wall if wall > 0 else float("inf")
    if as_json:
        click.echo(orjson.dumps({"name": name, "ops": ops, "wall_s": wall, "ops_per_s": rate}).decode())
    else:
        click.echo(f"{name}: {ops} ops in {wall:.3f} s = {rate:,.0f}/s")


def bench_rwsem(t_end_s: float) -> tuple[int, float]:
    """The rwsem workload through the engine and the fault path's own mmap_sem.

    100 tasks share one ``MmStruct``; each is a ``TaskStruct`` (no kernel:
    nothing on the mmap_sem path needs it) acquiring with
    ``actors.mm.mmap.down_read``/``down_write`` and releasing with
    ``up_read``/``up_write``, under the 4.19 rwsem rules, tracing into a
    ``Trace(keep=False)``. Draws are the peer's (``random.Random(pid)``,
    ``expovariate``), rounded to whole nanoseconds.

    Returns:
        (lock acquisitions, wall seconds of ``engine.run()``).
    """
    from actors.locking.rwsem import RwsemSemantics
    from actors.mm.mmap import MmStruct, down_read, down_write, up_read, up_write
    from actors.sched.task import TaskStruct
    from emu import Engine, Trace

    engine = Engine(seed=0, trace=Trace(keep=False))
    mm = MmStruct(engine, "bench", 1, RwsemSemantics("4.19"))
    t_end_ns = round(t_end_s * NSEC_PER_SEC)
    acquired = [0]

    async def proc(actor: Any, pid: int) -> None:
        current = TaskStruct(None, actor.name, "bench", pid, 1, mm, "")  # type: ignore[arg-type]
        current.actor = actor
        rng = random.Random(pid)
        write = pid % 10 == 0
        hold_mean = BENCH_HOLD_WRITE_S if write else BENCH_HOLD_READ_S
        while actor.now_ns < t_end_ns:
            await actor.sleep(round(rng.expovariate(1.0 / BENCH_THINK_MEAN_S) * NSEC_PER_SEC))
            if write:
                await down_write(current, mm)
            else:
                await down_read(current, mm)
            acquired[0] += 1
            await actor.sleep(round(rng.expovariate(1.0 / hold_mean) * NSEC_PER_SEC))
            if write:
                up_write(current, mm)
            else:
                up_read(current, mm)

    for pid in range(BENCH_NPROC):
        engine.spawn(f"bench{pid}", proc, pid)
    start = time.perf_counter()
    engine.run()
    return acquired[0], time.perf_counter() - start


def bench_pingpong(messages: int) -> tuple[int, float]:
    """Two actors pass one message back and forth: ``emu.bench.pingpong`` if present.

    Returns:
        (messages delivered, wall seconds of the simulation).
    """
    try:
        from emu.bench import pingpong
    except ImportError:
        pingpong = _pingpong
    start = time.perf_counter()
    ops = pingpong(messages)
    return ops, time.perf_counter() - start


def _pingpong(messages: int) -> int:
    """Fallback pingpong through the engine's send/receive (as ``emu.bench``)."""
    from emu import Engine

    rounds = messages // 2
    engine = Engine(seed=0)
    peer: list[Any] = []

    async def ping(actor: Any) -> None:
        for i in range(rounds):
            actor.send(peer[0], i)
            await actor.receive()

    async def pong(actor: Any) -> None:
        for _ in range(rounds):
            envelope = await actor.receive()
            actor.send(envelope.src, envelope.msg)

    engine.spawn("ping", ping)
    peer.append(engine.spawn("pong", pong))
    engine.run()
    return 2 * rounds


if __name__ == "__main__":  # pragma: no cover
    main()
