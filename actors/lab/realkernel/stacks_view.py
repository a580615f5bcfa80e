"""Where a real kernel's threads spent the run: the probe's stack samples as a table.

The probe samples every thread's state and kernel stack every
``STACK_SAMPLE_NS`` (``actors.lab.realkernel.samples``); a run's ``stacks``
holds the counts. ``stacks_table`` shows, per kernel and thread, its fault
counts and the states and stacks most sampled, each as a share of the
thread's samples: ``D`` (uninterruptible: IO, a page lock, an rwsem), ``S``
(interruptible: a timer, a killable wait), ``R`` (runnable or running).
A stack is its innermost frames, innermost first.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from actors.lab.realkernel.samples import STACK_SAMPLE_NS
from emu import format_ns

#: Frames of a stack the table shows.
FRAMES = 3


def describe(key: str) -> str:
    """``"D:swap_readpage;swap_cluster_readahead;do_swap_page;..."`` as ``"D swap_readpage < swap_cluster_readahead < do_swap_page"``."""
    state, _, frames = key.partition(":")
    shown = [f for f in frames.split(";") if f][:FRAMES]
    if state == "R":
        return "R (runnable)"
    return f"{state} " + (" < ".join(shown) if shown else "(no stack)")


def stacks_table(runs: list[dict[str, Any]], *, top: int = 3) -> Table | None:
    """The table for the runs that have stack samples (real kernels), or ``None`` when none has."""
    sampled = [run for run in runs if run.get("stacks")]
    if not sampled:
        return None
    table = Table(
        title=f"where each thread's time went (a sample every {format_ns(STACK_SAMPLE_NS)}; innermost frame first)",
        title_justify="left", box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for column, justify in (("kernel", "left"), ("thread", "left"), ("faults min/maj", "right"), ("share", "right"), ("state and stack", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for run in sampled:
        for thread, by in run["stacks"].items():
            total = sum(by.values())
            faults = run.get("faults", {}).get(thread)
            counts = f"{faults['min_flt']:,}/{faults['maj_flt']:,}" if faults else "-"
            for rank, (key, count) in enumerate(list(by.items())[:top]):
                first = rank == 0
                table.add_row(run["policy"] if first else "", thread if first else "", counts if first else "", f"{100 * count / total:.0f}% of {total}", describe(key))
    return table


def print_stacks(runs: list[dict[str, Any]], fmt: str, *, console: Console | None = None) -> None:
    """Print the table after a ``table`` report of real runs (other formats, and emulated runs, print nothing)."""
    table = stacks_table(runs) if fmt == "table" else None
    if table is not None:
        (console or Console(highlight=False)).print(table)
