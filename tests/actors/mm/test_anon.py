"""Tests for actors/mm/anon.py: the zero page, copy-on-write, swap-in with the page-lock retry, munmap of swapped memory.

Through the full model (``run_policy``) on small machines.
"""

from __future__ import annotations

from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy


def _config(program: list[dict], *, heap: str, memory_max: str = "1GiB", swap: str = "64MiB", iterations: int = 1, horizon: str = "500ms") -> dict:
    return {
        "name": "anon-test",
        "horizon": horizon,
        "policies": ["v4.19"],
        "swap": {"size": swap},
        "cgroups": [{"path": "batch", "memory.max": memory_max}],
        "processes": [
            {
                "name": "batch",
                "cgroup": "batch",
                "mappings": [{"name": "heap", "size": heap}],
                "threads": [{"name": "faulter", "iterations": iterations, "program": program}],
            }
        ],
    }


def test_reads_map_the_zero_page_and_writes_copy_it_into_charged_pages() -> None:
    """16 read faults map the zero page (nothing charged); 16 write faults then COW each into a new page."""
    program = [
        {"op": "touch", "mapping": "heap", "pattern": "sequential", "pages": 16},
        {"op": "touch", "mapping": "heap", "pattern": "sequential", "pages": 16, "write": True},
    ]
    result = run_policy(config_from_dict(_config(program, heap="64KiB")), "v4.19")
    results = result.results
    assert results["counters"]["faults"] == 32
    assert results["counters"].get("anon_pages_allocated", 0) == 0  # do_anonymous_page only mapped the zero page
    assert results["memcg"]["batch"]["usage_pages"] == 16  # the 16 copies (wp_page_copy)
    assert results["invariants"]["violations"] == []


def _random_swapins(policy: dict | None = None):
    program = [{"op": "touch", "mapping": "heap", "pattern": "random", "write": True}]
    config = _config(program, heap="4MiB", memory_max="1MiB", iterations=0, horizon="300ms")
    name = "v4.19"
    if policy is not None:
        config["policy"] = [policy]
        config["policies"] = [name := policy["name"]]
    result = run_policy(config_from_dict(config), name)
    majors = [r for r in result.trace.records() if r["event"] == "fault_done" and r["major"]]
    return result, majors


def test_random_swap_ins_read_one_page_and_wait_for_it_holding_the_sem() -> None:
    """4.19: random swap-ins get no readahead hits, so swapin_nr_pages falls to one page and the read is do_poll: swap_readpage waits for it inside the fault, sem held, no RETRY."""
    result, majors = _random_swapins()
    counters = result.results["counters"]
    assert len(majors) > 100
    assert sum(r["attempts"] == 1 for r in majors) >= 0.95 * len(majors)  # at most the first few read a window
    assert counters["pswpin"] <= 1.05 * len(majors)  # one read a fault: no readahead
    assert counters["mmap_sem_held_across_io"] >= 0.95 * len(majors)
    assert result.results["faults"]["faulter"]["maj_flt"] == len(majors)
    assert result.results["invariants"]["violations"] == []


def test_without_the_polled_read_a_swap_in_drops_the_sem_and_retries() -> None:
    """swapin_sync off (v6.12, and before 4.13): the one-page read is submitted, then lock_page_or_retry drops the sem to wait for it; the retry finds the page."""
    result, majors = _random_swapins({"name": "no-poll", "base": "v4.19", "swapin_sync": False})
    counters = result.results["counters"]
    assert majors and all(r["attempts"] == 2 for r in majors)
    assert counters["fault_retries"] == len(majors)
    assert counters["mmap_sem_held_across_io"] < 0.1 * len(majors)  # only reclaim's waits for its swap writes
    assert counters["swapin_submit_under_mmap_sem_ns"] > 0
    assert result.results["invariants"]["violations"] == []


def test_sequential_swap_ins_grow_the_readahead_window() -> None:
    """Swapped out in order and read back in order: the hits on read-ahead pages grow the window to 2**page_cluster, so most faults find their page read ahead."""
    program = [
        {"op": "touch", "mapping": "heap", "pattern": "sequential", "pages": 1024, "write": True},
        {"op": "touch", "mapping": "heap", "pattern": "sequential", "pages": 1024},
    ]
    results = run_policy(config_from_dict(_config(program, heap="4MiB", memory_max="1MiB", horizon="2s")), "v4.19").results
    counters = results["counters"]
    assert counters["pswpin"] >= 500
    assert counters["major_faults"] <= counters["pswpin"] // 4  # eight-page windows: one fault reads for seven more
    assert results["invariants"]["violations"] == []


def test_munmap_of_swapped_memory_frees_every_slot() -> None:
    """Write 4 MiB in a 1 MiB group (most of it swapped out), then munmap it: no slot stays in use, nothing stays charged."""
    program = [
        {"op": "touch", "mapping": "heap", "pattern": "sequential", "pages": 1024, "write": True},
        {"op": "munmap", "mapping": "heap"},
    ]
    results = run_policy(config_from_dict(_config(program, heap="4MiB", memory_max="1MiB")), "v4.19").results
    assert results["counters"]["pswpout"] >= 1024 - 256
    assert results["swap"]["inuse"] == 0 and results["swap"]["cached"] == 0
    assert results["memcg"]["batch"]["usage_pages"] == 0
    assert results["invariants"]["violations"] == []
