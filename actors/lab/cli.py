"""The ``emu`` command line: run experiments, check configs, time the engine.

::

    emu run CONFIG [--out DIR] [--policy NAME]... [--seed N] [--tie-seed N]
                   [--strict] [--plots/--no-plots] [--force] [-q | -v]
                   [--format table|wide|markdown|json]
                   [--perfetto gz|json|none] [--trace-window START:END] [--no-trace] [-j N]
    emu report DIR [--format table|wide|markdown|json] [--plots-out PLOTS]
                   [--window START:END]
    emu replay DIR [--policy NAME]...
    emu validate CONFIG [--format table|json]
    emu bench rwsem|pingpong|saturated|scenario|scale [--json] [--repeats N] ...   (actors.lab.bench_cli)
    emu kernel-run CONFIG --kernel 6.1 [--kernel 5.10 ...] [--out DIR]   (actors.lab.realkernel.cli)
    emu compare EMULATED_DIR REAL_DIR [--baseline E R] [--plots-out PLOTS]

Exit status: 0 success; 1 a run failed (an ``EmulatorError`` such as a hung
task or a livelock), with ``--strict`` broke an invariant, or a replay
diverged from its recorded trace; 2 the command line, the config or the run
directory is wrong (one line per problem on stderr, no traceback, nothing
written); 130 interrupted by Ctrl-C (one line, nothing written).

``emu run`` writes ``runs/<experiment name>`` unless ``--out`` says
otherwise; a previous run of the same experiment there is replaced,
another experiment's run only with ``--force``, and nothing else ever
(``actors.lab.output.check_out_dir``).

Every failure of a run prints one command line that replays it exactly
(``emu run CONFIG --policy P --seed S [--tie-seed T] --out DIR2``): a run is
a pure function of (config, policy, seed, tie seed).

The comparison report (``actors.lab.report``) goes to stdout; progress and
errors go to stderr, so ``emu run ... > table.txt`` captures the table alone.
This module imports the kernel model lazily: ``emu validate`` works even
while parts of the model do not import.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import pathlib
import shlex
import signal
import sys
from collections.abc import Iterator
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

from actors.lab.bench_cli import bench_command
from actors.lab.config import (
    OP_NAMES,
    ConfigError,
    ExperimentConfig,
    load_config,
)
from actors.lab.explore import explore_command
from actors.lab.realkernel.cli import compare_command, kernel_run_command
from actors.lab.report import FORMATS, build_report, print_report
from actors.lab.rundir import CONFIG_COPY, PERFETTO_FORMATS, RunDirectory, RunDirError, load_run_dir, policy_dir_name
from actors.lab.sweep import cores, sweep_command
from actors.policy import PRESETS
from emu import EmulatorError, format_ns, parse_duration
from emu.engine import DRIVERS

if TYPE_CHECKING:
    from actors.lab.experiment import ExperimentResult
    from actors.lab.output import OutDirClaim, Staged, TraceFiles
    from actors.lab.policy_files import PolicyFiles

#: Exit statuses.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="faultpath", prog_name="emu")
def main() -> None:
    """faultpath: a deterministic emulator of the Linux page-fault path."""


# -- emu run ---------------------------------------------------------------------


#: What ``--seed``/``--tie-seed`` accept: the engine's streams take any unsigned 64-bit seed.
SEED = click.IntRange(0, 2**64 - 1)
#: Invariant violations ``--strict`` prints one by one (all of them with ``-v``).
STRICT_SHOWN = 10


def default_out(config: ExperimentConfig) -> pathlib.Path:
    """``runs/<experiment name>``: where ``emu run`` writes without ``--out``."""
    return default_out_name(config.name)


def default_out_name(name: str) -> pathlib.Path:
    return pathlib.Path("runs") / policy_dir_name(name)


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
@click.option("--out", "out", type=click.Path(path_type=pathlib.Path), help="Run directory to write (default: runs/<experiment name>).")
@click.option("--policy", "policies", multiple=True, metavar="NAME", help="Policy to run (repeatable); default: the config's.")
@click.option("--seed", type=SEED, default=None, help="Override the config's seed (0 to 2^64-1).")
@click.option("--tie-seed", type=SEED, default=None, help="Perturb same-instant order with this seed.")
@click.option("--strict", is_flag=True, help="Exit 1 if any run breaks an invariant.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw PNG plots: latency CDFs and timelines.")
@click.option("--force", is_flag=True, help="Also replace a run directory of another experiment (never anything else).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the report.")
@click.option("--perfetto", type=click.Choice(PERFETTO_FORMATS), default="gz", show_default=True, help="The Perfetto timeline: gzipped (ui.perfetto.dev opens .json.gz), plain JSON, or none.")
@click.option("--trace-window", metavar="START:END", callback=parse_window, help='Keep only this stretch of virtual time in the Perfetto file, e.g. "2.4s:2.6s" (trace.jsonl stays whole).')
@click.option("--no-trace", is_flag=True, help="Write no trace files (neither trace.jsonl nor Perfetto); replay needs them.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes for the policies (same results as one). [default: one per core, at most one per policy]")
@click.option("--driver", type=click.Choice(DRIVERS), default="trio", show_default=True, help="Engine driver: Trio tasks, or the same actor coroutines stepped without Trio (same results, about a tenth faster).")
@click.option("-q", "--quiet", is_flag=True, help="Print the report and errors only (no progress, no warnings).")
@click.option("-v", "--verbose", is_flag=True, help="Say what each step does; with --strict, list every violation.")
def run(
    config_path: pathlib.Path,
    out: pathlib.Path | None,
    policies: tuple[str, ...],
    seed: int | None,
    tie_seed: int | None,
    strict: bool,
    plots: bool,
    force: bool,
    fmt: str,
    perfetto: str,
    trace_window: tuple[int, int] | None,
    no_trace: bool,
    jobs: int | None,
    driver: str,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run CONFIG under each policy, write DIR, print a comparison table.

    DIR may hold a previous run of the same experiment, which is replaced.
    Ctrl-C stops at once (exit 130) and writes nothing.
    """
    if quiet and verbose:
        _die("error: -q and -v contradict each other; give one")
    if trace_window is not None and (no_trace or perfetto == "none"):
        _die("error: --trace-window shapes the Perfetto file, and this run writes none")
    from actors.lab.matrix import is_matrix_file
    from actors.lab.output import TraceFiles

    if is_matrix_file(config_path):
        traces = TraceFiles(jsonl=not no_trace, perfetto="none" if no_trace else perfetto, window=trace_window)
        _run_matrix(config_path, out, policies, seed, tie_seed, strict=strict, plots=plots, force=force, fmt=fmt, traces=traces, driver=driver, quiet=quiet, verbose=verbose)
        return
    config = _load(config_path)
    if trace_window is not None and trace_window[0] >= config.horizon:
        _die(f"error: --trace-window starts at {format_ns(trace_window[0])}, after the horizon ({format_ns(config.horizon)})")
    valid = policy_names(config)
    unknown = [name for name in policies if name not in valid]
    if unknown:
        _die(f"error: unknown policy {', '.join(map(repr, unknown))}; valid policies: {', '.join(valid)}")
    names = list(dict.fromkeys(policies or config.policies))
    seed = config.seed if seed is None else seed
    out = default_out(config) if out is None else out
    say = (lambda _text: None) if quiet else (lambda text: click.echo(text, err=True))

    from actors.lab.experiment import config_digest
    from actors.lab.output import OutDirClaim, OutputError, policy_files, write_run_dir

    traces = TraceFiles(jsonl=not no_trace, perfetto="none" if no_trace else perfetto, window=trace_window)

    try:
        with OutDirClaim(out, force=force, experiment=config.name) as claim:
            if claim.replaces and verbose:
                say(f"will replace {claim.replaces}")
            with _interruptible(claim):
                staged = claim.staging()  # each policy's own files are written there as its run ends
                files = policy_files(staged.root, config, config_digest(config), traces, plots=plots)
                result = _run_all(config, config_path, names, seed, tie_seed, out, jobs=jobs or cores(), driver=driver, quiet=quiet, verbose=verbose, files=files, staged=staged)
            try:
                warnings = write_run_dir(out, result, plots=plots, force=force, traces=traces, jobs=jobs or cores(), staged=staged)
            except OutputError as error:
                print_report(build_report(result.to_json(), answer=config.report.answer), fmt)
                _die(f"error: {error}", EXIT_FAILED)
    except OutputError as error:
        _die(f"error: {error}")
    except KeyboardInterrupt:
        _die("interrupted: nothing written", EXIT_INTERRUPTED)
    for warning in warnings:
        say(f"warning: {warning}")

    print_report(build_report(result.to_json(), answer=config.report.answer), fmt)
    say(f"wrote {out}" + (f" (replacing {claim.replaces})" if claim.replaces else ""))

    if strict:
        _strict(result, config_path, seed, tie_seed, out, verbose=verbose)


def _run_matrix(
    matrix_path: pathlib.Path,
    out: pathlib.Path | None,
    policies: tuple[str, ...],
    seed: int | None,
    tie_seed: int | None,
    *,
    strict: bool,
    plots: bool,
    force: bool,
    fmt: str,
    traces: TraceFiles,
    driver: str,
    quiet: bool,
    verbose: bool,
) -> None:
    """``emu run MATRIX``: every case under each policy into DIR/<case>, written whole; each report, then the verdicts."""
    from actors.lab.matrix import MatrixStaging, load_matrix, load_matrix_dir, write_matrix
    from actors.lab.matrix_view import print_matrix
    from actors.lab.output import OutDirClaim, OutputError, write_run_dir

    try:
        matrix = load_matrix(matrix_path)
    except ConfigError as error:
        _die(error.problems)
    for case in matrix.cases:
        unknown = [name for name in policies if name not in policy_names(case.config)]
        if unknown:
            _die(f"error: unknown policy {', '.join(map(repr, unknown))} in case {case.name!r}; valid policies: {', '.join(policy_names(case.config))}")
    if traces.window is not None and any(traces.window[0] >= case.config.horizon for case in matrix.cases):
        _die("error: --trace-window starts after the horizon of a case")
    out = default_out_name(matrix.name) if out is None else out
    say = (lambda _text: None) if quiet else (lambda text: click.echo(text, err=True))
    results: list[tuple[ExperimentResult, pathlib.Path, int]] = []

    def run_case(case: Any, directory: pathlib.Path) -> None:
        case_seed = case.config.seed if seed is None else seed
        names = list(dict.fromkeys(policies or case.config.policies))
        result = _run_all(case.config, pathlib.Path(case.config.source), names, case_seed, tie_seed, out / case.name, driver=driver, quiet=quiet, verbose=verbose)
        for warning in write_run_dir(directory, result, plots=plots, force=False, traces=traces):
            say(f"warning: {case.name}: {warning}")
        results.append((result, pathlib.Path(case.config.source), case_seed))

    try:
        with OutDirClaim(out, force=force, experiment=matrix.name) as claim:
            staging = MatrixStaging(out, claim)
            with _interruptible(staging):  # type: ignore[arg-type]
                try:
                    write_matrix(matrix, staging, run_case)
                finally:
                    staging.__exit__()
    except OutputError as error:
        _die(f"error: {error}")
    except KeyboardInterrupt:
        _die("interrupted: nothing written", EXIT_INTERRUPTED)
    print_matrix(load_matrix_dir(out), fmt, recorded_answer)
    say(f"wrote {out}" + (f" (replacing {claim.replaces})" if claim.replaces else ""))
    if strict:
        for result, source, case_seed in results:
            _strict(result, source, case_seed, tie_seed, out, verbose=verbose)


def _strict(result: ExperimentResult, config_path: pathlib.Path, seed: int, tie_seed: int | None, out: pathlib.Path, *, verbose: bool) -> None:
    """``--strict``: a summary of the violations (the first few, or all with ``-v``), the replay lines, exit 1."""
    broken = [(run.policy, v) for run in result.runs for v in run.results["invariants"]["violations"]]
    if not broken:
        return
    for policy, violation in broken if verbose else broken[:STRICT_SHOWN]:
        fields = " ".join(f"{k}={v}" for k, v in violation.items() if k not in ("invariant", "ts"))
        at = format_ns(violation["ts"]) if isinstance(violation.get("ts"), int) else "end of run"
        click.echo(f"invariant violated: {policy}: {violation.get('invariant')} at {at}: {fields}".rstrip(": "), err=True)
    if len(broken) > STRICT_SHOWN and not verbose:
        click.echo(f"... {len(broken) - STRICT_SHOWN} more (-v lists them all; every one is in {out / 'results.json'})", err=True)
    tally: dict[tuple[str, str], int] = {}
    for policy, violation in broken:
        key = (policy, str(violation.get("invariant")))
        tally[key] = tally.get(key, 0) + 1
    summary = ", ".join(f"{policy} {name} x{n}" for (policy, name), n in tally.items())
    click.echo(f"strict: {len(broken)} invariant violation(s): {summary}", err=True)
    for policy in dict.fromkeys(p for p, _ in broken):
        click.echo(f"replay: {replay_command(config_path, policy, seed, tie_seed, f'{out}-replay')}", err=True)
    sys.exit(EXIT_FAILED)


@contextlib.contextmanager
def _interruptible(claim: OutDirClaim) -> Iterator[None]:
    """While the simulation runs, Ctrl-C ends the process at once: exit 130, one line, nothing written.

    The engine runs under Trio, where a ``KeyboardInterrupt`` raised at an
    arbitrary point would surface as an actor crash or a Trio internal error;
    so SIGINT (and SIGTERM) get a handler that ends the worker processes,
    releases *claim* (the staging directory with the files of the policies
    that had finished, the lock, the parents it created), says so and leaves
    with ``os._exit``. A run directory is whole or absent.
    """

    owner = os.getpid()

    def stop(signum: int, _frame: object) -> None:
        if os.getpid() != owner:  # a forked worker (``_workers``): leave quietly, the parent speaks
            os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum)
        for worker in multiprocessing.active_children():  # ended first: none writes into the staging directory once it is removed
            worker.kill()
            worker.join()
        claim.__exit__(None, None, None)
        os.write(2, b"\ninterrupted: nothing written\n")
        os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_all(
    config: ExperimentConfig,
    config_path: pathlib.Path,
    names: list[str],
    seed: int,
    tie_seed: int | None,
    out: pathlib.Path,
    *,
    jobs: int = 1,
    driver: str = "trio",
    quiet: bool = False,
    verbose: bool = False,
    files: PolicyFiles | None = None,
    staged: Staged | None = None,
) -> ExperimentResult:
    """Run every policy of *names*: in this process, or on *jobs* worker processes (``_workers``).

    Runs are independent and a pure function of their inputs, so the workers'
    results are the serial ones; they are taken in *names* order, and the
    first failure in that order is the one reported, as serially.

    With *files* (and *staged*, where they go), each run's own files are
    written as soon as it ends, by the process that ran it, and its trace is
    dropped there (``actors.lab.policy_files``): the runs come back without
    their traces, and *staged* holds what was written.
    """
    from actors.lab.experiment import ExperimentResult, PolicyFailure, config_digest, run_policy, run_policy_job

    runs = []
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
        disable=quiet,
    )
    then = files.write if files is not None else None

    def finished(index: int, outcome: Any) -> None:
        if files is not None:
            assert staged is not None
            staged.runs[index] = outcome
            outcome = outcome.run
        runs.append(outcome)

    jobs = min(jobs, len(names))
    # The workers fork on the first submit, before the progress bar starts its refresh thread.
    pool = _workers(jobs) if jobs > 1 else None
    futures = [pool.submit(run_policy_job, config, name, seed, tie_seed, then, driver) for name in names] if pool is not None else []
    if pool is not None and files is not None and files.plots:
        importlib.import_module("actors.lab.plots")  # while the workers run: matplotlib, for the plots drawn after them
    with progress:
        task = progress.add_task(config.name, total=len(names))
        if pool is not None:
            if verbose:
                progress.console.print(f"running {config.name} under {', '.join(names)}, seed {seed}, on {jobs} worker processes")
            progress.update(task, description=f"{config.name}: {jobs} jobs")
            try:
                for index, future in enumerate(futures):
                    outcome = future.result()
                    if isinstance(outcome, PolicyFailure):
                        progress.stop()
                        _stop_workers(pool)
                        if not outcome.emulator_error:
                            click.echo(outcome.traceback.rstrip("\n"), err=True)
                        _run_failed(outcome.error, config_path, outcome.policy, seed, tie_seed, out)
                    finished(index, outcome)
                    progress.advance(task)
            except Exception:  # a bug in writing a run's files: stop the others before the traceback
                _stop_workers(pool)
                raise
            pool.shutdown()
            return ExperimentResult(config=config, config_sha256=config_digest(config), runs=runs)
        for index, name in enumerate(names):
            progress.update(task, description=f"{config.name}: {name}")
            if verbose:
                progress.console.print(f"running {config.name} under {name}, seed {seed}")
            try:
                run = run_policy(config, name, seed=seed, tie_seed=tie_seed, driver=driver)
            except EmulatorError as error:
                progress.stop()
                _run_failed(f"{type(error).__name__}: {error}", config_path, name, seed, tie_seed, out)
            except Exception as error:  # an emulator bug outside the engine's wrapping
                progress.stop()
                _stderr().print_exception()
                _run_failed(f"{type(error).__name__}: {error}", config_path, name, seed, tie_seed, out)
            finished(index, run if then is None else then(run))
            progress.advance(task)
    return ExperimentResult(config=config, config_sha256=config_digest(config), runs=runs)


def _workers(jobs: int) -> concurrent.futures.ProcessPoolExecutor:
    """*jobs* forked worker processes, all forked at once on the first submit (before any thread of ours exists).

    Fork, not spawn or forkserver: workers start without re-importing the
    model, and their locks are unlinked at once, so a Ctrl-C that ends the
    parent with ``os._exit`` leaves nothing behind for a resource tracker to
    complain about (the one-line contract of ``_interruptible``).
    """
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"))


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """After a failure: end the other runs now instead of waiting for them (serially they would not have started).

    They are waited for, so none writes into the run directory's temporary after it is removed.
    """
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_failed(error: str, config_path: pathlib.Path, policy: str, seed: int, tie_seed: int | None, out: pathlib.Path) -> NoReturn:
    click.echo(f"error: policy {policy}: {error}", err=True)
    click.echo(f"replay: {replay_command(config_path, policy, seed, tie_seed, f'{out}-replay')}", err=True)
    sys.exit(EXIT_FAILED)


# -- emu report ------------------------------------------------------------------


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the report.")
@click.option("--plots-out", type=click.Path(path_type=pathlib.Path), metavar="PLOTS", help="Redraw the plots into PLOTS (never into DIR: the run's own plots stay).")
@click.option("--window", metavar="START:END", callback=parse_window, help='Timeline window, e.g. "2.4s:2.6s" (default: around the worst stall); needs --plots-out.')
def report(run_dir: pathlib.Path, fmt: str, plots_out: pathlib.Path | None, window: tuple[int, int] | None) -> None:
    """Re-render the report of a finished run directory DIR, without running; with --plots-out, its plots too."""
    if window is not None and plots_out is None:
        _die("error: --window draws timelines: give --plots-out PLOTS too")
    from actors.lab.matrix import is_matrix_dir

    if is_matrix_dir(run_dir):
        _report_matrix(run_dir, fmt, plots_out, window)
        return
    try:
        loaded = load_run_dir(run_dir)
    except RunDirError as error:
        _die(f"error: {error}")
    if plots_out is not None:
        _check_plots_out(loaded, plots_out, window)
    print_report(build_report(loaded.document, answer=recorded_answer(loaded)), fmt)
    from actors.lab.realkernel.stacks_view import print_stacks

    print_stacks(loaded.document["runs"], fmt)  # a real kernel's run: where its threads' time went
    if plots_out is None:
        return
    from actors.lab.plots import write_plots

    if any(run.samples is None for run in loaded.runs):
        click.echo("warning: no latency-samples.json (written with --no-plots?): CDFs drawn from results.json percentiles", err=True)
    plots_out.mkdir(parents=True, exist_ok=True)
    written = write_plots(plots_out, loaded, window=window)
    click.echo(f"wrote {len([p for p in written if p.suffix == '.png'])} plots in {plots_out}", err=True)


def _report_matrix(path: pathlib.Path, fmt: str, plots_out: pathlib.Path | None, window: tuple[int, int] | None) -> None:
    """``emu report`` of a matrix directory: each case and the verdicts; with --plots-out, PLOTS/<case>/."""
    from actors.lab.matrix import load_matrix_dir
    from actors.lab.matrix_view import print_matrix

    try:
        loaded = load_matrix_dir(path)
    except RunDirError as error:
        _die(f"error: {error}")
    if plots_out is not None:
        for name, case in loaded.cases.items():
            _check_plots_out(case, plots_out / name, window)
    print_matrix(loaded, fmt, recorded_answer)
    if plots_out is None:
        return
    from actors.lab.plots import write_plots

    for name, case in loaded.cases.items():
        (plots_out / name).mkdir(parents=True, exist_ok=True)
        write_plots(plots_out / name, case, window=window)
    click.echo(f"wrote the plots of {len(loaded.cases)} cases in {plots_out}", err=True)


def recorded_answer(loaded: RunDirectory) -> list[str]:
    """The ``[report] answer`` of the config copy a run directory keeps (none if it no longer loads)."""
    try:
        return load_config(loaded.path / CONFIG_COPY).report.answer
    except ConfigError as error:
        click.echo(f"warning: {error.problems[0]} (the report shows no answer figures)", err=True)
        return []


def _check_plots_out(loaded: RunDirectory, plots_out: pathlib.Path, window: tuple[int, int] | None) -> None:
    """``--plots-out`` is not the run directory, can be made, the traces exist and *window* lies inside the run."""
    if plots_out.resolve() == loaded.path.resolve():
        _die(f"error: {plots_out}: is the run directory itself; emu report never overwrites a run's plots (choose another --plots-out)")
    if plots_out.exists() and not plots_out.is_dir():
        _die(f"error: {plots_out}: exists and is not a directory")
    missing = [run.trace_path for run in loaded.runs if not run.trace_path.is_file()]
    if missing:
        _die([f"error: {path}: missing; cannot draw the timeline (drop --plots-out)" for path in missing])
    end = max((run.results.get("virtual_ns", 0) for run in loaded.runs), default=0)
    if window is not None and window[0] >= end:
        _die(f"error: --window {format_ns(window[0])}:{format_ns(window[1])} starts after the run ends ({format_ns(end)})")


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
            _run_failed(f"{type(error).__name__}: {error}", path, name, seed, tie_seed, run_dir)
        except Exception as error:  # an emulator bug outside the engine's wrapping
            _stderr().print_exception()
            _run_failed(f"{type(error).__name__}: {error}", path, name, seed, tie_seed, run_dir)
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
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: the device, costs (with sources), machine, cgroups and policies; json: also the effective config.")
def validate(config_path: pathlib.Path, fmt: str) -> None:
    """Check CONFIG; print the device, costs, machine, cgroups and policies it resolves to."""
    from actors.lab.matrix import is_matrix_file, load_matrix
    from actors.lab.validate_view import print_validate, validate_document

    if is_matrix_file(config_path):
        try:
            matrix = load_matrix(config_path)
        except ConfigError as error:
            _die(error.problems)
        if fmt == "json":
            cases = {case.name: validate_document(case.config, effective_config(case.config)) for case in matrix.cases}
            click.echo(orjson.dumps({"matrix": matrix.header(), "cases": cases}, option=orjson.OPT_INDENT_2).decode())
            return
        for case in matrix.cases:
            Console(highlight=False).rule(f"case {case.name}: {case.config.source}", align="left")
            print_validate(case.config)
        return
    config = _load(config_path)
    if fmt == "json":
        click.echo(orjson.dumps(validate_document(config, effective_config(config)), option=orjson.OPT_INDENT_2).decode())
        return
    print_validate(config)


def effective_config(config: ExperimentConfig) -> dict[str, Any]:
    """*config* with every default filled in, ops tagged with their ``op`` name (durations in ns, sizes in bytes)."""
    document = attrs.asdict(config)
    for process, spec in zip(document["processes"], config.processes, strict=True):
        for thread, thread_spec in zip(process["threads"], spec.threads, strict=True):
            thread["program"] = [{"op": OP_NAMES[type(op)], **attrs.asdict(op)} for op in thread_spec.program]
    return document


main.add_command(bench_command, "bench")
main.add_command(sweep_command, "sweep")
main.add_command(explore_command, "explore")
main.add_command(kernel_run_command, "kernel-run")
main.add_command(compare_command, "compare")


if __name__ == "__main__":  # pragma: no cover
    main()
