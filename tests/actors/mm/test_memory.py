"""Tests for actors/mm/memory.py: do_page_mkwrite and fault_dirty_shared_page in the write-fault path.

docs/DESIGN.md B19 (V3's btrfs mkwrite,
paid twice) and 20 (balance_dirty_pages under the sem until 89b15332af7c),
through the full model with ``run_policy``.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import pytest

from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy

US = 1_000


def _under_sem(records: list[dict[str, Any]]) -> set[int]:
    """Seqs of records emitted while their actor held some mmap_sem (from the lock tracepoints)."""
    held: dict[str, int] = collections.defaultdict(int)
    out = set()
    for r in records:
        if r["event"] == "mmap_lock_acquire_returned" and r["success"]:
            held[r["actor"]] += 1
        elif r["event"] == "mmap_lock_released":
            held[r["actor"]] -= 1
        elif held[r["actor"]]:
            out.add(r["seq"])
    return out


# -- behaviour 19 -------------------------------------------------------------------------------


@functools.cache
def _btrfs_writes(policy: str):
    config = config_from_dict(
        {
            "name": "btrfs-mkwrite-twice",
            "horizon": "1s",
            "btrfs": {"reserve_cost": "30us"},
            "files": [{"name": "db", "size": "1MiB", "fs": "btrfs", "cached": 1.0}],
            "processes": [
                {
                    "name": "db",
                    "mappings": [{"name": "db", "file": "db", "writable": True}],
                    "threads": [
                        {
                            "name": "writer",
                            "iterations": 40,
                            "program": [{"op": "touch", "mapping": "db", "pattern": "sequential", "write": True}, {"op": "think", "time": "100us"}],
                        }
                    ],
                }
            ],
        }
    )
    return run_policy(config, policy)


@pytest.mark.parametrize(("policy", "per_fault"), [("v4.19", 1), ("v3", 2)])
def test_behaviour_19_v3_btrfs_mkwrite_paid_twice_second_time_under_sem(policy: str, per_fault: int) -> None:
    """V3: attempt 1 runs btrfs_page_mkwrite without the sem and returns RETRY; attempt 2 redoes the whole mkwrite holding it (4.19: once, under the sem)."""
    result = _btrfs_writes(policy)
    records = list(result.trace.records())
    held = _under_sem(records)
    counters = result.results["counters"]
    faults = [r for r in records if r["event"] == "fault_done"]
    mkwrites = [r for r in records if r["event"] == "btrfs_page_mkwrite"]
    assert len(faults) == 40 and all(r["signal"] is None for r in faults)
    assert len(mkwrites) == per_fault * len(faults) == counters["btrfs_mkwrite"]
    assert all(r["ns"] >= 30 * US for r in mkwrites)  # the reservation is paid every time
    full = [r for r in mkwrites if not r.get("fastpath")]
    assert full == mkwrites and counters.get("btrfs_used_cached_fastpath", 0) == 0
    if per_fault == 2:
        firsts, seconds = mkwrites[0::2], mkwrites[1::2]
        assert all(r["dropped"] and r["result"] == "RETRY" and r["seq"] not in held for r in firsts)
        assert all(not r["dropped"] and r["result"] == "LOCKED" and r["seq"] in held for r in seconds)
        assert all(r["attempts"] == 2 for r in faults)
        assert counters["btrfs_mkwrite_dropped"] == len(faults)
    else:
        assert all(not r["dropped"] and r["seq"] in held for r in mkwrites)
        assert all(r["attempts"] == 1 for r in faults)


# -- behaviour 20 -------------------------------------------------------------------------------


@functools.cache
def _dirty_throttled(policy: str):
    """HANNES-BDP in small: a writer dirties a shared mapping past the dirty limit; its
    process's mapper mprotects every 50 ms; a monitor reads /proc/db/cmdline every 20 ms."""
    config = config_from_dict(
        {
            "name": "bdp-under-mmap-sem",
            "horizon": "1s",
            "writeback": {"interval": "10s", "dirty_limit_pages": 8},
            "files": [{"name": "f", "size": "1MiB", "cached": 1.0}],
            "processes": [
                {
                    "name": "db",
                    "mappings": [{"name": "m", "file": "f", "writable": True}],
                    "threads": [
                        {"name": "writer", "iterations": 64, "program": [{"op": "touch", "mapping": "m", "pattern": "sequential", "write": True}]},
                        {"name": "mapper", "every": "50ms", "program": [{"op": "mprotect", "hold": "10us"}]},
                    ],
                },
                {"name": "monitor", "threads": [{"name": "monitor", "every": "20ms", "program": [{"op": "proc_read", "target": "db"}]}]},
            ],
        }
    )
    return run_policy(config, policy)


def test_behaviour_20_balance_dirty_pages_runs_under_mmap_sem_before_5_5() -> None:
    """4.19: the write fault sleeps in balance_dirty_pages holding mmap_sem, so mprotect and then the /proc reader queue behind it."""
    result = _dirty_throttled("v4.19")
    records = list(result.trace.records())
    held = _under_sem(records)
    pauses = [r for r in records if r["event"] == "balance_dirty_pages"]
    assert pauses and all(r["seq"] in held for r in pauses)
    counters = result.results["counters"]
    assert counters["mmap_sem_held_across_io_ns"] >= counters["balance_dirty_pages_pause_ns"] > 0
    assert counters["fault_retries"] == 0
    assert result.results["latency"]["monitor/proc_read"]["max_ns"] > pauses[0]["pause_ns"] // 2


def test_behaviour_20_bdp_drop_mmap_sem_pauses_without_the_sem_and_returns_retry() -> None:
    """5.7 (89b15332af7c): the write fault drops the sem before balance_dirty_pages and returns RETRY; the /proc reader no longer waits for the pause."""
    fixed, base = _dirty_throttled("v5.7"), _dirty_throttled("v4.19")
    records = list(fixed.trace.records())
    held = _under_sem(records)
    pauses = [r for r in records if r["event"] == "balance_dirty_pages"]
    assert pauses and not any(r["seq"] in held for r in pauses)
    counters = fixed.results["counters"]
    assert counters["balance_dirty_pages_pause_ns"] > 0 and counters["mmap_sem_held_across_io"] == 0
    writer_faults = [r for r in records if r["event"] == "fault_done" and r["actor"] == "db.writer"]
    assert writer_faults and all(r["attempts"] == 2 for r in writer_faults)
    assert counters["fault_retries"] == len(writer_faults)
    for pause in pauses:
        drop = max(r["seq"] for r in records if r["event"] == "maybe_unlock_mmap_for_io" and r["seq"] < pause["seq"])
        assert [r for r in records if drop < r["seq"] < pause["seq"] and r["actor"] == "db.writer" and r["event"].startswith("mmap_lock_acquire")] == []
    assert fixed.results["latency"]["monitor/proc_read"]["max_ns"] < base.results["latency"]["monitor/proc_read"]["max_ns"]
