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
