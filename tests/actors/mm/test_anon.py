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


def test_a_swap_in_drops_the_sem_to_wait_for_its_read_and_retries() -> None:
    """4.19 do_swap_page: readahead submitted under the sem, then lock_page_or_retry drops it; the retry finds the page."""
    program = [{"op": "touch", "mapping": "heap", "pattern": "random", "write": True}]
    result = run_policy(config_from_dict(_config(program, heap="4MiB", memory_max="1MiB", iterations=0, horizon="300ms")), "v4.19")
    records = [r for r in result.trace.records() if r["event"] == "fault_done"]
    majors = [r for r in records if r["major"]]
    assert majors and all(r["attempts"] == 2 for r in majors)  # RETRY after waiting on the locked swap-cache page
    counters = result.results["counters"]
    assert counters["pswpin"] >= len(majors) and counters["fault_retries"] == len(majors)
    assert counters["swapin_submit_under_mmap_sem_ns"] > 0
    assert result.results["invariants"]["violations"] == []


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
