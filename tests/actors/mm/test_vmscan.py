"""Tests for actors/mm/vmscan.py: memcg direct reclaim of page cache, in the fault's readahead.

A group whose memory.max is smaller than the file it reads at random: each
readahead charge reclaims clean cached pages. Under 4.19 that happens with
mmap_sem held (read-around is submitted under it); v5.1 drops the sem
before readahead, so its reclaim runs without it.
"""

from __future__ import annotations

import functools

import pytest

from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy


@functools.cache
def _results(policy: str) -> dict:
    config = config_from_dict(
        {
            "name": "vmscan-test",
            "horizon": "300ms",
            "policies": [policy],
            "cgroups": [{"path": "batch", "memory.max": "512KiB"}],
            "files": [{"name": "data", "size": "64MiB"}],
            "processes": [
                {
                    "name": "batch",
                    "cgroup": "batch",
                    "mappings": [{"name": "data", "file": "data"}],
                    "threads": [{"name": "faulter", "program": [{"op": "touch", "mapping": "data", "pattern": "random"}]}],
                }
            ],
        }
    )
    return run_policy(config, policy).results


@pytest.mark.parametrize("policy", ["v4.19", "v5.1"])
def test_readahead_over_memory_max_reclaims_clean_page_cache_without_oom(policy: str) -> None:
    results = _results(policy)
    batch = results["memcg"]["batch"]
    assert results["counters"]["pgsteal"] > 0 and batch["max"] > 0
    assert batch["watermark_pages"] <= batch["max_pages"] == 128
    assert batch["oom"] == 0 and results["counters"].get("pswpout", 0) == 0  # no swap, no anon: file pages only
    assert results["invariants"]["violations"] == []


def test_4_19_reclaims_under_mmap_sem_and_5_1_does_not() -> None:
    old, new = _results("v4.19")["counters"], _results("v5.1")["counters"]
    assert old["memcg_reclaim_under_mmap_sem"] == old["memcg_direct_reclaim"] > 0
    assert new.get("memcg_reclaim_under_mmap_sem", 0) == 0 and new["memcg_direct_reclaim"] > 0
