"""``emu compare EMULATED_DIR REAL_DIR``: the emulator's predictions beside a real kernel's figures.

Both directories are run directories (``emu run`` and ``emu kernel-run``
write them). Emulated policies are paired with real kernels by version
(policy ``v6.1`` with ``linux-6.1``); a policy with no kernel of its version
is compared with every kernel, and so is every kernel left unpaired.

For each pair and each ``<task>/<op>`` both have: the sample counts and the
p50, p99 and max of each side; and for each thread both have, its minor and
major fault counts (``faults``: the emulator's ``current->min_flt`` and
``maj_flt``, the guest's ``/proc/self/task/<tid>/stat``), so a latency that
differs can be traced to faults one side takes and the other does not.

The verdict of a run (``inversion`` or ``none``) is read off one op, the
monitor's (``--op``, default ``monitor/proc_read``): with baselines (the same
experiment without the mechanism under test, one run directory per side: for
``configs/realkernel/iomax-mem.toml`` the plain-fault case under the same
io.max, ``iomax-faults.toml``), a run shows an inversion when that op's p99 is at
least ``factor`` (10) times the baseline's p99 of the same column (same
policy or kernel; otherwise the baseline's first run) *and* at least
``threshold``; without baselines, when the p99 is at least ``threshold``
(20 ms: above the guest's timing noise under TCG, about 10-55 ms at worst,
and far above an uncontended /proc read). The threshold applies to both
sides alike: a wait the real guest could not show above its noise is no
inversion on the emulated side either, however many times the emulator's
noise-free baseline it is. The pair agrees when both verdicts are the same.

With ``plots_out``, one PNG per op: the CDFs of every emulated and real run
overlaid (from the runs' ``latency-samples.json``).
"""

from __future__ import annotations

import pathlib
from typing import Any

import attrs
import numpy as np

from actors.lab.rundir import LoadedRun, RunDirectory, load_run_dir
from emu import format_ns

DEFAULT_OP = "monitor/proc_read"
DEFAULT_FACTOR = 10.0
DEFAULT_THRESHOLD_NS = 20_000_000


@attrs.frozen(kw_only=True)
class Side:
    """One run's figures of one op."""

    column: str
    count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


@attrs.frozen(kw_only=True)
class Verdict:
    column: str
    verdict: str  # "inversion" or "none" (or "no samples")
    p99_ns: int | None
    reference: str  # what it was compared with


@attrs.frozen(kw_only=True)
class Pair:
    emulated: str
    real: str
    ops: list[tuple[str, Side, Side]]
    #: (thread, emulated, real), each ``{"min_flt": n, "maj_flt": n}``.
    faults: list[tuple[str, dict[str, int], dict[str, int]]]
    emulated_verdict: Verdict
    real_verdict: Verdict

    @property
    def agrees(self) -> bool:
        return self.emulated_verdict.verdict == self.real_verdict.verdict


def _version(column: str) -> str:
    return column.removeprefix("linux-").removeprefix("v")


def pairs_of(emulated: RunDirectory, real: RunDirectory) -> list[tuple[LoadedRun, LoadedRun]]:
    """The (emulated, real) runs to compare (see the module docstring)."""
    by_version = {_version(r.policy): r for r in real.runs}
    out, used = [], set()
    for e in emulated.runs:
        match = by_version.get(_version(e.policy))
        if match is not None:
            out.append((e, match))
            used.add(match.policy)
    for e in emulated.runs:
        if _version(e.policy) not in by_version:
            out.extend((e, r) for r in real.runs if r.policy not in used)
    return out


def _side(run: LoadedRun, op: str) -> Side | None:
    lat = run.results["latency"].get(op)
    if lat is None:
        return None
    return Side(column=run.policy, count=lat["count"], p50_ns=lat["p50_ns"], p99_ns=lat["p99_ns"], max_ns=lat["max_ns"])


def verdict(run: LoadedRun, op: str, baseline: RunDirectory | None, *, factor: float, threshold_ns: int) -> Verdict:
    """Whether *run* shows an inversion on *op* (see the module docstring)."""
    side = _side(run, op)
    if side is None:
        return Verdict(column=run.policy, verdict="no samples", p99_ns=None, reference=f"no {op} samples")
    if baseline is None:
        found = side.p99_ns >= threshold_ns
        return Verdict(column=run.policy, verdict="inversion" if found else "none", p99_ns=side.p99_ns, reference=f"p99 >= {format_ns(threshold_ns)}")
    base_run = next((r for r in baseline.runs if r.policy == run.policy), baseline.runs[0] if baseline.runs else None)
    base = _side(base_run, op) if base_run is not None else None
    if base is None:
        return Verdict(column=run.policy, verdict="no samples", p99_ns=side.p99_ns, reference=f"the baseline has no {op} samples")
    found = side.p99_ns >= factor * max(base.p99_ns, 1) and side.p99_ns >= threshold_ns
    return Verdict(
        column=run.policy, verdict="inversion" if found else "none", p99_ns=side.p99_ns,
        reference=f"{side.p99_ns / max(base.p99_ns, 1):.1f}x the baseline's p99 {format_ns(base.p99_ns)} ({base_run.policy}); floor {format_ns(threshold_ns)}",
    )  # fmt: skip


def compare(
    emulated: RunDirectory,
    real: RunDirectory,
    *,
    op: str = DEFAULT_OP,
    baselines: tuple[RunDirectory, RunDirectory] | None = None,
    factor: float = DEFAULT_FACTOR,
    threshold_ns: int = DEFAULT_THRESHOLD_NS,
) -> list[Pair]:
    """Every pair's per-op figures and verdicts."""
    out = []
    for e, r in pairs_of(emulated, real):
        ops = []
        for key in dict.fromkeys([*e.results["latency"], *r.results["latency"]]):
            se, sr = _side(e, key), _side(r, key)
            if se is not None and sr is not None and not key.endswith("/think"):
                ops.append((key, se, sr))
        real_faults = r.results.get("faults", {})
        faults = [(thread, counts, real_faults[thread]) for thread, counts in e.results.get("faults", {}).items() if thread in real_faults]
        out.append(
            Pair(
                emulated=e.policy, real=r.policy, ops=ops, faults=faults,
                emulated_verdict=verdict(e, op, baselines[0] if baselines else None, factor=factor, threshold_ns=threshold_ns),
                real_verdict=verdict(r, op, baselines[1] if baselines else None, factor=factor, threshold_ns=threshold_ns),
            )
        )  # fmt: skip
    return out


def to_json(pairs: list[Pair]) -> list[dict[str, Any]]:
    """The comparison as data (times in ns)."""
    return [
        {
            "emulated": p.emulated,
            "real": p.real,
            "ops": {key: {"emulated": attrs.asdict(e), "real": attrs.asdict(r)} for key, e, r in p.ops},
            "faults": {thread: {"emulated": e, "real": r} for thread, e, r in p.faults},
            "verdict": {"emulated": attrs.asdict(p.emulated_verdict), "real": attrs.asdict(p.real_verdict), "agree": p.agrees},
        }
        for p in pairs
    ]


def write_cdfs(plots_out: pathlib.Path, emulated: RunDirectory, real: RunDirectory) -> list[pathlib.Path]:
    """One PNG per op both directories have: every run's CDF, emulated dashed, real solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(run, "--") for run in emulated.runs] + [(run, "-") for run in real.runs]
    samples = {run.policy + style: (run.samples or {}) for run, style in runs}
    keys = [k for k in dict.fromkeys(k for s in samples.values() for k in s) if not k.endswith("/think")]
    versions = list(dict.fromkeys(_version(run.policy) for run, _style in runs))
    colors = {v: f"C{i % 10}" for i, v in enumerate(versions)}  # a version's emulated and real runs share a colour
    plots_out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run, style in runs:
            values = np.sort(np.asarray(samples[run.policy + style].get(key, []), dtype=np.int64))
            if values.size == 0:
                continue
            side = "emulated" if style == "--" else "real"
            ax.step(
                values / 1e6, np.arange(1, values.size + 1) / values.size, style,
                color=colors[_version(run.policy)], where="post", label=f"{run.policy} ({side}, n={values.size})",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(f"{key} latency (ms)")
        ax.set_ylabel("fraction of ops")
        ax.set_title(f"{key}: emulated (dashed) vs real kernel (solid)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = plots_out / f"compare-cdf-{key.replace('/', '-')}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def load_pair(emulated_dir: pathlib.Path, real_dir: pathlib.Path) -> tuple[RunDirectory, RunDirectory]:
    """Both run directories (``RunDirError`` if either is not one)."""
    return load_run_dir(emulated_dir), load_run_dir(real_dir)
