"""Sans-IO tests for actors/block/blk_iolatency.py: the io.latency policy without an engine."""

from __future__ import annotations

import itertools

import pytest

from actors.block.blk_iolatency import (
    DEFAULT_SCALE_COOKIE,
    UINT_MAX,
    BlkIolatency,
    Decisions,
    scale_amount,
)
from actors.block.blk_iolatency_stat import iolatency_window
from emu import NSEC_PER_MSEC, NSEC_PER_SEC, NSEC_PER_USEC

MS = NSEC_PER_MSEC
PROT, NOISY = "w/prot", "w/noisy"
TARGET = 2 * MS  # window = clamp(32 ms, 100 ms, 1 s) = 100 ms


def make(qd: int = 64, *, rotational: bool = False, noisy: int | None = None) -> BlkIolatency:
    return BlkIolatency(nr_requests=qd, rotational=rotational, limits={PROT: TARGET, NOISY: noisy})


_keys = itertools.count(1)


def submit(iolat: BlkIolatency, path: str, now: int, *, issue_as_root: bool = False) -> tuple[list[bool], Decisions]:
    """Run the throttle walk for one bio; return per-level 'must wait' and the check decisions."""
    waits, wakes, events = [], [], []
    key = next(_keys)
    for level in iolat.levels(path, now_ns=now):
        d = iolat.check_scale_change(level, now)
        wakes += d.wakes
        events += d.events
        waits.append(
            iolat.iolatency_throttle(level, key, issue_as_root=issue_as_root, fatal_signal_pending=False).wait
        )
    return waits, Decisions(wakes=tuple(wakes), events=tuple(events))


def io(iolat: BlkIolatency, path: str, *, issue: int, now: int, issue_as_root: bool = False) -> Decisions:
    """One bio submitted at *issue* (not throttled) and completed at *now*."""
    waits, _ = submit(iolat, path, issue, issue_as_root=issue_as_root)
    assert not any(waits)
    return iolat.done_bio(path, now_ns=now, issue_ns=issue, issue_as_root=issue_as_root)


def depth(iolat: BlkIolatency, path: str) -> int:
    return iolat.statistics(path).depth


def miss(iolat: BlkIolatency, now: int) -> Decisions:
    """The protected group completes one slow (10 ms) IO at *now*."""
    return io(iolat, PROT, issue=now - 10 * MS, now=now)


def test_window_size_is_clamped_16x_target() -> None:
    """cur_win_nsec = clamp(target << 4, 100 ms, 1 s); the initial window is 100 ms."""
    assert iolatency_window(2 * MS) == 100 * MS
    assert iolatency_window(10 * MS) == 160 * MS
    assert iolatency_window(75 * NSEC_PER_USEC) == 100 * MS
    assert iolatency_window(500 * MS) == NSEC_PER_SEC
    iolat = make()
    assert iolat.statistics(PROT).win == 100
    assert iolat.statistics(NOISY).cur_win_nsec == 100 * MS


def test_scale_amount_is_qd_over_4_down_qd_over_16_up() -> None:
    """scale_amount(): qd>>2 down, qd>>4 up, never below 1."""
    assert (scale_amount(64, False), scale_amount(64, True)) == (16, 4)
    assert (scale_amount(4, False), scale_amount(4, True)) == (1, 1)


def test_ssd_window_missed_when_10_percent_exceed_target() -> None:
    """SSD rule: the window is OK iff missed < max(total // 10, 1)."""
    iolat = make()
    t = 0
    for i in range(20):  # 20 IOs, 2 of them (10 %) >= target
        t += MS
        io(iolat, PROT, issue=t - (TARGET if i < 2 else MS), now=t)
    d = miss_free_window_end(iolat, t)
    # 2 missed + the closing fast IO: 21 total, 2 < 2 is false → missed.
    assert [e.what for e in d.events] == ["scale_cookie"]
    iolat = make()
    t = 0
    for i in range(20):  # only one miss in 21: 1 < 2 → OK
        t += MS
        io(iolat, PROT, issue=t - (TARGET if i < 1 else MS), now=t)
    assert miss_free_window_end(iolat, t).events == ()


def miss_free_window_end(iolat: BlkIolatency, t: int) -> Decisions:
    """Close the current window with one fast IO after 100 ms."""
    return io(iolat, PROT, issue=t + 100 * MS, now=t + 100 * MS + 1)


def test_rotational_window_missed_when_mean_exceeds_target() -> None:
    """Rotational rule: the window is missed iff its mean latency > target, even with few slow IOs."""
    iolat = make(rotational=True)
    io(iolat, PROT, issue=10 * MS, now=11 * MS)  # 1 ms
    io(iolat, PROT, issue=20 * MS, now=21 * MS)  # 1 ms
    d = io(iolat, PROT, issue=92 * MS, now=102 * MS)  # 10 ms: mean 4 ms > 2 ms
    assert [e.what for e in d.events] == ["scale_cookie"]
    iolat = make(rotational=True)
    io(iolat, PROT, issue=10 * MS, now=11 * MS)
    io(iolat, PROT, issue=20 * MS, now=21 * MS)
    io(iolat, PROT, issue=30 * MS, now=31 * MS)
    d = io(iolat, PROT, issue=99 * MS, now=102 * MS)  # 3 ms: mean 1.5 ms <= 2 ms
    assert d.events == ()
    assert iolat.statistics(PROT).avg_lat > 0  # calc_load EWMA moved


def test_scale_down_halves_sibling_depth_then_use_delay() -> None:
    """Behaviour 12: each missed window steps the cookie; the sibling halves qd→…→1 once per 500 ms, then use_delay."""
    iolat = make(qd=64)
    submit(iolat, NOISY, 0)
    t = 100 * MS
    seen = []
    while True:
        d = miss(iolat, t)
        assert len(d.events) <= 1
        submit(iolat, NOISY, t + 1)
        seen.append(depth(iolat, NOISY))
        # A second miss 100 ms later is within 500 ms: no further step.
        miss(iolat, t + 100 * MS)
        submit(iolat, NOISY, t + 100 * MS + 1)
        assert depth(iolat, NOISY) == seen[-1]
        if iolat.use_delay(NOISY):
            break
        t += 500 * MS
    assert seen == [32, 16, 8, 4, 2, 1, 1]
    assert iolat.statistics(NOISY).use_delay == 1
    # The protected group (lower target than nobody) is never throttled.
    assert depth(iolat, PROT) == UINT_MAX
    stats = iolat.statistics("w")
    assert stats.scale_grp == PROT and stats.child_scale_cookie < DEFAULT_SCALE_COOKIE


def drive_down(iolat: BlkIolatency, steps: int, *, start: int = 100 * MS) -> int:
    """Miss *steps* windows 500 ms apart, the noisy group following each; return the last event's time."""
    io(iolat, NOISY, issue=0, now=1)
    t = start
    for _ in range(steps):
        miss(iolat, t)
        io(iolat, NOISY, issue=t + 1, now=t + 2)  # check_scale_change at submission
        t += 500 * MS
    return t - 500 * MS


def test_scale_up_by_qd_over_16_after_good_window() -> None:
    """Behaviour 13: >= 5 good samples from scale_grp, >= 500 ms after the last event, grow depth by qd/16."""
    iolat = make(qd=64)
    t = drive_down(iolat, 3)
    assert depth(iolat, NOISY) == 8
    for i in range(4):  # 4 good samples inside the current window
        io(iolat, PROT, issue=t + (10 + i) * MS, now=t + (11 + i) * MS)
    d = io(iolat, PROT, issue=t + 599 * MS, now=t + 600 * MS)  # window closes: 5 good samples
    assert [(e.what, e.direction) for e in d.events] == [("scale_cookie", 1)]
    submit(iolat, NOISY, t + 601 * MS)
    assert depth(iolat, NOISY) == 8 + 64 // 16


def test_scale_up_needs_five_good_samples() -> None:
    """Fewer than BLKIOLATENCY_MIN_GOOD_SAMPLES good samples do not scale up."""
    iolat = make(qd=64)
    t = drive_down(iolat, 1)
    d = io(iolat, PROT, issue=t + 599 * MS, now=t + 600 * MS)
    assert d.events == ()


def test_cookie_back_at_default_unlimits_depth_and_wakes_all() -> None:
    """When the cookie is back at 1,000,000 the sibling's depth is unlimited and every waiter is woken."""
    iolat = make(qd=64)
    t = drive_down(iolat, 1)  # cookie 999984, noisy depth 32
    assert depth(iolat, NOISY) == 32
    for key in range(32):
        assert not iolat.iolatency_throttle(NOISY, key, issue_as_root=False, fatal_signal_pending=False).wait
    for key in ("x", "y"):
        assert iolat.iolatency_throttle(NOISY, key, issue_as_root=False, fatal_signal_pending=False).wait
    depths, decisions = [], []
    for _ in range(4):  # +4 per good window: 999984 → 1000000
        t += 600 * MS
        for i in range(5):
            io(iolat, PROT, issue=t + i * MS, now=t + i * MS + 100)
        io(iolat, PROT, issue=t + 599 * MS, now=t + 600 * MS)
        decisions.append(iolat.check_scale_change(NOISY, t + 600 * MS))
        depths.append(depth(iolat, NOISY))
    assert depths == [36, 40, 44, UINT_MAX]
    assert decisions[0].wakes == ((NOISY, "x"), (NOISY, "y"))  # depth 36 > 34 in flight
    assert iolat.statistics("w").child_scale_cookie == DEFAULT_SCALE_COOKIE
    assert [e.what for e in decisions[3].events] == ["unthrottle"]


def test_wakeups_are_fifo_and_newcomers_do_not_overtake() -> None:
    """rq_qos_wait: a completion grants the head sleeper a slot; a newcomer queues behind sleepers."""
    iolat = make(qd=4)
    t = drive_down(iolat, 2)  # noisy depth 4 → 2 → 1
    assert depth(iolat, NOISY) == 1
    first = iolat.iolatency_throttle(NOISY, "a", issue_as_root=False, fatal_signal_pending=False)
    second = iolat.iolatency_throttle(NOISY, "b", issue_as_root=False, fatal_signal_pending=False)
    third = iolat.iolatency_throttle(NOISY, "c", issue_as_root=False, fatal_signal_pending=False)
    assert (first.wait, second.wait, third.wait) == (False, True, True)
    assert not iolat.iolatency_throttle("w", "a", issue_as_root=False, fatal_signal_pending=False).wait
    d = iolat.done_bio(NOISY, now_ns=t + 10 * MS, issue_ns=t, issue_as_root=False)
    assert d.wakes == ((NOISY, "b"),)
    # Slot handed to "b": a newcomer finds the group full and "c" still queued.
    assert iolat.iolatency_throttle(NOISY, "d", issue_as_root=False, fatal_signal_pending=False).wait
    assert iolat.statistics(NOISY).nr_waiters == 2


def test_sibling_with_lower_or_equal_target_is_exempt() -> None:
    """A sibling whose target <= the victim's target is not scaled down; higher targets are."""
    iolat = BlkIolatency(
        nr_requests=64, rotational=False, limits={PROT: TARGET, "w/equal": TARGET, "w/loose": 50 * MS}
    )
    for path in ("w/equal", "w/loose"):
        for i in range(20):  # enough samples that the 5 % rule does not apply
            io(iolat, path, issue=i * MS, now=i * MS + 100)
    # Both need nr_samples: their windows only count once the cookie moved.
    miss(iolat, 100 * MS)
    for path in ("w/equal", "w/loose"):
        io(iolat, path, issue=850 * MS, now=850 * MS + 100)  # window closes, samples summed
    miss(iolat, 700 * MS)
    submit(iolat, "w/equal", 900 * MS)
    submit(iolat, "w/loose", 900 * MS)
    assert depth(iolat, "w/equal") == UINT_MAX
    assert depth(iolat, "w/loose") < UINT_MAX


def test_timer_releases_scale_grp_after_5s_idle() -> None:
    """The 1 s timer releases scale_grp 5 s after the last scale event, then steps the cookie up each tick."""
    iolat = make(qd=64)
    t = drive_down(iolat, 2)  # last scale event at t
    cookie = iolat.statistics("w").child_scale_cookie
    for s in range(1, 5):
        assert iolat.timer_fn(t + s * NSEC_PER_SEC) == []
    events = iolat.timer_fn(t + 5 * NSEC_PER_SEC)
    assert [(e.what, e.scale_grp) for e in events] == [("scale_grp", PROT)]
    assert iolat.statistics("w").scale_grp is None
    assert iolat.statistics("w").child_scale_cookie == cookie
    events = iolat.timer_fn(t + 6 * NSEC_PER_SEC)
    assert [(e.what, e.new - e.old) for e in events] == [("scale_cookie", 4)]
    before = depth(iolat, NOISY)
    submit(iolat, NOISY, t + 6 * NSEC_PER_SEC + 1)
    assert depth(iolat, NOISY) == before + 4


def test_use_delay_makes_cgroup_congested() -> None:
    """Behaviour 15: use_delay marks the group (and its descendants) congested until scaled back up."""
    iolat = make(qd=4)
    drive_down(iolat, 3)  # 4 → 2 → 1 → use_delay
    assert iolat.use_delay(NOISY) == 1
    assert iolat.congested(NOISY)
    assert iolat.congested(NOISY + "/child")
    assert not iolat.congested(PROT)
    t = 2 * NSEC_PER_SEC
    for i in range(5):
        io(iolat, PROT, issue=t + i * MS, now=t + i * MS + 100)
    io(iolat, PROT, issue=t + 600 * MS, now=t + 600 * MS + 100)
    submit(iolat, NOISY, t + 700 * MS)
    assert iolat.use_delay(NOISY) == 0
    assert depth(iolat, NOISY) == 1
    assert not iolat.congested(NOISY)


def test_issue_as_root_meta_bio_never_waits_but_charges_delay() -> None:
    """REQ_META bios of a throttled group take a slot at once and charge target - latency as delay."""
    iolat = make(qd=4, noisy=50 * MS)  # noisy window: 800 ms
    miss(iolat, 100 * MS)  # cookie moves; noisy has no samples yet: skipped (5 % rule)
    for i in range(10):
        io(iolat, NOISY, issue=(110 + i) * MS, now=(111 + i) * MS)
    io(iolat, NOISY, issue=899 * MS, now=900 * MS)  # noisy window closes: nr_samples = 11
    t = drive_down(iolat, 3, start=1000 * MS)
    assert depth(iolat, NOISY) == 1
    assert submit(iolat, NOISY, t)[0][0] is False  # takes the only slot
    assert submit(iolat, NOISY, t)[0][0] is True  # a normal bio waits
    waits, _ = submit(iolat, NOISY, t, issue_as_root=True)
    assert waits == [False, False]
    assert iolat.statistics(NOISY).nr_inflight == 2
    iolat.done_bio(NOISY, now_ns=t + 5 * MS, issue_ns=t, issue_as_root=True)
    assert iolat.statistics(NOISY).delay_nsec == 45 * MS
    # Not counted in the group's latency statistics.
    assert iolat.statistics(NOISY).total == 0


def test_root_cgroup_cannot_have_a_target() -> None:
    """io.latency is CFTYPE_NOT_ON_ROOT."""
    with pytest.raises(ValueError, match="root"):
        BlkIolatency(nr_requests=4, rotational=False, limits={"": MS})


def test_disabled_queue_has_no_levels() -> None:
    """Without any target on the queue, bios are not throttled or tracked."""
    iolat = BlkIolatency(nr_requests=4, rotational=False, limits={"a": None})
    assert iolat.levels("a/b", now_ns=0) == []
    assert iolat.done_bio("a/b", now_ns=1, issue_ns=0, issue_as_root=False) == Decisions()
