"""Tests for actors/mm/gup.py: faultin_page, __get_user_pages and __mm_populate.

docs/DESIGN.md B11 (the 5.1-5.6
mlockall/mm_populate livelock and its 5.7 fix, 5c72feee3e45), run through
the full model with ``run_policy``.
"""

from __future__ import annotations

import functools

from actors.lab.config import ExperimentConfig, config_from_dict
from actors.lab.experiment import run_policy
from actors.mm.gup import FAULTIN_NS


def _mlock_dict(horizon: str, **extra: object) -> dict:
    """``reader`` faults page 0 (read-around caches pages 0-31 of 64, PG_readahead on 8);
    at 10 ms ``locker``, whose mapping has ``read_ahead_kb = 0``, mlocks the whole file."""
    return {
        "name": "mlock-zero-readahead",
        "horizon": horizon,
        "device": {"latency": "1ms", "jitter_pct": 0},
        "files": [{"name": "f", "size": "256KiB"}],
        "processes": [
            {
                "name": "reader",
                "mappings": [{"name": "m", "file": "f"}],
                "threads": [{"name": "t", "iterations": 1, "program": [{"op": "touch", "mapping": "m", "pattern": "sequential"}]}],
            },
            {
                "name": "locker",
                "mappings": [{"name": "m", "file": "f", "read_ahead_kb": 0}],
                "threads": [{"name": "mlock", "iterations": 1, "start": "10ms", "program": [{"op": "populate", "mapping": "m"}]}],
            },
        ],
        **extra,
    }


@functools.cache
def _mlock_config(horizon: str) -> ExperimentConfig:
    return config_from_dict(_mlock_dict(horizon))


def _run(policy: str, horizon: str):
    return run_policy(_mlock_config(horizon), policy, keep_trace=False).results


def test_behaviour_11_mm_populate_livelocks_without_zero_readahead_fix() -> None:
    """5.1: with ra_pages == 0 and PG_readahead set, every GUP fault drops the sem without progress, so populate never completes and its faults grow with the horizon."""
    short, long = _run("v5.1", "12ms"), _run("v5.1", "14ms")
    for results in (short, long):
        assert results["end"] == "horizon"
        assert "mlock/populate" not in results["latency"]  # the populate op never returned
    # Each round costs FAULTIN_NS of virtual time, so 2 ms more horizon buys about 2 ms / FAULTIN_NS more faults.
    extra = long["counters"]["gup_faults"] - short["counters"]["gup_faults"]
    assert extra >= (2_000_000 // FAULTIN_NS) * 9 // 10


def test_behaviour_11_zero_readahead_fix_lets_mm_populate_complete() -> None:
    """5.7 (5c72feee3e45): no sem drop for async readahead when ra_pages == 0, so populate finishes (the uncached half one read each)."""
    results = _run("v5.7", "100ms")
    assert results["end"] == "finished"
    assert results["latency"]["mlock/populate"]["count"] == 1
    assert results["counters"]["gup_faults"] <= 2 * 64  # at most a RETRY and a mapping round per page


def test_behaviour_11_fix_alone_is_what_stops_the_livelock() -> None:
    """v5.1 plus only zero_readahead_fix completes too: the livelock is the zero-size-readahead drop, not another 5.7 change."""
    config = config_from_dict(
        _mlock_dict("100ms", policy=[{"name": "v5.1-zero-ra-fix", "base": "v5.1", "zero_readahead_fix": True}])
    )
    results = run_policy(config, "v5.1-zero-ra-fix", keep_trace=False).results
    assert results["end"] == "finished"
    assert results["latency"]["mlock/populate"]["count"] == 1


def _reader_dict() -> dict:
    """``faulter`` touches two pages of ``f``; ``reader``, another process, reads 4 absent pages of it through /proc/<faulter>/mem."""
    return {
        "name": "gup-accounting",
        "horizon": "200ms",
        "device": {"latency": "1ms", "jitter_pct": 0},
        "files": [{"name": "f", "size": "1MiB"}],
        "processes": [
            {
                "name": "target",
                "mappings": [{"name": "m", "file": "f", "read_ahead_kb": 0}],
                "threads": [{"name": "faulter", "iterations": 2, "program": [{"op": "touch", "mapping": "m", "pattern": "sequential"}]}],
            },
            {
                "name": "other",
                "threads": [
                    {
                        "name": "reader", "iterations": 1, "start": "50ms",
                        "program": [{"op": "proc_read", "target": "target", "file": "mem", "target_mapping": "m", "pages": 4, "pattern": "sequential"}],
                    }
                ],
            },
        ],
    }  # fmt: skip


def test_gup_faults_count_to_the_reader_from_5_9_and_to_nobody_before() -> None:
    """4.19's access_remote_vm passes no task to faultin_page, so the reader's faults in the target's mm count nowhere; from 5.9 mm_account_fault counts them to the reader."""
    config = config_from_dict(_reader_dict())
    old = run_policy(config, "v4.19", keep_trace=False).results
    new = run_policy(config, "v5.10", keep_trace=False).results
    for results in (old, new):
        assert results["faults"]["faulter"] == {"min_flt": 0, "maj_flt": 2}  # two page reads (no readahead)
        assert results["counters"]["proc_mem_faults"] == 2  # pages 2 and 3: the faulter mapped 0 and 1
    assert old["faults"]["reader"] == {"min_flt": 0, "maj_flt": 0}
    assert new["faults"]["reader"] == {"min_flt": 0, "maj_flt": 2}  # each waits for the disk
