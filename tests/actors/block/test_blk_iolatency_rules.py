"""Tests for actors/block/blk_iolatency_rules.py: where the 4.19 and 5.4 io.latency rules part.

Each test runs the same sans-IO ``BlkIolatency`` state machine under both
rule sets and checks the one behaviour the version changes.
"""

from __future__ import annotations

import itertools

import pytest

from actors.block.blk_iolatency import DEFAULT_SCALE_COOKIE, UINT_MAX, BlkIolatency
from actors.block.blk_iolatency_rules import (
    IOLATENCY_VERSIONS,
    iolatency_qd,
    iolatency_ssd,
    samples_thresh,
    scale_down_depth,
)
from actors.policy import PRESETS
from emu import NSEC_PER_MSEC

MS = NSEC_PER_MSEC
PROT, NOISY, PEER = "w/prot", "w/noisy", "w/peer"
TARGET = 2 * MS  # window = clamp(32 ms, 100 ms, 1 s) = 100 ms

_keys = itertools.count(1)


def make(version: str, qd: int = 64, *, rotational: bool = False, limits: dict | None = None, queue_depth=None):
    return BlkIolatency(
        nr_requests=qd, rotational=rotational, limits=limits or {PROT: TARGET, NOISY: None}, version=version,
        queue_depth=queue_depth,
    )  # fmt: skip


def io(iolat: BlkIolatency, path: str, *, issue: int, now: int):
    """One bio of *path* submitted at *issue* (it must not wait) and completed at *now*."""
    key = next(_keys)
    for level in iolat.levels(path, now_ns=issue):
        iolat.check_scale_change(level, issue)
        assert not iolat.iolatency_throttle(level, key, issue_as_root=False, fatal_signal_pending=False).wait
    return iolat.done_bio(path, now_ns=now, issue_ns=issue, issue_as_root=False)


def cookie(iolat: BlkIolatency) -> int:
    return iolat.statistics("w").child_scale_cookie


def window(iolat: BlkIolatency, path: str, start: int, latencies: list[int]) -> None:
    """IOs of *path* with these latencies, spread so the last one closes a 100 ms window."""
    for i, lat in enumerate(latencies, start=1):
        now = start + 100 * MS * i // len(latencies)
        io(iolat, path, issue=now - lat, now=now)


def test_presets_pick_4_19_before_v5_1_and_5_4_from_it() -> None:
    """v2.6.36, v4.19 and the V3 variants run io.latency as merged; v5.1 and later the 5.4 text."""
    assert {name: p.iolatency for name, p in PRESETS.items()} == {
        "v2.6.36": "4.19", "v4.19": "4.19", "v3": "4.19", "v3-no-cached-page": "4.19",
        "v5.1": "5.4", "v5.7": "5.4", "v5.10": "5.4", "v6.1": "5.4", "v6.4": "5.4", "v6.12": "5.4",
    }  # fmt: skip


def test_pure_rules_differ_where_the_texts_do() -> None:
    assert (iolatency_qd("4.19", 64, 32), iolatency_qd("4.19", 64, None), iolatency_qd("5.4", 64, 32)) == (32, 64, 64)
    assert (iolatency_ssd("4.19", False), iolatency_ssd("5.4", False), iolatency_ssd("5.4", True)) == (False, True, False)
    assert (samples_thresh("4.19", 19), samples_thresh("5.4", 19), samples_thresh("4.19", 40)) == (0, 1, 2)
    assert (scale_down_depth("4.19", 1), scale_down_depth("5.4", 1), scale_down_depth("4.19", 8)) == (None, 1, 4)


@pytest.mark.parametrize(("version", "missed"), [("4.19", False), ("5.4", True)])
def test_ssd_window_judged_by_mean_in_4_19_and_p90_in_5_4(version: str, missed: bool) -> None:
    """Two of ten IOs at 5 ms, eight at 0.5 ms on an SSD: mean 1.4 ms <= 2 ms, but 20 % >= target."""
    iolat = make(version)
    window(iolat, PROT, 0, [5 * MS, 5 * MS] + [MS // 2] * 8)
    assert (cookie(iolat) < DEFAULT_SCALE_COOKIE) == missed


@pytest.mark.parametrize("version", IOLATENCY_VERSIONS)
def test_rotational_window_judged_by_mean_in_both(version: str) -> None:
    iolat = make(version, rotational=True)
    window(iolat, PROT, 0, [5 * MS, 5 * MS] + [MS // 2] * 8)
    assert cookie(iolat) == DEFAULT_SCALE_COOKIE
    window(iolat, PROT, 100 * MS, [5 * MS] * 5)
    assert cookie(iolat) == DEFAULT_SCALE_COOKIE - 16


@pytest.mark.parametrize(("version", "samples"), [("4.19", 3), ("5.4", 6)])
def test_samples_are_the_last_window_in_4_19_and_accumulate_in_5_4(version: str, samples: int) -> None:
    """Within the 500 ms rate limit 5.4 keeps adding windows to cur_stat; 4.19 counts the latest only."""
    iolat = make(version, rotational=True)
    window(iolat, PROT, 0, [5 * MS] * 4)  # missed: the cookie moves, the rate limit starts
    window(iolat, PROT, 100 * MS, [MS] * 3)
    window(iolat, PROT, 200 * MS, [MS] * 3)
    assert iolat.statistics(PROT).nr_samples == samples


@pytest.mark.parametrize(("version", "moved"), [("4.19", True), ("5.4", False)])
def test_tighter_target_bypasses_the_rate_limit_only_in_4_19(version: str, moved: bool) -> None:
    """A looser group scales the parent down; 200 ms later a tighter one misses too."""
    iolat = make(version, rotational=True, limits={PROT: TARGET, PEER: 5 * MS, NOISY: None})
    window(iolat, PEER, 0, [30 * MS] * 4)
    after_peer = cookie(iolat)
    assert after_peer < DEFAULT_SCALE_COOKIE
    window(iolat, PROT, 100 * MS, [5 * MS] * 4)  # closes at 200 ms: 100 ms after the peer's event
    assert (cookie(iolat) < after_peer) == moved
    assert iolat.statistics("w").scale_grp == (PROT if moved else PEER)


@pytest.mark.parametrize(("version", "qd"), [("4.19", 8), ("5.4", 64)])
def test_4_19_depth_is_blk_queue_depth(version: str, qd: int) -> None:
    """A missed window moves the cookie by qd/4: the driver's queue_depth in 4.19, nr_requests in 5.4."""
    iolat = make(version, rotational=True, queue_depth=8)
    window(iolat, PROT, 0, [5 * MS] * 4)
    assert cookie(iolat) == DEFAULT_SCALE_COOKIE - qd // 4


@pytest.mark.parametrize(("version", "depth"), [("4.19", UINT_MAX), ("5.4", 1)])
def test_queue_of_depth_one_is_never_limited_in_4_19(version: str, depth: int) -> None:
    iolat = make(version, qd=1, rotational=True)
    window(iolat, PROT, 0, [5 * MS] * 4)
    io(iolat, NOISY, issue=150 * MS, now=151 * MS)  # follows the cookie down
    assert iolat.statistics(NOISY).depth == depth


def throttle(iolat: BlkIolatency, key: str) -> bool:
    """The throttle walk of a noisy bio: its own level (which may make it wait), then the unlimited "w"."""
    if iolat.iolatency_throttle(NOISY, key, issue_as_root=False, fatal_signal_pending=False).wait:
        return True
    assert not iolat.iolatency_throttle("w", key, issue_as_root=False, fatal_signal_pending=False).wait
    return False


def noisy_at_depth_one(version: str) -> BlkIolatency:
    iolat = make(version, qd=4, rotational=True)
    for step in range(3):  # depth 4 → 2 → 1 → use_delay never reached: one miss per 500 ms
        window(iolat, PROT, step * 600 * MS, [5 * MS] * 4)
        io(iolat, NOISY, issue=step * 600 * MS + 150 * MS, now=step * 600 * MS + 151 * MS)
    assert iolat.statistics(NOISY).depth == 1
    return iolat


def test_5_4_wake_up_hands_the_slot_to_the_woken_waiter() -> None:
    iolat = noisy_at_depth_one("5.4")
    assert (throttle(iolat, "a"), throttle(iolat, "b")) == (False, True)
    d = iolat.done_bio(NOISY, now_ns=2 * 1000 * MS, issue_ns=1900 * MS, issue_as_root=False)
    assert d.wakes == ((NOISY, "b"),)
    assert iolat.statistics(NOISY).nr_inflight == 1  # b's, taken for it
    assert not iolat.iolatency_throttle("w", "b", issue_as_root=False, fatal_signal_pending=False).wait
    assert throttle(iolat, "newcomer")  # the group is full: the newcomer queues


def test_4_19_woken_waiter_races_a_newcomer_and_requeues_at_the_tail() -> None:
    iolat = noisy_at_depth_one("4.19")
    assert (throttle(iolat, "a"), throttle(iolat, "b")) == (False, True)
    d = iolat.done_bio(NOISY, now_ns=2 * 1000 * MS, issue_ns=1900 * MS, issue_as_root=False)
    assert d.wakes == ((NOISY, "b"),)  # dequeued, but no slot taken for it
    assert iolat.statistics(NOISY).nr_inflight == 0
    assert not throttle(iolat, "newcomer")  # nobody queued: it takes the free slot
    assert not iolat.iolatency_retry(NOISY, "b")  # b runs, finds the group full, sleeps again
    assert iolat.statistics(NOISY).nr_waiters == 1
    assert iolat.iolat_cleanup(NOISY).wakes == ()  # nothing was granted, nothing to give back
    d = iolat.done_bio(NOISY, now_ns=2100 * MS, issue_ns=2050 * MS, issue_as_root=False)  # the newcomer's
    assert d.wakes == ((NOISY, "b"),)
    assert iolat.iolatency_retry(NOISY, "b")
    assert (iolat.statistics(NOISY).nr_inflight, iolat.statistics(NOISY).nr_waiters) == (1, 0)
