"""The comparison report (actors.lab.report): rows as data, and the table, markdown and JSON renderers."""

from __future__ import annotations

import pathlib
from typing import Any

import orjson
import pytest
from rich.console import Console

from actors.lab.report import (
    build_report,
    print_report,
    render_markdown,
    render_table,
    report_json,
)
from actors.lab.rundir import RunDirError, load_run_dir


def _lat(p50: int, p99: int, mx: int, count: int = 10) -> dict[str, int]:
    return {"count": count, "min_ns": 1, "p50_ns": p50, "p90_ns": p50, "p99_ns": p99, "p999_ns": mx, "max_ns": mx, "mean_ns": p50}


def _run(policy: str, latency: dict[str, Any], sems: dict[str, dict[str, int]], **counters: int) -> dict[str, Any]:
    return {
        "policy": policy,
        "seed": 7,
        "tie_seed": None,
        "trace_digest": "0" * 32,
        "virtual_ns": 10**9,
        "events": 100,
        "latency": latency,
        "counters": {"faults": 5, "major_faults": 0, "fault_retries": 0, "mmap_sem_held_across_io": 0, "mmap_sem_held_across_io_ns": 0, **counters},
        "mmap_sem": sems,
        "invariants": {"checked": 3, "violations": []},
    }


def _sem(contended: int, total: int, mx: int) -> dict[str, int]:
    return {"read_acquires": 1, "write_acquires": 1, "contended": contended, "wait_max_ns": mx, "wait_total_ns": total, "hold_max_ns": 1}


@pytest.fixture
def document() -> dict[str, Any]:
    """A results.json document with two policies, two processes each and a think op."""
    return {
        "schema": 1,
        "experiment": "demo",
        "config_sha256": "x",
        "runs": [
            _run(
                "v4.19",
                {"app/touch": _lat(1000, 5_000_000, 9_000_000), "app/think": _lat(1, 1, 1), "mon/proc_read": _lat(20_000, 4_000_000, 4_200_000)},
                {"app": _sem(3, 3_000_000, 2_000_000), "db": _sem(1, 1_000_000, 1_000_000)},
                fault_retries=4, major_faults=6, mmap_sem_held_across_io=2, mmap_sem_held_across_io_ns=7_000_000,
            ),  # fmt: skip
            _run("v5.1", {"app/touch": _lat(1000, 2000, 3000), "app/think": _lat(1, 1, 1)}, {"app": _sem(0, 0, 0)}),
        ],
    }


def test_build_report_sums_contention_over_processes(document: dict[str, Any]) -> None:
    """Contended and total wait are summed over processes, max wait is the largest, avg wait is total/contended."""
    row = build_report(document).rows[0]
    assert (row.contended, row.wait_total_ns, row.wait_max_ns, row.wait_avg_ns) == (4, 4_000_000, 2_000_000, 1_000_000)
    assert (row.fault_retries, row.major_faults, row.held_across_io, row.held_across_io_ns) == (4, 6, 2, 7_000_000)


def test_build_report_leaves_out_think_and_keeps_first_seen_order(document: dict[str, Any]) -> None:
    """Every op but think gets a column, in the order the runs first name them."""
    report = build_report(document)
    assert report.ops == ["app/touch", "mon/proc_read"]
    assert (report.experiment, report.seed, report.tie_seed) == ("demo", 7, None)


def test_uncontended_policy_has_zero_average_wait(document: dict[str, Any]) -> None:
    """A policy whose mmap_sems were never contended reports an average wait of zero, not an error."""
    row = build_report(document).rows[1]
    assert (row.contended, row.wait_avg_ns) == (0, 0)
    assert row.latency["mon/proc_read"] is None


def test_markdown_has_a_row_per_policy_and_dashes_for_missing_ops(document: dict[str, Any]) -> None:
    """The markdown table has a header, an alignment line and one row per policy; a missing op shows as dashes."""
    lines = render_markdown(build_report(document)).splitlines()
    assert lines[0] == "### demo (seed 7)"
    header, align, *rows = lines[2:]
    assert header.startswith("| policy | app/touch p50 | app/touch p99 | app/touch max | mon/proc_read p50")
    assert "mmap_sem wait avg" in header and align.count("---") == header.count("|") - 1
    assert [r.split(" | ")[0] for r in rows] == ["| v4.19", "| v5.1"]
    assert "| 1 us | 2 us | 3 us | - | - | - |" in rows[1]
    assert "| 4 | 4 ms | 2 ms | 1 ms |" in rows[0]


def test_json_report_keeps_nanoseconds(document: dict[str, Any]) -> None:
    """The JSON report has the same numbers as the rows, in ns."""
    data = report_json(build_report(document))
    assert data["ops"] == ["app/touch", "mon/proc_read"]
    first = data["rows"][0]
    assert first["latency"]["app/touch"] == {"count": 10, "p50_ns": 1000, "p99_ns": 5_000_000, "max_ns": 9_000_000}
    assert first["mmap_sem"] == {"contended": 4, "wait_total_ns": 4_000_000, "wait_max_ns": 2_000_000, "wait_avg_ns": 1_000_000}
    assert data["rows"][1]["latency"]["mon/proc_read"] is None
    orjson.dumps(data)  # serialisable as is


def test_rich_table_has_every_column(document: dict[str, Any]) -> None:
    """The rich table shows a row per policy and the perf-lock-contention columns."""
    console = Console(record=True, width=400, highlight=False)
    console.print(render_table(build_report(document)))
    text = console.export_text()
    assert "v4.19" in text and "v5.1" in text and "wait avg" in text and "app/think" not in text


def test_print_report_formats(document: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """``print_report`` prints JSON, markdown or a table, and refuses an unknown format."""
    report = build_report(document)
    print_report(report, "json")
    assert orjson.loads(capsys.readouterr().out) == report_json(report)
    print_report(report, "markdown")
    assert capsys.readouterr().out == render_markdown(report)
    print_report(report, "table")
    assert "mon/proc_read" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown report format"):
        print_report(report, "html")


def test_load_run_dir_refuses_what_is_not_a_run_directory(tmp_path: pathlib.Path, document: dict[str, Any]) -> None:
    """A directory without results.json, with broken JSON, or of another schema is refused in one line."""
    with pytest.raises(RunDirError, match="not a run directory"):
        load_run_dir(tmp_path)
    (tmp_path / "results.json").write_text("{nope")
    with pytest.raises(RunDirError, match="not valid JSON"):
        load_run_dir(tmp_path)
    (tmp_path / "results.json").write_bytes(orjson.dumps({**document, "schema": 2}))
    with pytest.raises(RunDirError, match="schema 1"):
        load_run_dir(tmp_path)
    (tmp_path / "results.json").write_bytes(orjson.dumps(document))
    loaded = load_run_dir(tmp_path)
    assert [run.policy for run in loaded.runs] == ["v4.19", "v5.1"]
    assert loaded.runs[0].trace_path == tmp_path / "v4.19" / "trace.jsonl"
    assert loaded.runs[0].samples is None
    with pytest.raises(RunDirError, match="no run of policy 'v3'"):
        loaded.run("v3")
