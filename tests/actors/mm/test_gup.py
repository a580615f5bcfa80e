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
