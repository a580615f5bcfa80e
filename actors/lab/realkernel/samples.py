"""The guest's samples read back, as the results.json schema the emulator writes.

The guest writes its results disk as ``F <file>`` headers, each followed by
the probe's lines: per process, ``S THREAD OP LATENCY_NS END_NS`` samples and,
per thread, ``E THREAD INFLIGHT`` and ``R THREAD MINFLT MAJFLT``; from the
probe's parent, ``V NAME DELTA`` for the /proc/vmstat counters over the run
and ``W COMM COUNT STATE:frame;frame;...`` for each thread's sampled state
and kernel stack (``COMM``: the thread's name cut to the kernel's 15
characters).
The disk ends with ``@@END rc=N``. ``parse_results`` reads that back
(refusing a disk without the end marker: a partial result is never taken as
a whole one); ``run_entry`` makes one ``runs`` entry of results.json with
``policy = "linux-<version>"``, so ``emu report`` and its table show one
column per kernel. Latencies are keyed ``<thread>/<op>`` over every process,
as the emulator keys them, with the same percentile rule
(``actors.lab.experiment.latency_summary``); each thread's fault counts go
to ``faults`` as the emulator writes its own, the kernel's /proc/vmstat
deltas to ``vmstat``, and the stack samples to ``stacks``
(``{thread: {"D:frame;frame": samples, "R:": samples, ...}}``, most
sampled first; one sample every ``STACK_SAMPLE_NS``). The emulator's other counters and its mmap_sem
statistics are not measured on a real kernel: they are empty, and the
entry's ``kernel`` table says what ran.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.lab.experiment import latency_summary
from actors.lab.realkernel.host import RealKernelError

END = "@@END"
#: How often the probe samples every thread's state and kernel stack (``SAMPLE_NS`` in probe.c).
STACK_SAMPLE_NS = 2_000_000
#: ``TASK_COMM_LEN - 1``: how much of a thread's name its comm keeps.
COMM_CHARS = 15


@attrs.frozen(kw_only=True)
class GuestResults:
    """What the probe wrote, as data.

    Attributes:
        samples: latencies by (thread, op).
        inflight: ops in flight at the horizon, by thread.
        faults: ``{"min_flt": n, "maj_flt": n}`` by thread (threads of one name in several processes summed).
        vmstat: /proc/vmstat counter deltas over the run (only those the kernel has).
        stacks: samples by thread, then by ``"STATE:frame;frame;..."`` (``"R:"``: runnable).
        status: the probe's exit status.
    """

    samples: dict[tuple[str, str], list[int]]
    inflight: dict[str, int]
    faults: dict[str, dict[str, int]]
    vmstat: dict[str, int]
    stacks: dict[str, dict[str, int]]
    status: int


def parse_results(text: str, thread_names: tuple[str, ...] = ()) -> GuestResults:
    """The guest's results disk as data; a stack sample's comm is taken as the one of *thread_names* it cuts to.

    Raises:
        RealKernelError: no end marker, or a line that is not the probe's.
    """
    samples: dict[tuple[str, str], list[int]] = {}
    inflight: dict[str, int] = {}
    faults: dict[str, dict[str, int]] = {}
    vmstat: dict[str, int] = {}
    stacks: dict[str, dict[str, int]] = {}
    names = {name[:COMM_CHARS]: name for name in thread_names}
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0] == "F":
            continue
        if fields[0] == END:
            status = int(fields[1].removeprefix("rc="))
            ordered = {thread: dict(sorted(by.items(), key=lambda item: (-item[1], item[0]))) for thread, by in sorted(stacks.items())}
            return GuestResults(samples=samples, inflight=inflight, faults=dict(sorted(faults.items())), vmstat=vmstat, stacks=ordered, status=status)
        try:
            if fields[0] == "S" and len(fields) == 5:
                samples.setdefault((fields[1], fields[2]), []).append(int(fields[3]))
                continue
            if fields[0] == "E" and len(fields) == 3:
                inflight[fields[1]] = inflight.get(fields[1], 0) + int(fields[2])
                continue
            if fields[0] == "R" and len(fields) == 4:
                counts = faults.setdefault(fields[1], {"min_flt": 0, "maj_flt": 0})
                counts["min_flt"] += int(fields[2])
                counts["maj_flt"] += int(fields[3])
                continue
            if fields[0] == "V" and len(fields) == 3:
                vmstat[fields[1]] = int(fields[2])
                continue
            if fields[0] == "W" and len(fields) == 4:
                by = stacks.setdefault(names.get(fields[1], fields[1]), {})
                by[fields[3]] = by.get(fields[3], 0) + int(fields[2])
                continue
        except ValueError:
            pass
        raise RealKernelError(f"the guest's results, line {number}: not a probe sample: {line[:80]!r}")
    raise RealKernelError("the guest's results disk has no end marker: the guest stopped before writing all of them")


def run_entry(version: str, release: str, guest: GuestResults, horizon_ns: int, seed: int) -> dict[str, Any]:
    """One ``runs`` entry of results.json for a real kernel."""
    return {
        "policy": f"linux-{version}",
        "seed": seed,
        "tie_seed": None,
        "trace_digest": None,
        "virtual_ns": horizon_ns,
        "events": sum(len(v) for v in guest.samples.values()),
        "end": "horizon",
        "latency": latency_summary(guest.samples),
        "counters": {"ops_in_flight_at_horizon": sum(guest.inflight.values())},
        "faults": guest.faults,
        "vmstat": guest.vmstat,
        "stacks": guest.stacks,
        "mmap_sem": {},
        "iolatency": {},
        "invariants": {"violations": []},
        "kernel": {"version": version, "release": release, "source": "Debian package, booted under qemu TCG", "probe_status": guest.status},
    }
