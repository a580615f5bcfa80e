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
    assert header.startswith("| policy | app/touch n | app/touch p50 | app/touch p99 | app/touch max | mon/proc_read n | mon/proc_read p50")
    assert "mmap_sem wait avg" in header and align.count("---") == header.count("|") - 1
    assert [r.split(" | ")[0] for r in rows] == ["| v4.19", "| v5.1"]
    assert "| 10 | 1 us* | 2 us* | 3 us | - | - | - | - |" in rows[1]  # 10 samples: the percentiles are marked
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


def _cells(line: str) -> list[str]:
    """The policy cells of a panel line (after its label)."""
    return [cell.strip() for cell in line.split("│")[1:]]


def _text(report_: Any, width: int) -> str:
    console = Console(record=True, width=width, highlight=False)
    print_report(report_, "table", console=console)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_panels_fit_the_width(document: dict[str, Any], width: int) -> None:
    """The default layout fits 80 and 120 columns with four policies and long op names, cutting no cell."""
    run = document["runs"][0]
    runs = [{**run, "policy": name} for name in ("v2.6.36", "v4.19", "v5.1", "v5.7")]
    runs[0]["latency"] = {**run["latency"], "very-long-thread-name/proc_read": _lat(1000, 2000, 3000, count=500)}
    report = build_report({**document, "runs": runs}, answer=["app/touch.p99_ns", "counters.sigbus_delivered"])
    text = _text(report, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text and "..." not in text
    for policy in ("v2.6.36", "v4.19", "v5.1", "v5.7"):
        assert policy in text
    assert "very-long-thread-name/proc_read" in text.replace("\n", "")
    assert "5 ms* n=10" in text  # the answer's p99 with its sample count, marked


def test_terminal_panels_show_sample_counts_and_mark_few(document: dict[str, Any]) -> None:
    """Every op shows its samples; percentiles over fewer than 100 are marked, max is not; missing ops are dashes."""
    document["runs"][1]["latency"]["app/touch"] = _lat(1000, 2000, 3000, count=250)
    lines = _text(build_report(document), 120).splitlines()
    samples = next(line for line in lines if line.startswith("app/touch samples"))
    assert _cells(samples) == ["10", "250"]
    p99 = next(line for line in lines[lines.index(samples) :] if line.strip().startswith("p99"))
    assert "5 ms*" in p99 and "2 us*" not in p99 and "2 us" in p99
    maxima = next(line for line in lines[lines.index(samples) :] if line.strip().startswith("max"))
    assert "*" not in maxima
    proc = next(line for line in lines if line.startswith("mon/proc_read samples"))
    assert _cells(proc)[-1] == "-"


def test_zero_counters_are_shown(document: dict[str, Any]) -> None:
    """A counter one policy never counted shows as 0 for it, not as a missing row; an answer counter no run has is 0."""
    document["runs"][0]["counters"]["btrfs_used_cached_fastpath"] = 7
    report = build_report(document, answer=["counters.btrfs_used_cached_fastpath", "counters.sigbus_delivered"])
    assert [row.counters["btrfs_used_cached_fastpath"] for row in report.rows] == [7, 0]
    assert [a.values for a in report.answer] == [{"v4.19": 7, "v5.1": 0}, {"v4.19": 0, "v5.1": 0}]
    line = next(line for line in _text(report, 80).splitlines() if line.startswith("btrfs_used_cached_fastpath"))
    assert _cells(line) == ["7", "0"]


def test_answer_rates_and_formats(document: dict[str, Any]) -> None:
    """``per_s`` is samples per virtual second; the answer reaches markdown and JSON too."""
    report = build_report(document, answer=["app/touch.per_s", "mon/proc_read.p99_ns"])
    rate, p99 = report.answer
    assert rate.values == {"v4.19": 10.0, "v5.1": 10.0} and rate.unit == "rate"
    assert p99.values == {"v4.19": 4_000_000, "v5.1": None} and p99.counts == {"v4.19": 10}
    assert "| app/touch.per_s | 10.0/s | 10.0/s |" in render_markdown(report)
    assert report_json(report)["answer"][1]["values"] == {"v4.19": 4_000_000, "v5.1": None}
    assert "4 ms* n=10" in _text(report, 80)


def test_wide_format_keeps_one_row_per_policy(document: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """``--format wide`` is the one-row-per-policy table, at its natural width into a pipe."""
    print_report(build_report(document), "wide")
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "v4.19" in line and "│" in line)
    assert "5 ms*" in row and "mon/proc_read" in out


def test_memory_panel_shows_limited_cgroups_only(document: dict[str, Any]) -> None:
    """Runs with a ``memcg`` entry get a memory panel: PSI totals and peaks of the cgroups that have a limit."""
    unlimited = {"max_pages": None, "high_pages": None, "psi_some_ns": 5, "psi_full_ns": 0, "watermark_pages": 9, "oom_kill": 0}
    for i, run in enumerate(document["runs"]):
        limited = {"max_pages": 256, "high_pages": None, "psi_some_ns": 2_000_000 * (i + 1), "psi_full_ns": 0, "watermark_pages": 256, "oom_kill": i}
        run["memcg"] = {"/": unlimited, "batch": limited}
    report = build_report(document)
    assert [label for label, _values, _time in report.memory] == [
        "batch memory pressure some",
        "batch memory pressure full",
        "batch peak usage (pages)",
        "batch OOM kills",
    ]
    assert report.memory[0][1] == [2_000_000, 4_000_000] and report.memory[3][1] == [0, 1]
    line = next(line for line in _text(report, 120).splitlines() if line.startswith("batch memory pressure some"))
    assert _cells(line) == ["2 ms", "4 ms"]


def test_no_memory_panel_without_memcg_results(document: dict[str, Any]) -> None:
    assert build_report(document).memory == []
