"""Where io.latency differs by kernel version: the 4.19 rules and the 5.4 rules.

``block/blk-iolatency.c`` as merged in v4.19 was reworked in v4.20 (the SSD
percentile rule, verdicts accumulated across windows, ``q->nr_requests`` as
the depth) and v5.0 (``rq_qos_wait()`` with its slot hand-off); v5.1 to v5.7
carry the v5.4 text this module calls ``"5.4"``. ``actors.policy`` picks the
set per kernel variant (``Policy.iolatency``); ``actors.block.blk_iolatency``
asks these functions wherever the two texts part:

=====================  ==========================  ===========================
what                   4.19                        5.4
=====================  ==========================  ===========================
depth ``qd``           ``blk_queue_depth(q)``      ``q->nr_requests``
window verdict         mean, every device          SSD: p90; rotational: mean
verdict over           the window just closed      ``cur_stat``: every window
                                                   since the last scale event
500 ms rate limit      bypassed when the caller's  always; the caller must be
                       target is below             as important as
                       ``scale_lat``               ``scale_lat`` to scale down
5 % sample skip        ``nr_samples * 5 / 100``    ``max(1, ...)``
scale down at qd 1     no change (``old > 1``)     ``max_depth = 1``
wake-up                the woken waiter races for  ``rq_qos_wake_function``
                       a slot when it runs         takes the slot for it
=====================  ==========================  ===========================

The first six rows are pure functions here. The last is state-machine
behaviour (``BlkIolatency.handoff`` and ``iolatency_retry``); this module
only names it (``rq_wait_handoff``).

Emulation notes:
    * ``blk_queue_depth()`` is ``q->queue_depth`` when the driver set it and
      ``q->nr_requests`` otherwise; the caller decides which (the SCSI
      midlayer sets it, NVMe does not: ``actors.block.blkdev``).
    * The 4.19 text is the one the 4.19 stable tree carries; v4.19.y's later
      fixes that did not touch these rules (the ``enabled`` freeze work,
      ``BLK_STS_AGAIN``) are not modelled in either set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from actors.block.blk_iolatency_stat import LatencyStat, latency_stat_samples, latency_stat_sum, latency_sum_ok
from emu import NSEC_PER_MSEC

if TYPE_CHECKING:
    from actors.block.blk_iolatency import ChildLatencyInfo, IolatencyGrp

IolatencyVersion = Literal["4.19", "5.4"]
IOLATENCY_VERSIONS: tuple[IolatencyVersion, ...] = ("4.19", "5.4")

BLKIOLATENCY_MIN_ADJUST_TIME = 500 * NSEC_PER_MSEC
BLKIOLATENCY_MIN_GOOD_SAMPLES = 5


def iolatency_qd(version: IolatencyVersion, nr_requests: int, queue_depth: int | None) -> int:
    """The ``qd`` of ``scale_change()``/``scale_cookie_change()``/``iolatency_pd_init()``.

    4.19: ``blk_queue_depth(q)`` (include/linux/blkdev.h): ``q->queue_depth``
    if the driver set one (*queue_depth*), else ``q->nr_requests``. 5.4:
    ``q->nr_requests``.
    """
    if version == "4.19" and queue_depth:
        return queue_depth
    return nr_requests


def iolatency_ssd(version: IolatencyVersion, rotational: bool) -> bool:
    """``iolat->ssd``: 5.4 ``iolatency_pd_init()`` sets it for a non-rotational queue; 4.19 has no such field."""
    return version != "4.19" and not rotational


def samples_thresh(version: IolatencyVersion, nr_samples: int) -> int:
    """``check_scale_change()``: a peer with at most this many samples is not scaled down.

    4.19: ``nr_samples * 5 / 100``, which is 0 below 20 samples, when only a
    peer with no samples at all is skipped; 5.4: at least 1.
    """
    thresh = nr_samples * 5 // 100
    return thresh if version == "4.19" else max(1, thresh)


def scale_down_depth(version: IolatencyVersion, old: int) -> int | None:
    """The down half of ``scale_change()``: the new ``max_depth`` from ``old = min(max_depth, qd)``.

    4.19 changes nothing at ``old == 1`` (``else if (old > 1)``), so a queue
    of depth 1 is never limited; 5.4 sets ``max(old / 2, 1)``. ``None``: no
    change.
    """
    if version == "4.19" and old <= 1:
        return None
    return max(old >> 1, 1)


def rq_wait_handoff(version: IolatencyVersion) -> bool:
    """Whether a wake-up takes the slot for the woken waiter.

    5.0+ ``rq_qos_wait()`` (block/blk-rq-qos.c) sleeps with
    ``rq_qos_wake_function``, which calls ``acquire_inflight_cb`` for the
    waiter and wakes it only with a slot. 4.19 ``__blkcg_iolatency_throttle()``
    sleeps in its own loop (``prepare_to_wait_exclusive`` + ``io_schedule``)
    with the default wake function: ``wake_up()`` dequeues the head waiter,
    which takes a slot only when it runs (``iolatency_may_queue()``), and
    requeues at the tail if one was taken meanwhile.
    """
    return version != "4.19"


def _rate_limited(lat_info: ChildLatencyInfo, now: int) -> bool:
    last = lat_info.last_scale_event
    return last is not None and (last >= now or now - last < BLKIOLATENCY_MIN_ADJUST_TIME)


def check_latencies_v4_19(grp: IolatencyGrp, lat_info: ChildLatencyInfo, stat: LatencyStat, now: int) -> bool | None:
    """The verdict half of ``iolatency_check_latencies()``, v4.19: one window, mean rule, rate-limit bypass.

    Called once the window's *stat* is summed, ``lat_avg`` updated and the
    "all is well at the default cookie" case returned. The samples counted
    are this window's. Within 500 ms of the parent's last scale event only a
    group with a tighter target than ``scale_lat`` may act. A good window of
    at least 5 samples scales up if this group owns the scale-down; a missed
    one scales down and, if the group is the first or the tightest to miss,
    takes ``scale_grp``. Returns ``True`` up, ``False`` down, ``None`` nothing.
    """
    lat_info.nr_samples += stat.nr_samples - grp.nr_samples
    grp.nr_samples = stat.nr_samples
    if _rate_limited(lat_info, now) and lat_info.scale_lat <= grp.min_lat_nsec:
        return None
    if stat.mean <= grp.min_lat_nsec:
        if stat.nr_samples >= BLKIOLATENCY_MIN_GOOD_SAMPLES and lat_info.scale_grp == grp.path:
            lat_info.last_scale_event = now
            return True
        return None
    lat_info.last_scale_event = now
    if lat_info.scale_grp is None or lat_info.scale_lat > grp.min_lat_nsec:
        lat_info.scale_lat = grp.min_lat_nsec
        lat_info.scale_grp = grp.path
    return False


def check_latencies_v5_4(grp: IolatencyGrp, lat_info: ChildLatencyInfo, stat: LatencyStat, now: int) -> bool | None:
    """The verdict half of ``iolatency_check_latencies()``, v5.4: judged on ``cur_stat`` and the window.

    The window's *stat* is added to ``cur_stat``, which keeps accumulating
    until a scale attempt (or a missed verdict) resets it; the samples
    counted are ``cur_stat``'s. Within 500 ms of the parent's last scale
    event nobody acts. Both good and at least 5 samples: scale up if this
    group owns the scale-down. Otherwise, if the group is at least as
    important as ``scale_lat`` (or none is set), scale down and maybe take
    ``scale_grp``. Returns ``True`` up, ``False`` down, ``None`` nothing.
    """
    latency_stat_sum(grp.ssd, grp.cur_stat, stat)
    samples = latency_stat_samples(grp.ssd, grp.cur_stat)
    lat_info.nr_samples += samples - grp.nr_samples
    grp.nr_samples = samples
    if _rate_limited(lat_info, now):
        return None
    verdict: bool | None = None
    if latency_sum_ok(grp.ssd, grp.cur_stat, grp.min_lat_nsec) and latency_sum_ok(grp.ssd, stat, grp.min_lat_nsec):
        if samples < BLKIOLATENCY_MIN_GOOD_SAMPLES:
            return None
        if lat_info.scale_grp == grp.path:
            lat_info.last_scale_event = now
            verdict = True
    elif lat_info.scale_lat == 0 or lat_info.scale_lat >= grp.min_lat_nsec:
        lat_info.last_scale_event = now
        if lat_info.scale_grp is None or lat_info.scale_lat > grp.min_lat_nsec:
            lat_info.scale_lat = grp.min_lat_nsec
            lat_info.scale_grp = grp.path
        verdict = False
    grp.cur_stat = LatencyStat()
    return verdict


CHECK_LATENCIES = {"4.19": check_latencies_v4_19, "5.4": check_latencies_v5_4}
