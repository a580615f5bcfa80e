"""The ``emu`` command line: run experiments, check configs, time the engine.

::

    emu run CONFIG --out DIR [--policy NAME]... [--seed N] [--tie-seed N]
                   [--strict] [--plots/--no-plots] [--force]
                   [--format table|markdown|json]
    emu report DIR [--format table|markdown|json] [--plots/--no-plots]
                   [--window START:END]
    emu replay DIR [--policy NAME]...
    emu validate CONFIG
    emu bench rwsem|pingpong [--json] [--t-end S] [--messages N]

Exit status: 0 success; 1 a run failed (an ``EmulatorError`` such as a hung
task or a livelock), with ``--strict`` broke an invariant, or a replay
diverged from its recorded trace; 2 the command line, the config or the run
directory is wrong (one line per problem on stderr, no traceback, nothing
written).

Every failure of a run prints one command line that replays it exactly
(``emu run CONFIG --policy P --seed S [--tie-seed T] --out DIR2``): a run is
a pure function of (config, policy, seed, tie seed).

The comparison report (``actors.lab.report``) goes to stdout; progress and
errors go to stderr, so ``emu run ... > table.txt`` captures the table alone.
This module imports the kernel model lazily: ``emu validate`` works even
while parts of the model do not import.
"""

from __future__ import annotations

import pathlib
import shlex
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import click
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from actors.lab.config import (
    OP_NAMES,
    ConfigError,
    ExperimentConfig,
    load_config,
    resolve_policy,
)
from actors.lab.explore import explore_command
from actors.lab.report import FORMATS, build_report, print_report
from actors.lab.rundir import RunDirError, load_run_dir
from actors.lab.sweep import sweep_command
from actors.policy import PRESETS
from emu import EmulatorError, format_ns, parse_duration
from emu.engine import DRIVERS

if TYPE_CHECKING:
    from actors.lab.experiment import ExperimentResult

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
        return load_config(path)
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
@click.version_option(package_name="faultpath", prog_name="emu")
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
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw PNG plots: latency CDFs and timelines.")
@click.option("--force", is_flag=True, help="Replace a non-empty existing DIR.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the report.")
def run(
    config_path: pathlib.Path,
    out: pathlib.Path,
    policies: tuple[str, ...],
    seed: int | None,
    tie_seed: int | None,
    strict: bool,
    plots: bool,
    force: bool,
    fmt: str,
) -> None:
    """Run CONFIG under each policy, write DIR, print a comparison table."""
    config = _load(config_path)
    valid = policy_names(config)
    unknown = [name for name in policies if name not in valid]
    if unknown:
        _die(f"error: unknown policy {', '.join(map(repr, unknown))}; valid policies: {', '.join(valid)}")
    names = list(dict.fromkeys(policies or config.policies))
    seed = config.seed if seed is None else seed

    from actors.lab.output import OutputError, check_out_dir, write_run_dir

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

    print_report(build_report(result.to_json()), fmt)
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
    from actors.lab.experiment import ExperimentResult, config_digest, run_policy

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


# -- emu report ------------------------------------------------------------------


def parse_window(_ctx: object, _param: object, value: str | None) -> tuple[int, int] | None:
    """``START:END`` (durations like ``2.4s``, or integer ns) → ``(start_ns, end_ns)``."""
    if value is None:
        return None
    start, colon, end = value.partition(":")
    try:
        if not colon:
            raise ValueError
        lo, hi = (int(part) if part.strip().isdigit() else parse_duration(part) for part in (start, end))
    except ValueError:
        raise click.BadParameter(f'expected START:END with durations like "2.4s:2.6s", got {value!r}') from None
    if hi <= lo:
        raise click.BadParameter(f"the window must end after it starts, got {value!r}")
    return lo, hi


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the report.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Redraw the plots into DIR.")
@click.option("--window", metavar="START:END", callback=parse_window, help='Timeline window, e.g. "2.4s:2.6s" (default: around the worst stall).')
def report(run_dir: pathlib.Path, fmt: str, plots: bool, window: tuple[int, int] | None) -> None:
    """Re-render the report (and plots) of a finished run directory DIR, without running."""
    try:
        loaded = load_run_dir(run_dir)
    except RunDirError as error:
        _die(f"error: {error}")
    print_report(build_report(loaded.document), fmt)
    if not plots:
        return
    from actors.lab.plots import write_plots

    missing = [run.trace_path for run in loaded.runs if not run.trace_path.is_file()]
    if missing:
        _die([f"error: {path}: missing; cannot draw the timeline (use --no-plots)" for path in missing])
    if any(run.samples is None for run in loaded.runs):
        click.echo("warning: no latency-samples.json (written with --no-plots?): CDFs drawn from results.json percentiles", err=True)
    written = write_plots(run_dir, loaded, window=window)
    click.echo(f"wrote {len([p for p in written if p.suffix == '.png'])} plots in {run_dir}", err=True)


# -- emu replay ------------------------------------------------------------------


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--policy", "policies", multiple=True, metavar="NAME", help="Policy to replay (repeatable); default: every run in DIR.")
def replay(run_dir: pathlib.Path, policies: tuple[str, ...]) -> None:
    """Run again what DIR records and compare each trace with DIR/<policy>/trace.jsonl."""
    from actors.lab.replay import config_matches, config_path, replay_run

    try:
        loaded = load_run_dir(run_dir)
    except RunDirError as error:
        _die(f"error: {error}")
    recorded = [run.policy for run in loaded.runs]
    unknown = [name for name in policies if name not in recorded]
    if unknown:
        _die(f"error: {run_dir} has no run of {', '.join(map(repr, unknown))}; it has {', '.join(recorded)}")
    path = config_path(loaded)
    if not path.is_file():
        _die(f"error: {path}: missing; nothing to replay")
    config = _load(path)
    if not config_matches(loaded, path):
        click.echo(f"warning: {path} does not hash to results.json's config_sha256", err=True)
    failed = False
    for name in dict.fromkeys(policies or recorded):
        run = loaded.run(name)
        seed, tie_seed = run.results["seed"], run.results.get("tie_seed")
        if not run.trace_path.is_file():
            _die(f"error: {run.trace_path}: missing; nothing to compare")
        try:
            outcome = replay_run(loaded, name, config)
        except EmulatorError as error:
            _run_failed(error, path, name, seed, tie_seed, run_dir)
        except Exception as error:  # an emulator bug outside the engine's wrapping
            _stderr().print_exception()
            _run_failed(error, path, name, seed, tie_seed, run_dir)
        if outcome.ok:
            click.echo(f"{name}: {outcome.events} events match, digest {outcome.digest}")
            continue
        failed = True
        divergence = outcome.divergence
        if divergence is None:
            click.echo(
                f"{name}: all {outcome.events} events match, but results.json records digest {outcome.recorded_digest}, "
                f"the trace's is {outcome.digest}",
                err=True,
            )
        else:
            at = "?" if divergence.ts is None else f"{format_ns(divergence.ts)} ({divergence.ts} ns)"
            click.echo(f"{name}: traces diverge at event {divergence.index}, virtual time {at}", err=True)
            click.echo(f"  recorded: {_show(divergence.recorded)}", err=True)
            click.echo(f"  replayed: {_show(divergence.replayed)}", err=True)
            if divergence.fields():
                click.echo(f"  differing fields: {', '.join(divergence.fields())}", err=True)
        click.echo(f"replay: {replay_command(path, name, seed, tie_seed, f'{run_dir}-replay')}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


def _show(record: dict[str, Any] | str | None) -> str:
    if record is None:
        return "(end of trace)"
    if isinstance(record, str):
        return f"(not JSON) {record}"
    return orjson.dumps(record).decode()


# -- emu validate ------------------------------------------------------------------


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
def validate(config_path: pathlib.Path) -> None:
    """Check CONFIG; print the effective configuration, the device and costs it resolves to, and its policies as JSON."""
    from actors.block.blk_dev_model import device_params
    from actors.sched.core import resolve_costs

    config = _load(config_path)
    document = {
        "config": effective_config(config),
        "device": attrs.asdict(device_params(config.device)),
        "costs": resolve_costs(config.costs),
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


@main.command()
@click.argument("name", type=click.Choice(["rwsem", "pingpong"]))
@click.option("--t-end", type=float, default=1000.0, show_default=True, help="rwsem: virtual seconds to run.")
@click.option("--messages", type=int, default=200_000, show_default=True, help="pingpong: deliveries.")
@click.option("--driver", type=click.Choice(DRIVERS), default="trio", show_default=True, help="Engine driver.")
@click.option("--json", "as_json", is_flag=True, help='One JSON line {"name", "ops", "wall_s", "ops_per_s"}.')
def bench(name: str, t_end: float, messages: int, driver: str, as_json: bool) -> None:
    """Time the engine on the SimPy peer's workloads (only the simulation is timed)."""
    from actors.lab.bench import bench_pingpong, bench_rwsem

    ops, wall = bench_rwsem(t_end, driver) if name == "rwsem" else bench_pingpong(messages, driver)
    rate = ops / wall if wall > 0 else float("inf")
    if as_json:
        click.echo(orjson.dumps({"name": name, "ops": ops, "wall_s": wall, "ops_per_s": rate}).decode())
    else:
        click.echo(f"{name}: {ops} ops in {wall:.3f} s = {rate:,.0f}/s ({driver} driver)")


main.add_command(sweep_command, "sweep")
main.add_command(explore_command, "explore")


if __name__ == "__main__":  # pragma: no cover
    main()
