"""io.latency statistics: per-window latency samples, the window verdict, the ``io.stat`` snapshot.

Mirrors the statistics half of ``block/blk-iolatency.c`` at v5.4: ``struct
latency_stat`` and ``latency_stat_init/sum/record_time()``,
``latency_sum_ok()``, ``latency_stat_samples()``, the window sizing of
``iolatency_set_min_lat_nsec()`` and the ``lat_avg`` EWMA of
``iolat_update_total_lat_avg()``; plus ``blk_rq_stat_sum()``
(``block/blk-stat.c``) and ``calc_load()`` (``include/linux/sched/loadavg.h``).
The throttling and scaling that act on these verdicts live in
``actors/block/blk_iolatency.py``.

Theory of operation
-------------------

A group with a target records every completed bio's latency into its window
stat. When the window elapses the stat is summed into a fresh one and judged::

    SSD (percentile_stats):  total += 1; missed += (lat >= target)
                             ok iff missed < max(total // 10, 1)
    rotational (blk_rq_stat): batch += lat; nr_samples += 1
                             ok iff mean <= target

These functions are pure bookkeeping: they mutate the ``LatencyStat`` they
are given and return numbers; who owns which stat, and when a window closes,
is the caller's business.

Emulation notes:
    * One CPU: the per-cpu ``stats`` are one ``LatencyStat``, so summing a
      window is one ``latency_stat_sum``.
    * ``blk_rq_stat``'s ``min``/``max`` are not kept (io.latency never reads
      them).
    * Rotational sums keep the kernel's ``blk_rq_stat_sum`` quirk: it adds
      ``src->batch``, which a summed stat does not have, so a ``cur_stat``
      built from summed windows keeps ``mean == 0`` and always judges OK.
    * ``IolatencyStatistics`` is a snapshot of the fields, not the text
      ``iolatency_pd_stat`` prints.
"""

from __future__ import annotations

import attrs

from emu import NSEC_PER_MSEC, NSEC_PER_SEC

__all__ = [
    "BLKIOLATENCY_EXP_BUCKET_SIZE",
    "BLKIOLATENCY_MAX_WIN_SIZE",
    "BLKIOLATENCY_MIN_WIN_SIZE",
    "BLKIOLATENCY_NR_EXP_FACTORS",
    "FIXED_1",
    "IOLATENCY_EXP_FACTORS",
    "IolatencyStatistics",
    "LatencyStat",
    "calc_load",
    "iolat_update_total_lat_avg",
    "iolatency_window",
    "latency_stat_record_time",
    "latency_stat_samples",
    "latency_stat_sum",
    "latency_sum_ok",
]

BLKIOLATENCY_MIN_WIN_SIZE = 100 * NSEC_PER_MSEC
BLKIOLATENCY_MAX_WIN_SIZE = NSEC_PER_SEC
BLKIOLATENCY_NR_EXP_FACTORS = 5
BLKIOLATENCY_EXP_BUCKET_SIZE = BLKIOLATENCY_MAX_WIN_SIZE // (BLKIOLATENCY_NR_EXP_FACTORS - 1)
#: ``calc_load`` decay factors, by window-size bucket (stats only).
IOLATENCY_EXP_FACTORS = (2045, 2039, 2031, 2023, 2014)
FIXED_1 = 1 << 11


@attrs.define
class LatencyStat:
    """``struct latency_stat``: SSD ``percentile_stats`` or rotational ``blk_rq_stat``."""

    total: int = 0
    missed: int = 0
    nr_samples: int = 0
    batch: int = 0
    mean: int = 0


@attrs.frozen(kw_only=True)
class IolatencyStatistics:
    """One group, as ``io.stat`` prints it (``iolatency_pd_stat``) and more.

    ``avg_lat`` is in microseconds and ``win`` in milliseconds, as printed;
    ``lat_avg`` and ``cur_win_nsec`` are the raw nanosecond fields.
    """

    blkcg: str
    min_lat_nsec: int
    depth: int
    avg_lat: int
    win: int
    lat_avg: int
    cur_win_nsec: int
    missed: int
    total: int
    nr_samples: int
    nr_inflight: int
    nr_waiters: int
    use_delay: int
    delay_nsec: int
    scale_cookie: int
    child_scale_cookie: int
    scale_grp: str | None


def iolatency_window(min_lat_nsec: int) -> int:
    """``cur_win_nsec`` for a target: ``clamp(target << 4, 100 ms, 1 s)`` (iolatency_set_min_lat_nsec)."""
    return min(max(min_lat_nsec << 4, BLKIOLATENCY_MIN_WIN_SIZE), BLKIOLATENCY_MAX_WIN_SIZE)


def calc_load(load: int, exp: int, active: int) -> int:
    """Mirror of ``calc_load()`` (include/linux/sched/loadavg.h): fixed-point EWMA."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def iolat_update_total_lat_avg(lat_avg: int, cur_win_nsec: int, mean: int) -> int:
    """Mirror of ``iolat_update_total_lat_avg()``: the new ``lat_avg`` after a rotational window."""
    exp_idx = min(BLKIOLATENCY_NR_EXP_FACTORS - 1, cur_win_nsec // BLKIOLATENCY_EXP_BUCKET_SIZE)
    return calc_load(lat_avg, IOLATENCY_EXP_FACTORS[exp_idx], mean)


def latency_stat_record_time(ssd: bool, stat: LatencyStat, req_time: int, min_lat_nsec: int) -> None:
    """Mirror of ``latency_stat_record_time()``: count one bio (``blk_rq_stat_add`` for rotational)."""
    if ssd:
        if req_time >= min_lat_nsec:
            stat.missed += 1
        stat.total += 1
    else:
        stat.batch += req_time
        stat.nr_samples += 1


def latency_stat_sum(ssd: bool, dst: LatencyStat, src: LatencyStat) -> None:
    """``latency_stat_sum()`` (``blk_rq_stat_sum()`` for rotational, quirk included)."""
    if ssd:
        dst.total += src.total
        dst.missed += src.missed
    elif src.nr_samples:
        dst.mean = (src.batch + dst.mean * dst.nr_samples) // (dst.nr_samples + src.nr_samples)
        dst.nr_samples += src.nr_samples


def latency_sum_ok(ssd: bool, stat: LatencyStat, min_lat_nsec: int) -> bool:
    """Mirror of ``latency_sum_ok()``: SSD p90 rule, rotational mean rule."""
    if ssd:
        return stat.missed < max(stat.total // 10, 1)
    return stat.mean <= min_lat_nsec


def latency_stat_samples(ssd: bool, stat: LatencyStat) -> int:
    """Mirror of ``latency_stat_samples()``: SSD ``total``, rotational ``nr_samples``."""
    return stat.total if ssd else stat.nr_samples
