"""The ``emu kernel-run`` and ``emu compare`` commands (added to ``emu`` by ``actors.lab.cli``).

::

    emu kernel-run CONFIG --kernel 6.1 [--kernel 5.10 ...] [--out DIR] [--force]
                   [--format table|wide|markdown|json]
    emu compare EMULATED_DIR REAL_DIR [--baseline EMULATED_BASE REAL_BASE]
                [--op TASK/OP] [--factor X] [--threshold DURATION]
                [--plots-out PLOTS] [--json]

Exit status: 0 success; 2 bad input or a run that cannot be done (a missing
tool, with the apt-get line; a kernel that cannot be had or lacks an
option; an op the probe cannot run; a guest that panics or times out, with
its last console lines), nothing written; 130 interrupted.
"""

from __future__ import annotations

import pathlib
import sys

import click
import orjson
from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from actors.lab.config import ConfigError, ExperimentConfig, load_config
from actors.lab.realkernel.compare import DEFAULT_FACTOR, DEFAULT_OP, DEFAULT_THRESHOLD_NS, Pair, compare, to_json, write_cdfs
from actors.lab.realkernel import host
from actors.lab.realkernel.host import KERNELS, RealKernelError
from actors.lab.realkernel.spec import translate
from actors.lab.realkernel.stacks_view import print_stacks
from actors.lab.report import FORMATS, build_report, print_report
from actors.lab.rundir import RunDirError, load_run_dir
from emu import format_ns, parse_duration


def _die(message: str, status: int = 2) -> None:
    click.echo(message, err=True)
    sys.exit(status)


@click.command("kernel-run")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
@click.option("--kernel", "kernels", multiple=True, required=True, type=click.Choice(list(KERNELS)), help="Debian kernel to boot (repeatable), one after another.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), help="Run directory to write (default: runs/<experiment name>-real).")
@click.option("--force", is_flag=True, help="Also replace a run directory of another experiment.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the report.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def kernel_run_command(config_path: pathlib.Path, kernels: tuple[str, ...], out: pathlib.Path | None, force: bool, fmt: str, quiet: bool) -> None:
    """Run CONFIG on real Debian kernels under qemu; write DIR; print the table (one column per kernel).

    Needs qemu-system-x86_64, a static busybox, gcc and mkfs.ext4 (it prints
    the apt-get line for what is missing). Kernel packages are downloaded once
    into ~/.cache/faultpath (never installed).
    """
    from actors.lab.matrix import is_matrix_file
    from actors.lab.output import OutputError
    from actors.lab.realkernel.run import PHASES, kernel_run

    if is_matrix_file(config_path):
        _kernel_run_matrix(config_path, list(dict.fromkeys(kernels)), out, force=force, fmt=fmt, quiet=quiet)
        return
    try:
        config = load_config(config_path)
    except ConfigError as error:
        _die("\n".join(error.problems))
    _refuse_early([config])
    out = out or pathlib.Path("runs") / f"{config.name}-real"
    versions = list(dict.fromkeys(kernels))
    console = Console(stderr=True, highlight=False)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    tasks: dict[str, int] = {}

    def on_phase(version: str, phase: str) -> None:
        if version not in tasks:
            tasks[version] = progress.add_task(f"linux-{version}: {phase}", total=len(PHASES))
        progress.update(tasks[version], description=f"linux-{version}: {phase}", completed=PHASES.index(phase))

    try:
        with progress:
            document = kernel_run(config, versions, out, force=force, on_phase=on_phase)
            for task in tasks.values():
                progress.update(task, completed=len(PHASES))
    except (RealKernelError, OutputError) as error:
        _die(f"error: {error}")
    except ConfigError as error:
        _die("\n".join(error.problems))
    except KeyboardInterrupt:
        _die("interrupted: nothing written", 130)
    print_report(build_report(document, answer=config.report.answer), fmt)
    print_stacks(document["runs"], fmt)
    if not quiet:
        click.echo(f"wrote {out}", err=True)


def _refuse_early(configs: list[ExperimentConfig]) -> None:
    """What can be refused at once (an op the probe cannot run, a missing tool) is refused before anything boots."""
    try:
        for config in configs:
            translate(config)
        host.check_tools()
    except ConfigError as error:
        _die("\n".join(error.problems))
    except RealKernelError as error:
        _die(f"error: {error}")


def _kernel_run_matrix(matrix_path: pathlib.Path, versions: list[str], out: pathlib.Path | None, *, force: bool, fmt: str, quiet: bool) -> None:
    """``emu kernel-run MATRIX``: every case on every kernel into DIR/<case>, written whole; each report, then the verdicts."""
    from actors.lab.cli import recorded_answer
    from actors.lab.matrix import MatrixStaging, load_matrix, load_matrix_dir, write_matrix
    from actors.lab.matrix_view import print_matrix
    from actors.lab.output import OutDirClaim, OutputError
    from actors.lab.realkernel.run import PHASES, kernel_run

    try:
        matrix = load_matrix(matrix_path)
    except ConfigError as error:
        _die("\n".join(error.problems))
    _refuse_early([case.config for case in matrix.cases])
    out = out or pathlib.Path("runs") / f"{matrix.name}-real"
    console = Console(stderr=True, highlight=False)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    tasks: dict[tuple[str, str], int] = {}

    def run_case(case, directory: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
        def on_phase(version: str, phase: str) -> None:
            key = (case.name, version)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{case.name} linux-{version}: {phase}", total=len(PHASES))
            progress.update(tasks[key], description=f"{case.name} linux-{version}: {phase}", completed=PHASES.index(phase))

        kernel_run(case.config, versions, directory, on_phase=on_phase)
        for key, task in tasks.items():
            if key[0] == case.name:
                progress.update(task, completed=len(PHASES))

    try:
        with progress, OutDirClaim(out, force=force, experiment=matrix.name) as claim:
            staging = MatrixStaging(out, claim)
            try:
                write_matrix(matrix, staging, run_case)
            finally:
                staging.__exit__()
    except (RealKernelError, OutputError) as error:
        _die(f"error: {error}")
    except ConfigError as error:
        _die("\n".join(error.problems))
    except KeyboardInterrupt:
        _die("interrupted: nothing written", 130)
    print_matrix(load_matrix_dir(out), fmt, recorded_answer)
    if not quiet:
        click.echo(f"wrote {out}", err=True)


@click.command("compare")
@click.argument("emulated_dir", metavar="EMULATED_DIR", type=click.Path(path_type=pathlib.Path))
@click.argument("real_dir", metavar="REAL_DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--baseline", nargs=2, type=click.Path(path_type=pathlib.Path), metavar="EMULATED_BASE REAL_BASE", help="Run directories of the baseline case (emulated, real): the verdict compares p99s with theirs.")
@click.option("--op", default=DEFAULT_OP, show_default=True, help="The op whose p99 gives the verdict.")
@click.option("--factor", type=click.FloatRange(min=1.0), default=DEFAULT_FACTOR, show_default=True, help="With --baseline: an inversion is a p99 at least this many times the baseline's.")
@click.option("--threshold", default=format_ns(DEFAULT_THRESHOLD_NS), show_default=True, help="Without --baseline: an inversion is a p99 at least this long.")
@click.option("--plots-out", type=click.Path(path_type=pathlib.Path), metavar="PLOTS", help="Draw the overlaid CDFs (one PNG per op) into PLOTS.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON (times in ns).")
def compare_command(emulated_dir: pathlib.Path, real_dir: pathlib.Path, baseline: tuple[pathlib.Path, pathlib.Path] | None, op: str, factor: float, threshold: str, plots_out: pathlib.Path | None, as_json: bool) -> None:
    """Put an emulated run directory beside a real-kernel one: per op p50/p99/max and counts, each side's verdict."""
    try:
        threshold_ns = parse_duration(threshold)
    except ValueError as error:
        _die(f"error: --threshold: {error}")
    from actors.lab.matrix import is_matrix_dir

    if is_matrix_dir(emulated_dir) or is_matrix_dir(real_dir):
        if baseline:
            _die("error: --baseline: a matrix names its own baseline case")
        given = {name: click.get_current_context().get_parameter_source(name) != click.core.ParameterSource.DEFAULT for name in ("op", "factor", "threshold")}
        _compare_matrices(emulated_dir, real_dir, op=op if given["op"] else None, factor=factor if given["factor"] else None,
                          threshold_ns=threshold_ns if given["threshold"] else None, plots_out=plots_out, as_json=as_json)  # fmt: skip
        return
    try:
        emulated, real = load_run_dir(emulated_dir), load_run_dir(real_dir)
        baselines = (load_run_dir(baseline[0]), load_run_dir(baseline[1])) if baseline else None
    except RunDirError as error:
        _die(f"error: {error}")
    pairs = compare(emulated, real, op=op, baselines=baselines, factor=factor, threshold_ns=threshold_ns)
    if not pairs:
        _die(f"error: {emulated_dir} and {real_dir}: no runs to compare")
    if as_json:
        click.echo(orjson.dumps(to_json(pairs), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_pairs(Console(highlight=False), str(emulated.document.get("experiment")), pairs, op)
    if plots_out is not None:
        written = write_cdfs(plots_out, emulated, real)
        click.echo(f"wrote {len(written)} plots in {plots_out}", err=True)


def _print_pairs(console: Console, title: str, pairs: list[Pair], op: str) -> None:
    for pair in pairs:
        table = Table(title=f"{title}: {pair.emulated} (emulated) vs {pair.real} (real)", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("op\n", overflow="fold")
        for header in ("samples", "p50", "p99", "max"):
            table.add_column(f"{header}\nemu/real", justify="right", no_wrap=True)
        for key, e, r in pair.ops:
            table.add_row(key, f"{e.count}/{r.count}", *(f"{format_ns(getattr(e, f))}/{format_ns(getattr(r, f))}" for f in ("p50_ns", "p99_ns", "max_ns")))
        console.print(table)
        if pair.faults:
            faults = Table(title="faults per thread (its own, and GUP's in a /proc target's mm)", title_justify="left", box=box.SIMPLE_HEAD)
            faults.add_column("thread")
            for header in ("minor", "major"):
                faults.add_column(f"{header}\nemu/real", justify="right", no_wrap=True)
            for thread, e, r in pair.faults:
                faults.add_row(thread, f"{e['min_flt']:,}/{r['min_flt']:,}", f"{e['maj_flt']:,}/{r['maj_flt']:,}")
            console.print(faults)
        for side, v in (("emulated", pair.emulated_verdict), ("real", pair.real_verdict)):
            console.print(f"  verdict ({side} {v.column}, {op}): {v.verdict} ({v.reference})")
        console.print(f"  verdicts {'agree' if pair.agrees else 'DIFFER'}")


def _compare_matrices(
    emulated_dir: pathlib.Path, real_dir: pathlib.Path, *, op: str | None, factor: float | None, threshold_ns: int | None, plots_out: pathlib.Path | None, as_json: bool
) -> None:
    """``emu compare`` of two matrix directories: case by case, the verdicts by the emulated matrix's baseline case, then one summary table.

    The matrix's own ``op``, ``factor`` and ``threshold`` apply unless the command line gives them.
    """
    from actors.lab.matrix import load_matrix_dir

    try:
        emulated, real = load_matrix_dir(emulated_dir), load_matrix_dir(real_dir)
    except RunDirError as error:
        _die(f"error: {error}")
    header = emulated.header
    op = header["op"] if op is None else op
    factor = header["factor"] if factor is None else factor
    threshold_ns = header["threshold_ns"] if threshold_ns is None else threshold_ns
    if emulated.header["cases"] != real.header["cases"]:
        _die(f"error: {emulated_dir} and {real_dir} hold different cases: {', '.join(emulated.header['cases'])} vs {', '.join(real.header['cases'])}")
    baselines = (emulated.baseline, real.baseline) if emulated.baseline is not None and real.baseline is not None else None
    by_case = {name: compare(emulated.cases[name], real.cases[name], op=op, baselines=baselines, factor=factor, threshold_ns=threshold_ns) for name in emulated.header["cases"]}
    if as_json:
        click.echo(orjson.dumps({name: to_json(pairs) for name, pairs in by_case.items()}, option=orjson.OPT_INDENT_2).decode())
    else:
        console = Console(highlight=False)
        for name, pairs in by_case.items():
            console.rule(f"case {name}", align="left")
            _print_pairs(console, name, pairs, op)
        floor = f"a p99 of at least {format_ns(threshold_ns)}"
        rule = f"{factor:g}x the p99 of case {emulated.header['baseline']!r} and {floor}" if baselines else floor
        summary = Table(title=f"{emulated.header['experiment']}: {op} p99 (samples); inversion = {rule}", title_justify="left", box=box.SIMPLE_HEAD)
        for column, justify in (("case", "left"), ("version", "left"), ("p99 emu", "right"), ("p99 real", "right"), ("verdict emu/real", "left")):
            summary.add_column(column, justify=justify, no_wrap=column != "verdict emu/real", overflow="fold")
        for name, pairs in by_case.items():
            for pair in pairs:
                e, r = pair.emulated_verdict, pair.real_verdict
                counts = {p.column: p.count for _key, *sides in pair.ops if _key == op for p in sides}
                cells = [f"{format_ns(v.p99_ns)} ({counts.get(v.column, 0)})" if v.p99_ns is not None else "-" for v in (e, r)]
                agree = f"{e.verdict}/{r.verdict}" + ("" if pair.agrees else " DIFFER")
                same = pair.emulated.removeprefix("v") == pair.real.removeprefix("linux-")
                summary.add_row(name, pair.emulated if same else f"{pair.emulated}/{pair.real}", *cells, agree)
        console.print(summary)
    if plots_out is not None:
        written = [p for name in by_case for p in write_cdfs(plots_out / name, emulated.cases[name], real.cases[name])]
        click.echo(f"wrote {len(written)} plots in {plots_out}", err=True)
