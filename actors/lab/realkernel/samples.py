"""The guest's samples read back, as the results.json schema the emulator writes.

The guest writes its results disk as ``F <process>.samples`` headers, each
followed by the probe's ``S THREAD OP LATENCY_NS END_NS`` and
``E THREAD INFLIGHT`` lines, and ends with ``@@END rc=N``. ``parse_results``
reads that back (refusing a disk without the end marker: a partial result is
never taken as a whole one); ``run_entry`` makes one ``runs`` entry of
results.json with ``policy = "linux-<version>"``, so ``emu report`` and its
table show one column per kernel. Latencies are keyed ``<thread>/<op>`` over
every process, as the emulator keys them, with the same percentile rule
(``actors.lab.experiment.latency_summary``). The emulator's counters and
mmap_sem statistics are not measured on a real kernel: they are empty, and
the entry's ``kernel`` table says what ran.
"""

from __future__ import annotations

from typing import Any

from actors.lab.experiment import latency_summary
from actors.lab.realkernel.host import RealKernelError

END = "@@END"


def parse_results(text: str) -> tuple[dict[tuple[str, str], list[int]], dict[str, int], int]:
    """(samples by (thread, op), ops in flight at the horizon by thread, the probe's exit status).

    Raises:
        RealKernelError: no end marker, or a line that is not the probe's.
    """
    samples: dict[tuple[str, str], list[int]] = {}
    inflight: dict[str, int] = {}
    status = None
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0] == "F":
            continue
        if fields[0] == END:
            status = int(fields[1].removeprefix("rc="))
            break
        try:
            if fields[0] == "S" and len(fields) == 5:
                samples.setdefault((fields[1], fields[2]), []).append(int(fields[3]))
                continue
            if fields[0] == "E" and len(fields) == 3:
                inflight[fields[1]] = inflight.get(fields[1], 0) + int(fields[2])
                continue
        except ValueError:
            pass
        raise RealKernelError(f"the guest's results, line {number}: not a probe sample: {line[:80]!r}")
    if status is None:
        raise RealKernelError("the guest's results disk has no end marker: the guest stopped before writing all of them")
    return samples, inflight, status


def run_entry(version: str, release: str, samples: dict[tuple[str, str], list[int]], inflight: dict[str, int], horizon_ns: int, seed: int) -> dict[str, Any]:
    """One ``runs`` entry of results.json for a real kernel."""
    return {
        "policy": f"linux-{version}",
        "seed": seed,
        "tie_seed": None,
        "trace_digest": None,
        "virtual_ns": horizon_ns,
        "events": sum(len(v) for v in samples.values()),
        "end": "horizon",
        "latency": latency_summary(samples),
        "counters": {"ops_in_flight_at_horizon": sum(inflight.values())},
        "mmap_sem": {},
        "iolatency": {},
        "invariants": {"violations": []},
        "kernel": {"version": version, "release": release, "source": "Debian package, booted under qemu TCG"},
    }
