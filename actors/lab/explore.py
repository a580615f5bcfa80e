"""Schedule exploration: many seeds, every invariant, each distinct failure once.

::

    emu explore CONFIG --runs N [--policy P]... [--swarm] [--corpus FILE]
                       [--jobs N] [--cases-dir DIR]

For each policy (default: the config's), run ``i = 0..N-1`` with seed
``config.seed + i`` and tie seed ``i`` (so same-instant order is perturbed
too), with traces off, and collect the invariant violations of each run and
any ``EmulatorError`` (a hung task, a livelock, a crashed actor: reported as
a failure named after the error class). A failure's *signature* is its
invariant plus its coarse cause (``cause``/``where`` field, e.g.
``io_under_mmap_sem_on_retry:retry_before_uptodate``); each distinct
(policy, signature) is reported once, at its first run, with the virtual
time, the trace event index and one command that replays it exactly::

    emu run CONFIG --policy P --seed S --tie-seed T --strict --out DIR

``--swarm`` (swarm testing) switches, per seed, each fault family the
config's ``[inject]`` enables and each racing op kind its programs use on or
off (a fair coin per switch from a stream derived from the seed alone, so
every policy sees the same mix for a seed). A failing swarm case gets a tiny
derived config, the original text plus a ``[swarm] off = [...]`` table,
written to ``--cases-dir`` (default: next to the corpus, else
``explore-cases/``); its replay command runs that file.

``--corpus FILE`` merges the distinct failures into a JSON file (schema 1)
that ``tests/actors/lab/test_explore.py`` replays. The summary also prints, per
policy, the sums of a few counters that say which paths ran (notably
``btrfs_used_cached_fastpath``, V3's dead USED_CACHED fast path). Exit
status: 0 no failure, 1 failures found, 2 bad arguments or config.
"""

from __future__ import annotations

import pathlib
import random
import shlex
import sys
from collections.abc import Iterator
from typing import Any

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
    SWARM_FAMILIES,
    SWARM_OPS,
    ConfigError,
    ExperimentConfig,
    SwarmConfig,
    load_config,
)
from emu import EmulatorError, derive_seed, format_ns

#: Counters summed over runs and printed per policy.
SUMMARY_COUNTERS = ("btrfs_used_cached_fastpath", "btrfs_mkwrite_dropped", "v3_cached_page_reused", "fault_retries")
#: What was injected; these and the SIGBUS they cause are printed only when some run injected anything.
INJECT_COUNTERS = ("inject_read_errors", "inject_write_errors", "inject_enospc", "inject_sigkill")
#: Every counter summed over runs.
COUNTERS = (*SUMMARY_COUNTERS, *INJECT_COUNTERS, "sigbus_delivered")
CORPUS_SCHEMA = 1


@attrs.frozen(kw_only=True)
class RunOutcome:
    """What one explored run found."""

    policy: str
    seed: int
    tie_seed: int
    swarm_off: tuple[str, ...]
    failures: list[dict[str, Any]]
    counters: dict[str, int]


@attrs.define(kw_only=True)
class Failure:
    """A distinct failure: its first occurrence and how often it was seen."""

    policy: str
    signature: str
    first: dict[str, Any]
    seed: int
    tie_seed: int
    swarm_off: tuple[str, ...]
    runs: int = 0
    violations: int = 0
    config_path: str = ""

    def replay_command(self, out_root: str = "runs/explore") -> str:
        out = f"{out_root}/{pathlib.Path(self.config_path).stem}-{self.policy}-s{self.seed}-t{self.tie_seed}"
        return replay_command(self.config_path, self.policy, self.seed, self.tie_seed, out)


def replay_command(config_path: str, policy: str, seed: int, tie_seed: int, out: str) -> str:
    """The ``emu run ... --strict`` line that reruns one explored run exactly."""
    return shlex.join(["emu", "run", str(config_path), "--policy", policy, "--seed", str(seed), "--tie-seed", str(tie_seed), "--strict", "--out", out])


def signature(failure: dict[str, Any]) -> str:
    """Coarse identity of a failure: invariant name plus its cause or place, if it names one."""
    detail = failure.get("cause") or failure.get("where")
    return f"{failure['invariant']}:{detail}" if detail else str(failure["invariant"])


def swarm_switches(config: ExperimentConfig, seed: int) -> tuple[str, ...]:
    """The ``[swarm] off`` list for *seed*: each family/op kind the config uses, off on a fair coin."""
    inject = config.inject
    candidates = [name for name in SWARM_FAMILIES if (inject.sigkill_every if name == "sigkill" else getattr(inject, name))]
    used = {OP_NAMES[type(op)] for p in config.processes for t in p.threads for op in t.program}
    candidates += [name for name in SWARM_OPS if name in used]
    rng = random.Random(derive_seed(seed, "swarm"))
    return tuple(name for name in candidates if rng.random() < 0.5)


def with_swarm(config: ExperimentConfig, off: tuple[str, ...]) -> ExperimentConfig:
    return attrs.evolve(config, swarm=SwarmConfig(off=list(off))) if off else config


def run_one(config: ExperimentConfig, policy: str, seed: int, tie_seed: int, off: tuple[str, ...]) -> RunOutcome:
    """Run one (policy, seed, tie seed, swarm) case; violations and emulator errors become failures."""
    from actors.lab.experiment import run_policy

    try:
        results = run_policy(with_swarm(config, off), policy, seed=seed, tie_seed=tie_seed, keep_trace=False).results
    except EmulatorError as error:
        failure = {"invariant": type(error).__name__, "ts": getattr(error, "now_ns", None), "event": None, "message": str(error).splitlines()[0]}
        return RunOutcome(policy=policy, seed=seed, tie_seed=tie_seed, swarm_off=off, failures=[failure], counters={})
    counters = {name: results["counters"].get(name, 0) for name in COUNTERS}
    return RunOutcome(
        policy=policy, seed=seed, tie_seed=tie_seed, swarm_off=off, failures=results["invariants"]["violations"], counters=counters
    )


def cases(config: ExperimentConfig, policies: list[str], runs: int, swarm: bool) -> Iterator[tuple[str, int, int, tuple[str, ...]]]:
    """Every (policy, seed, tie seed, swarm off) to run, in report order."""
    for policy in policies:
        for i in range(runs):
            seed = config.seed + i
            yield policy, seed, i, swarm_switches(config, seed) if swarm else ()


@attrs.define(kw_only=True)
class Exploration:
    """The result of an exploration (what the summary prints)."""

    config: ExperimentConfig
    config_path: str
    runs: int
    policies: list[str]
    failing_runs: dict[str, int] = attrs.field(factory=dict)
    violations: dict[str, int] = attrs.field(factory=dict)
    counters: dict[str, dict[str, int]] = attrs.field(factory=dict)
    failures: dict[tuple[str, str], Failure] = attrs.field(factory=dict)

    def add(self, outcome: RunOutcome) -> None:
        policy = outcome.policy
        totals = self.counters.setdefault(policy, dict.fromkeys(COUNTERS, 0))
        for name, value in outcome.counters.items():
            totals[name] += value
        self.failing_runs.setdefault(policy, 0)
        self.violations.setdefault(policy, 0)
        if not outcome.failures:
            return
        self.failing_runs[policy] += 1
        self.violations[policy] += len(outcome.failures)
        seen_here: set[str] = set()
        for failure in outcome.failures:
            sig = signature(failure)
            entry = self.failures.get((policy, sig))
            if entry is None:
                entry = self.failures[(policy, sig)] = Failure(
                    policy=policy, signature=sig, first=failure, seed=outcome.seed, tie_seed=outcome.tie_seed,
                    swarm_off=outcome.swarm_off, config_path=self.config_path,
                )  # fmt: skip
            entry.violations += 1
            if sig not in seen_here:
                entry.runs += 1
                seen_here.add(sig)

    def distinct(self, policy: str) -> list[Failure]:
        return [f for (p, _sig), f in self.failures.items() if p == policy]


def explore(
    config: ExperimentConfig,
    config_path: str,
    *,
    runs: int,
    policies: list[str] | None = None,
    swarm: bool = False,
    jobs: int = 1,
    progress: Progress | None = None,
) -> Exploration:
    """Run the exploration (see the module docstring) and return what it found."""
    names = list(dict.fromkeys(policies or config.policies))
    result = Exploration(config=config, config_path=str(config_path), runs=runs, policies=names)
    todo = list(cases(config, names, runs, swarm))
    task = progress.add_task(f"explore {config.name}", total=len(todo)) if progress is not None else None
    if jobs == 1:
        outcomes: Iterator[RunOutcome] = (run_one(config, *case) for case in todo)
    else:
        from joblib import Parallel, delayed

        outcomes = Parallel(n_jobs=jobs, return_as="generator")(delayed(run_one)(config, *case) for case in todo)
    for outcome in outcomes:
        result.add(outcome)
        if progress is not None:
            progress.advance(task)
    return result


def write_swarm_config(config_path: pathlib.Path, off: tuple[str, ...], seed: int, cases_dir: pathlib.Path) -> pathlib.Path:
    """The original config text plus ``[swarm] off = [...]``, as its own file (the exact replay input)."""
    cases_dir.mkdir(parents=True, exist_ok=True)
    tag = derive_seed(seed, *off) % 16**8
    path = cases_dir / f"{config_path.stem}-swarm-{tag:08x}.toml"
    text = config_path.read_text(encoding="utf-8").rstrip("\n")
    listing = ", ".join(f'"{name}"' for name in off)
    path.write_text(f"{text}\n\n# emu explore --swarm, seed {seed}: switched off\n[swarm]\noff = [{listing}]\n", encoding="utf-8")
    return path


def corpus_entries(result: Exploration) -> list[dict[str, Any]]:
    out = []
    for failure in result.failures.values():
        first = failure.first
        out.append({
            "config": failure.config_path, "policy": failure.policy, "seed": failure.seed, "tie_seed": failure.tie_seed,
            "swarm_off": list(failure.swarm_off), "invariant": first["invariant"], "signature": failure.signature,
            "ts": first.get("ts"), "event": first.get("event"), "replay": failure.replay_command(),
        })  # fmt: skip
    return out


def merge_corpus(path: pathlib.Path, entries: list[dict[str, Any]]) -> int:
    """Add *entries* not already in the corpus at *path* (by config, policy, signature); the number added."""
    document = {"schema": CORPUS_SCHEMA, "cases": []}
    if path.is_file():
        document = orjson.loads(path.read_bytes())
    known = {(c["config"], c["policy"], c["signature"]) for c in document["cases"]}
    added = [e for e in entries if (e["config"], e["policy"], e["signature"]) not in known]
    document["cases"].extend(added)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return len(added)


def print_summary(result: Exploration, echo=click.echo) -> None:
    config = result.config
    echo(f"{config.name}: {len(result.policies)} policies x {result.runs} runs (seeds {config.seed}..{config.seed + result.runs - 1}, tie seeds 0..{result.runs - 1})")
    echo(f"{'policy':<12} {'runs':>5} {'failing runs':>13} {'violations':>11} {'distinct':>9}")
    for policy in result.policies:
        echo(f"{policy:<12} {result.runs:>5} {result.failing_runs.get(policy, 0):>13} {result.violations.get(policy, 0):>11} {len(result.distinct(policy)):>9}")
    echo("counters summed over runs:")
    injected = any(result.counters.get(p, {}).get(name, 0) for p in result.policies for name in INJECT_COUNTERS)
    for name in COUNTERS if injected else SUMMARY_COUNTERS:
        values = ", ".join(f"{p} {result.counters.get(p, {}).get(name, 0)}" for p in result.policies)
        echo(f"  {name}: {values}")
    if not result.failures:
        echo("no failures")
        return
    echo("distinct failures:")
    for n, failure in enumerate(result.failures.values(), start=1):
        first = failure.first
        ts = first.get("ts")
        at = format_ns(ts) if isinstance(ts, int) else "?"
        fields = " ".join(f"{k}={v}" for k, v in first.items() if k not in ("invariant", "ts", "event"))
        swarm = f" swarm off={','.join(failure.swarm_off)}" if failure.swarm_off else ""
        echo(f"[{n}] {failure.policy}: {failure.signature} at t={at} event {first.get('event')}: {fields}")
        echo(f"    first at seed {failure.seed} tie seed {failure.tie_seed}{swarm}; in {failure.runs}/{result.runs} runs, {failure.violations} times")
        echo(f"    replay: {failure.replay_command()}")


@click.command("explore")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=pathlib.Path))
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Seeds (and tie seeds) per policy.")
@click.option("--policy", "policies", multiple=True, metavar="NAME", help="Policy to explore (repeatable); default: the config's.")
@click.option("--swarm", is_flag=True, help="Switch fault families and racing op kinds on/off per seed.")
@click.option("--corpus", type=click.Path(path_type=pathlib.Path), default=None, help="Merge the distinct failures into this JSON file.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel runs (joblib).")
@click.option("--cases-dir", type=click.Path(path_type=pathlib.Path), default=None, help="Where swarm cases' derived configs go.")
def explore_command(
    config_path: pathlib.Path,
    runs: int,
    policies: tuple[str, ...],
    swarm: bool,
    corpus: pathlib.Path | None,
    jobs: int,
    cases_dir: pathlib.Path | None,
) -> None:
    """Run CONFIG over many seeds and tie seeds, check every invariant, report each distinct failure once."""
    from actors.policy import PRESETS

    try:
        config = load_config(config_path)
    except ConfigError as error:
        for line in error.problems:
            click.echo(line, err=True)
        sys.exit(2)
    valid = [*PRESETS, *(p.name for p in config.policy)]
    unknown = [name for name in policies if name not in valid]
    if unknown:
        click.echo(f"error: unknown policy {', '.join(map(repr, unknown))}; valid policies: {', '.join(valid)}", err=True)
        sys.exit(2)
    if swarm and config.swarm.off:
        click.echo(f"error: {config_path} already has a [swarm] table; --swarm derives its own", err=True)
        sys.exit(2)
    console = Console(stderr=True, highlight=False)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    with progress:
        result = explore(config, str(config_path), runs=runs, policies=list(policies), swarm=swarm, jobs=jobs, progress=progress)
    if swarm:
        where = cases_dir or (corpus.parent / "explore-cases" if corpus is not None else pathlib.Path("explore-cases"))
        for failure in result.failures.values():
            if failure.swarm_off:
                failure.config_path = str(write_swarm_config(config_path, failure.swarm_off, failure.seed, where))
    print_summary(result)
    if corpus is not None:
        added = merge_corpus(corpus, corpus_entries(result))
        click.echo(f"corpus {corpus}: {added} new case(s)", err=True)
    sys.exit(1 if result.failures else 0)
