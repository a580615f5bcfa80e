"""The real kernel's stack samples as a table (actors.lab.realkernel.stacks_view)."""

from __future__ import annotations

from rich.console import Console

from actors.lab.realkernel.stacks_view import describe, stacks_table

RUN = {
    "policy": "linux-6.1",
    "faults": {"faulter": {"min_flt": 9061, "maj_flt": 128}},
    "stacks": {
        "faulter": {
            "D:swap_readpage;swap_cluster_readahead;do_swap_page;__handle_mm_fault;handle_mm_fault;do_user_addr_fault": 1095,
            "R:": 330,
            "D:folio_wait_bit_common;__folio_lock_or_retry;do_swap_page": 75,
        },
        "mapper": {"S:hrtimer_nanosleep": 3, "D:": 1},
    },
}


def test_describe_shows_the_state_and_the_innermost_frames() -> None:
    assert describe(next(iter(RUN["stacks"]["faulter"]))) == "D swap_readpage < swap_cluster_readahead < do_swap_page"
    assert (describe("R:"), describe("D:")) == ("R (runnable)", "D (no stack)")


def test_the_table_gives_each_threads_top_stacks_as_shares() -> None:
    console = Console(width=160, record=True)
    console.print(stacks_table([RUN], top=2))
    text = console.export_text()
    assert "9,061/128" in text and "73% of 1500" in text and "22% of 1500" in text
    assert "folio_wait_bit_common" not in text  # third of the faulter's: beyond top=2
    assert "75% of 4" in text and "25% of 4" in text


def test_no_table_for_emulated_runs() -> None:
    assert stacks_table([{"policy": "v6.1", "faults": {}}]) is None


def test_emu_report_of_a_real_run_prints_where_the_time_went(tmp_path) -> None:
    """``emu report DIR`` of a kernel-run directory shows the stacks table after the report."""
    import orjson
    from click.testing import CliRunner

    from actors.lab.cli import main
    from actors.lab.realkernel.samples import parse_results, run_entry

    disk = "F a.samples\nS faulter touch 1000 2000\nE faulter 0\nR faulter 9061 128\nF kernel.stacks\nW faulter 1095 D:swap_readpage;swap_cluster_readahead;do_swap_page\nW faulter 405 R:\n@@END rc=0\n"
    entry = run_entry("6.1", "6.1.0-57-amd64", parse_results(disk, ("faulter",)), 3_000_000_000, 1)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "results.json").write_bytes(orjson.dumps({"schema": 1, "experiment": "x", "runs": [entry]}))
    result = CliRunner().invoke(main, ["report", str(tmp_path / "real")], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "where each thread's time went" in result.output and "D swap_readpage < swap_cluster_readahead < do_swap_page" in result.output
    assert "73% of 1500" in result.output and "9,061/128" in result.output
