"""Tests for actors/experiment.py: whole runs of small configs, and their determinism.

docs/DESIGN.md B12-B14 end to end (the
io.latency rules are unit-tested in tests/actors/block/; these check that
the full model wires them to faulting tasks).
"""

from __future__ import annotations

import functools
import gc
from typing import Any

import pytest

from actors.lab.config import config_from_dict
from actors.lab.experiment import run_experiment, run_policy

MS = 1_000_000
UINT_MAX = 2**32 - 1


def _iolatency_dict(horizon: str) -> dict[str, Any]:
    """A protected reader whose 4 KiB IOs always miss its 1 ms target (the device takes 1 ms + transfer)
    and two batch processes faulting randomly on a cold file, on a queue of depth 4."""
    return {
        "name": "iolatency-scaling",
        "seed": 1,
        "horizon": horizon,
        "device": {"nr_requests": 4, "queue_depth": 4, "latency": "1ms", "jitter_pct": 0},
        "cgroups": [{"path": "w"}, {"path": "w/prot", "io.latency": "target=1000"}, {"path": "w/batch"}],
        "files": [{"name": "data", "size": "1GiB"}],
        "processes": [
            {
                "name": "service",
                "cgroup": "w/prot",
                "threads": [{"name": "reader", "program": [{"op": "io", "size": "4KiB"}, {"op": "think", "time": "1ms"}]}],
            },
            {
                "name": "batch",
                "count": 2,
                "cgroup": "w/batch",
                "mappings": [{"name": "data", "file": "data"}],
                "threads": [{"name": "faulter", "program": [{"op": "touch", "mapping": "data", "pattern": "random"}]}],
            },
        ],
    }


@functools.cache
def _iolatency_run(policy: str, horizon: str = "2s"):
    return run_policy(config_from_dict(_iolatency_dict(horizon)), policy)


def _scale_events(result, blkcg: str, what: str) -> list[dict[str, Any]]:
    return [r for r in result.trace.records() if r["event"] == "iolatency_scale" and r["blkcg"] == blkcg and r["what"] == what]


def test_behaviour_12_io_latency_scale_down_halves_sibling_depth_to_1_then_use_delay() -> None:
    """The victim's misses step the cookie down at most once per 500 ms; the sibling without a target halves qd → 1, then sets use_delay."""
    result = _iolatency_run("v4.19")
    cookie = _scale_events(result, "w", "scale_cookie")
    assert len(cookie) >= 3 and all(r["direction"] == -1 and r["by"] == "w/prot" for r in cookie)
    steps = [r["ts"] for r in cookie]
    assert all(b - a >= 500 * MS for a, b in zip(steps, steps[1:]))
    depths = [(r["old"], r["new"]) for r in _scale_events(result, "w/batch", "max_depth")]
    assert depths == [(UINT_MAX, 2), (2, 1)]  # unlimited, clamped to qd = 4 (nr_requests; 4.19: the device's queue_depth), halved; halved
    delays = _scale_events(result, "w/batch", "use_delay")
    assert delays and delays[0]["new"] == 1 and delays[0]["max_depth"] == 1
    assert not _scale_events(result, "w/prot", "max_depth")  # the victim itself is never scaled
    summary = result.results["iolatency"]["w/batch"]
    assert summary["depth"] == 1 and summary["use_delay"] >= 1


def test_behaviour_14_io_latency_sleeps_the_submitting_faulter_in_submit_bio() -> None:
    """io.latency throttling blocks the task calling submit_bio: the batch faulter itself sleeps in rq_qos_wait, inside its fault."""
    result = _iolatency_run("v4.19")
    records = list(result.trace.records())
    throttled = [r for r in records if r["event"] == "rq_qos_throttle"]
    assert throttled and all(r["comm"] == r["actor"] and r["blkcg"] == "w/batch" for r in throttled)
    assert {r["actor"] for r in throttled} == {"batch0.faulter", "batch1.faulter"}
    waited = sum(r["throttle_wait_ns"] for r in records if r["event"] == "fault_done")
    assert 0 < waited <= result.results["counters"]["throttle_wait_ns"]  # faults cut by the horizon not counted
    # Each wait ends with a grant after a completion frees a slot: the bio is queued only then.
    done = {r["bio"]: r["ts"] for r in records if r["event"] == "rq_qos_throttle_done"}
    issued = {r["bio"]: r["ts"] for r in records if r["event"] == "block_rq_issue"}
    assert all(issued[bio] >= ts for bio, ts in done.items() if bio in issued)


@pytest.mark.slow
def test_behaviour_13_io_latency_scale_up_after_victim_goes_idle() -> None:
    """When the victim stops doing IO, after 5 s the 1 s timer steps the cookie back up and the sibling's depth grows, until unlimited."""
    config = _iolatency_dict("9s")
    config["processes"][0]["threads"][0]["iterations"] = 300  # the victim stops after ~0.7 s
    config["processes"][1]["threads"][0]["program"].append({"op": "think", "time": "5ms"})  # fewer events, IO keeps flowing
    result = run_policy(config_from_dict(config), "v5.1", keep_trace=True)
    down = [r for r in _scale_events(result, "w", "scale_cookie") if r["direction"] == -1]
    up = [r for r in _scale_events(result, "w", "scale_cookie") if r["direction"] == 1]
    assert down and up
    released = [r for r in result.trace.records() if r["event"] == "iolatency_scale" and r["what"] == "scale_grp"]
    assert released and released[0]["ts"] - down[-1]["ts"] >= 5_000 * MS
    assert all(r["by"] == "timer" for r in up) and up[0]["ts"] >= released[0]["ts"]
    assert result.results["iolatency"]["w/batch"]["use_delay"] == 0
    batch = _scale_events(result, "w/batch", "max_depth") + _scale_events(result, "w/batch", "unthrottle")
    assert any(r["direction"] == 1 for r in batch)


def test_same_config_and_policy_twice_gives_the_same_trace_digest() -> None:
    """STYLE 5.24: a run is a pure function of (config, policy, seed): same digest, same results."""
    config = config_from_dict(_iolatency_dict("300ms"))
    first, second = run_policy(config, "v3", keep_trace=False), run_policy(config, "v3", keep_trace=False)
    assert first.results == second.results


def test_run_policy_leaves_gc_settings_as_it_found_them_and_gc_does_not_move_the_digest() -> None:
    """The run freezes the set-up heap (emu.gcheap) and restores the thresholds; with the collector off the digest is the same."""
    config = config_from_dict(_iolatency_dict("100ms"))
    before = gc.get_threshold()
    tuned = run_policy(config, "v4.19", keep_trace=False)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.disable()
    try:
        untouched = run_policy(config, "v4.19", keep_trace=False)
    finally:
        gc.enable()
    assert tuned.results["trace_digest"] == untouched.results["trace_digest"]


def test_run_experiment_runs_every_policy_on_the_same_seed() -> None:
    """run_experiment returns one run per policy, in order, each as run_policy would produce it."""
    config = config_from_dict({**_iolatency_dict("200ms"), "policies": ["v4.19", "v5.1"]})
    experiment = run_experiment(config)
    assert [run.policy for run in experiment.runs] == ["v4.19", "v5.1"]
    assert experiment.runs[1].results["trace_digest"] == run_policy(config, "v5.1").results["trace_digest"]
    assert experiment.to_json()["runs"][0]["policy"] == "v4.19"
