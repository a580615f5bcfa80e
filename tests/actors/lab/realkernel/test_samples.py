"""The guest's samples read back as results.json (actors.lab.realkernel.samples)."""

from __future__ import annotations

import pytest

from actors.lab.realkernel.host import RealKernelError
from actors.lab.realkernel.samples import parse_results, run_entry
from actors.lab.report import build_report

DISK = """F monitor.samples
S monitor proc_read 1000 5000
S monitor proc_read 3000 15000
E monitor 0
R monitor 12 1
F batch.samples
S faulter touch 20000 30000
S mapper mmap 500 40000
E faulter 1
E mapper 0
R faulter 40 300
R mapper 7 0
F kernel.vmstat
V pgmajfault 301
V pswpin 0
@@END rc=0
"""


def test_parse_results() -> None:
    guest = parse_results(DISK)
    assert guest.samples == {("monitor", "proc_read"): [1000, 3000], ("faulter", "touch"): [20000], ("mapper", "mmap"): [500]}
    assert guest.inflight == {"monitor": 0, "faulter": 1, "mapper": 0}
    assert guest.faults == {"faulter": {"min_flt": 40, "maj_flt": 300}, "mapper": {"min_flt": 7, "maj_flt": 0}, "monitor": {"min_flt": 12, "maj_flt": 1}}
    assert guest.vmstat == {"pgmajfault": 301, "pswpin": 0}
    assert guest.status == 0


def test_threads_of_one_name_are_summed() -> None:
    two = DISK.replace("R mapper 7 0\n", "R mapper 7 0\nR mapper 3 2\n")
    assert parse_results(two).faults["mapper"] == {"min_flt": 10, "maj_flt": 2}


def test_no_end_marker_is_refused() -> None:
    with pytest.raises(RealKernelError, match="no end marker"):
        parse_results(DISK.replace("@@END rc=0\n", ""))


def test_a_line_that_is_not_the_probes() -> None:
    with pytest.raises(RealKernelError, match=r"line 3: not a probe sample: 'S monitor proc_read x 15000'"):
        parse_results(DISK.replace("3000 15000", "x 15000"))


def test_run_entry_is_a_report_column() -> None:
    entry = run_entry("6.1", "6.1.0-57-amd64", parse_results(DISK), 3_000_000_000, 1)
    assert entry["policy"] == "linux-6.1"
    assert entry["latency"]["monitor/proc_read"] == {
        "count": 2, "min_ns": 1000, "p50_ns": 1000, "p90_ns": 3000, "p99_ns": 3000, "p999_ns": 3000, "max_ns": 3000, "mean_ns": 2000,
    }  # fmt: skip
    assert entry["counters"] == {"ops_in_flight_at_horizon": 1}
    assert entry["faults"]["monitor"] == {"min_flt": 12, "maj_flt": 1} and entry["vmstat"]["pgmajfault"] == 301
    assert entry["kernel"]["probe_status"] == 0
    report = build_report({"schema": 1, "experiment": "x", "runs": [entry, {**entry, "policy": "linux-5.10"}]})
    assert [row.policy for row in report.rows] == ["linux-6.1", "linux-5.10"]
    assert report.ops == ["faulter/touch", "mapper/mmap", "monitor/proc_read"]  # sorted, as the emulator writes them
