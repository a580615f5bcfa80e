"""cgroup v2 ``io.latency``: per-group latency targets enforced by throttling peers.

Mirrors ``block/blk-iolatency.c`` at v5.4, with the waiting done by
``blk-rq-qos.c:rq_qos_wait()``, or at v4.19, whose own wait loop has no slot
hand-off: the *version* argument picks one; where the two texts part
(verdict rule, depth, rate limit, wake-up) is
``actors/block/blk_iolatency_rules.py``. Sans-IO: no engine, no awaiting.
Methods mutate state and *return* what must happen next: which waiters to
wake, in order, and which scale changes to trace.

This module is the throttle and scaling state machine (``check_scale_change``,
``scale_change``, ``scale_cookie_change``, ``iolatency_throttle``,
``iolatency_check_latencies``, ``blkiolatency_timer_fn``, the ``rq_wait``
hand-off). The latency bookkeeping it judges windows with (``latency_stat``,
the SSD/rotational verdicts, window sizing, ``lat_avg``) is in
``actors/block/blk_iolatency_stat.py``.

Theory of operation
-------------------

Every non-root cgroup that touches the queue has an ``IolatencyGrp`` (the
root has one too, only for its ``child_lat``). A group with a target
(``min_lat_nsec``) times every completed bio (from submission, ``bi_issue``)
and, once per window (``cur_win_nsec = clamp(16 x target, 100 ms, 1 s)``,
elapsed only by completions), judges it: rotational = window mean > target;
SSD = at least 10 % of the window's IOs took >= target (5.4; 4.19 judges
every device by the mean). A missed window moves
the *parent's* ``child_lat.scale_cookie`` down (at most once per 500 ms per
parent); five good samples from the group that caused it (``scale_grp``)
move it back up. Peers see the cookie at their next submission::

    victim done_bio ─▶ check_latencies ─▶ parent.child_lat.scale_cookie -= qd/4
                                              │
    peer submit_bio ─▶ check_scale_change ◀───┘  (own cookie copy differs)
                         down: max_depth qd → qd/2 → … → 1 → use_delay++
                         up:   use_delay-- first, else max_depth += qd/16
                         back at DEFAULT_SCALE_COOKIE: unlimited, wake all
                       ─▶ iolatency_throttle: inflight < max_depth, else wait

A peer is exempt from scaling down when its own target is at or below the
victim's (``min_lat_nsec <= scale_lat``), or when it did at most 5 % of the
parent's samples; peers without a target are always throttled. A 1 s timer
(re-armed by submissions) steps the cookie up when nobody owns the scale-down
and releases ``scale_grp`` 5 s after the last scale event.

Waiters queue FIFO per group (``rq_wait``). In 5.4 a completion grants the
head waiter a slot *on its behalf* (``rq_qos_wake_function``), so a newcomer
never overtakes a sleeper: it only tries for a slot when nobody is queued.
In 4.19 the completion only dequeues the head waiter; when it runs it tries
for a slot (``iolatency_retry``) and, if a newcomer took it meanwhile (the
queue looked empty), queues again at the tail.

Emulation notes:
    * One CPU: the per-cpu ``stats`` are one ``LatencyStat``.
    * ``bio_issue`` time truncation (``__bio_issue_time``) is not modelled.
    * Time starts at 0 rather than long after boot, so "no scale event yet"
      is ``last_scale_event = None`` instead of 0 (otherwise nothing could
      scale in the first 500 ms).
    * 5.4 rotational stats keep the kernel's ``blk_rq_stat_sum`` quirk: it adds
      ``src->batch``, which a summed stat does not have, so ``cur_stat.mean``
      stays 0 and only the latest window's mean decides (see
      ``blk_iolatency_stat``).
    * Limits are fixed at construction (no runtime ``iolatency_set_limit``,
      no ``enable_work`` freeze); BLK_STS_AGAIN is not modelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping

import attrs

from actors.block.blk_cgroup import (
    ROOT,
    BlkcgGq,
    BlkcgHierarchy,
    ancestors,
    blkcg_add_delay,
    blkcg_clear_delay,
    blkcg_throttle_delay_nsec,
    blkcg_unuse_delay,
    blkcg_use_delay,
    blkg_lookup_create,
)
from actors.block.blk_iolatency_rules import (
    CHECK_LATENCIES,
    IolatencyVersion,
    iolatency_qd,
    iolatency_ssd,
    rq_wait_handoff,
    samples_thresh,
    scale_down_depth,
)
from actors.block.blk_iolatency_stat import (
    BLKIOLATENCY_MIN_WIN_SIZE,
    IolatencyStatistics,
    LatencyStat,
    iolat_update_total_lat_avg,
    iolatency_window,
    latency_stat_record_time,
    latency_stat_sum,
    latency_sum_ok,
)
from emu import NSEC_PER_MSEC, NSEC_PER_SEC, NSEC_PER_USEC, KernelBug

UINT_MAX = 0xFFFF_FFFF
DEFAULT_SCALE_COOKIE = 1_000_000
SCALE_DOWN_FACTOR = 2
SCALE_UP_FACTOR = 4
#: ``blkiolatency_timer_fn`` releases ``scale_grp`` this long after the last scale event.
SCALE_GRP_IDLE_NSEC = 5 * NSEC_PER_SEC

#: A waiter: (group path, the key it sleeps under).
Wake = tuple[str, Hashable]


@attrs.define
class RqDepth:
    """``struct rq_depth`` (block/blk-rq-qos.h): ``max_depth`` is the group's limit."""

    max_depth: int = UINT_MAX
    queue_depth: int = 0
    default_depth: int = 0


@attrs.define
class RqWait:
    """``struct rq_wait``: inflight count and the FIFO of sleepers (their keys)."""

    inflight: int = 0
    waiters: deque[Hashable] = attrs.field(factory=deque)


@attrs.define
class ChildLatencyInfo:
    """``struct child_latency_info``: what a parent tells its children."""

    last_scale_event: int | None = None
    scale_lat: int = 0
    nr_samples: int = 0
    scale_grp: str | None = None
    scale_cookie: int = DEFAULT_SCALE_COOKIE


@attrs.define(eq=False)
class IolatencyGrp:
    """``struct iolatency_grp``: one cgroup's io.latency state on one queue."""

    blkg: BlkcgGq
    ssd: bool
    window_start: int
    scale_cookie: int
    min_lat_nsec: int = 0
    cur_win_nsec: int = BLKIOLATENCY_MIN_WIN_SIZE
    lat_avg: int = 0
    nr_samples: int = 0
    stats: LatencyStat = attrs.field(factory=LatencyStat)
    cur_stat: LatencyStat = attrs.field(factory=LatencyStat)
    rq_depth: RqDepth = attrs.field(factory=RqDepth)
    rq_wait: RqWait = attrs.field(factory=RqWait)
    child_lat: ChildLatencyInfo = attrs.field(factory=ChildLatencyInfo)

    @property
    def path(self) -> str:
        return self.blkg.path


@attrs.frozen(kw_only=True)
class ScaleEvent:
    """One scaling change, for the ``iolatency_scale`` trace event.

    Attributes:
        what: ``"scale_cookie"`` (a parent's ``child_lat`` cookie moved),
            ``"max_depth"``, ``"use_delay"``, ``"unthrottle"`` (cookie back at
            default) or ``"scale_grp"`` (the timer released it).
        blkcg: the group that changed (the parent for cookie/scale_grp events).
        by: what caused it: the judged group's path, or ``"timer"``.
        direction: +1 up, -1 down, 0 neither.
        old: previous value of the changed quantity.
        new: new value (``UINT_MAX`` = unlimited depth).
        max_depth: the group's depth afterwards (``None`` for parent events).
        use_delay: the group's ``use_delay`` afterwards (``None`` likewise).
        scale_cookie: the cookie afterwards (the parent's, or the group's copy).
        scale_grp: the parent's ``scale_grp`` afterwards (parent events).
    """

    what: str
    blkcg: str
    by: str
    direction: int
    old: int
    new: int
    max_depth: int | None = None
    use_delay: int | None = None
    scale_cookie: int
    scale_grp: str | None = None


@attrs.frozen(kw_only=True)
class Decisions:
    """What a call decided: waiters to wake (in order) and scale events to trace."""

    wakes: tuple[Wake, ...] = ()
    events: tuple[ScaleEvent, ...] = ()


@attrs.frozen(kw_only=True)
class ThrottleVerdict:
    """Result of ``iolatency_throttle`` for one level.

    Attributes:
        wait: the caller was queued and must sleep until woken (the slot is
            granted before the wake-up).
        schedule_throttle: the level has ``use_delay``: mark the task for
            ``blkcg_maybe_throttle_current`` (``blkcg_schedule_throttle``).
    """

    wait: bool
    schedule_throttle: bool


def scale_amount(qd: int, up: bool) -> int:
    """Mirror of ``scale_amount()``: qd/16 up, qd/4 down, at least 1."""
    return max(qd >> SCALE_UP_FACTOR if up else qd >> SCALE_DOWN_FACTOR, 1)


class BlkIolatency:
    """``struct blk_iolatency``: io.latency on one request queue.

    Args:
        nr_requests: ``q->nr_requests``, the 5.4 ``qd``.
        rotational: ``False`` selects the SSD percentile rule (5.4 only).
        limits: cgroup path → ``min_lat_nsec`` (``None``/0 = no target).
        hierarchy: cgroups shared with other queues (congestion is per cgroup).
        now_ns: creation time (initial ``window_start``).
        version: which kernel's rules (``blk_iolatency_rules``).
        queue_depth: ``q->queue_depth`` if the driver set one (4.19's
            ``blk_queue_depth`` prefers it to ``nr_requests``).

    Raises:
        ValueError: a limit on the root cgroup, or a negative limit.
    """

    def __init__(
        self,
        *,
        nr_requests: int,
        rotational: bool,
        limits: Mapping[str, int | None],
        hierarchy: BlkcgHierarchy | None = None,
        now_ns: int = 0,
        version: IolatencyVersion = "5.4",
        queue_depth: int | None = None,
    ) -> None:
        if nr_requests < 1:
            raise ValueError(f"nr_requests must be >= 1, got {nr_requests}")
        self.version = version
        self.qd = iolatency_qd(version, nr_requests, queue_depth)
        #: 5.4: a wake-up takes the waiter's slot; 4.19: the waiter races for it (``iolatency_retry``).
        self.handoff = rq_wait_handoff(version)
        self.ssd = iolatency_ssd(version, rotational)
        self.hierarchy = BlkcgHierarchy() if hierarchy is None else hierarchy
        self._blkgs: dict[str, BlkcgGq] = {}
        self._grps: dict[str, IolatencyGrp] = {}
        self._lookup_create(ROOT, now_ns)
        for path, lat in limits.items():
            if path == ROOT and lat:
                raise ValueError("io.latency cannot be set on the root cgroup")
            if lat is not None and lat < 0:
                raise ValueError(f"{path!r}: min_lat_nsec must be >= 0, got {lat}")
            grp = self._lookup_create(path, now_ns)
            # iolatency_set_min_lat_nsec()
            grp.min_lat_nsec = lat or 0
            grp.cur_win_nsec = iolatency_window(grp.min_lat_nsec)

    # -- groups -------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """``blk_iolatency_enabled()``: some group on this queue has a target."""
        return any(grp.min_lat_nsec for grp in self._grps.values())

    def _lookup_create(self, path: str, now_ns: int) -> IolatencyGrp:
        """``blkg_lookup_create`` + ``iolatency_pd_init()``: a new group copies its parent's cookie."""
        grp = self._grps.get(path)
        if grp is not None:
            return grp
        blkg = blkg_lookup_create(self.hierarchy, self._blkgs, path)
        parent = None if blkg.parent is None else self._lookup_create(blkg.parent.path, now_ns)
        grp = IolatencyGrp(
            blkg=blkg,
            ssd=self.ssd,
            window_start=now_ns,
            scale_cookie=DEFAULT_SCALE_COOKIE if parent is None else parent.child_lat.scale_cookie,
            rq_depth=RqDepth(max_depth=UINT_MAX, queue_depth=self.qd, default_depth=self.qd),
        )
        self._grps[path] = grp
        return grp

    def _grp(self, path: str) -> IolatencyGrp:
        grp = self._grps.get(path)
        if grp is None:
            raise KeyError(f"no io.latency group {path!r} on this queue")
        return grp

    def _parent(self, grp: IolatencyGrp) -> IolatencyGrp | None:
        parent = grp.blkg.parent
        return None if parent is None else self._grps[parent.path]

    def levels(self, blkcg: str, *, now_ns: int) -> list[str]:
        """The groups ``blkcg_iolatency_throttle`` walks for a bio of *blkcg*: leaf first, root excluded.

        Every non-root group on the path is a level (each has its own depth),
        target or not. Groups are created on first use. Empty when io.latency
        is not enabled on this queue.
        """
        if not self.enabled:
            return []
        self._lookup_create(blkcg, now_ns)
        return list(ancestors(blkcg)[:-1])

    # -- submission side ----------------------------------------------------

    def check_scale_change(self, path: str, now_ns: int) -> Decisions:
        """Mirror of ``check_scale_change()``: follow the parent's cookie by one step.

        Called at each level of the throttle walk, before waiting there.
        """
        del now_ns  # the kernel's version reads no clock either
        grp = self._grp(path)
        parent = self._parent(grp)
        if parent is None:
            return Decisions()
        lat_info = parent.child_lat
        cur_cookie, our_cookie = lat_info.scale_cookie, grp.scale_cookie
        if cur_cookie == our_cookie:
            return Decisions()
        direction = -1 if cur_cookie < our_cookie else 1
        grp.scale_cookie = cur_cookie
        if direction < 0 and grp.min_lat_nsec:
            # A peer as important as the victim (or more) is never throttled.
            if not lat_info.scale_lat or grp.min_lat_nsec <= lat_info.scale_lat:
                return Decisions()
            # Skip peers that did <= 5 % of the samples in the last summation.
            if grp.nr_samples <= samples_thresh(self.version, lat_info.nr_samples):
                return Decisions()
        depth, delay = grp.rq_depth.max_depth, grp.blkg.use_delay
        if depth == 1 and direction < 0:
            blkcg_use_delay(grp.blkg)
            return Decisions(events=(self._event(grp, "use_delay", direction, delay, grp.blkg.use_delay),))
        if cur_cookie == DEFAULT_SCALE_COOKIE:
            blkcg_clear_delay(grp.blkg)
            grp.rq_depth.max_depth = UINT_MAX
            wakes = self._wake_up_all(grp)
            return Decisions(wakes=wakes, events=(self._event(grp, "unthrottle", direction, depth, UINT_MAX),))
        return self._scale_change(grp, direction > 0)

    def _scale_change(self, grp: IolatencyGrp, up: bool) -> Decisions:
        """Mirror of ``scale_change()``: one depth step (or one ``use_delay`` undo)."""
        qd = self.qd
        scale = scale_amount(qd, up)
        old = min(grp.rq_depth.max_depth, qd)
        depth = grp.rq_depth.max_depth
        if up:
            delay = grp.blkg.use_delay
            if old == 1 and blkcg_unuse_delay(grp.blkg):
                return Decisions(events=(self._event(grp, "use_delay", 1, delay, grp.blkg.use_delay),))
            if old < qd:
                grp.rq_depth.max_depth = min(old + scale, qd)
                wakes = self._wake_up_all(grp)
                return Decisions(wakes=wakes, events=(self._event(grp, "max_depth", 1, depth, grp.rq_depth.max_depth),))
            return Decisions()
        new = scale_down_depth(self.version, old)
        if new is None:
            return Decisions()
        grp.rq_depth.max_depth = new
        return Decisions(events=(self._event(grp, "max_depth", -1, depth, new),))

    def iolat_acquire_inflight(self, path: str) -> bool:
        """Mirror of ``iolat_acquire_inflight()`` / ``rq_wait_inc_below()``: take a slot if under ``max_depth``."""
        grp = self._grp(path)
        if grp.rq_wait.inflight < grp.rq_depth.max_depth:
            grp.rq_wait.inflight += 1
            return True
        return False

    def iolatency_throttle(
        self, path: str, key: Hashable, *, issue_as_root: bool, fatal_signal_pending: bool
    ) -> ThrottleVerdict:
        """Mirror of ``__blkcg_iolatency_throttle()`` + the non-sleeping part of ``rq_qos_wait()``.

        Issue-as-root bios and dying tasks take a slot unconditionally.
        Otherwise a slot is taken only if nobody is queued and the group is
        under its depth (4.19: ``iolatency_may_queue()`` with ``first_block``,
        the same test); else *key* joins the FIFO and the caller must sleep
        until a ``Decisions.wakes`` entry names it. With the hand-off (5.4) its
        slot is then taken; without (4.19) it must call ``iolatency_retry``.
        """
        grp = self._grp(path)
        schedule_throttle = grp.blkg.use_delay != 0
        if issue_as_root or fatal_signal_pending:
            grp.rq_wait.inflight += 1
            return ThrottleVerdict(wait=False, schedule_throttle=schedule_throttle)
        if not grp.rq_wait.waiters and self.iolat_acquire_inflight(path):
            return ThrottleVerdict(wait=False, schedule_throttle=schedule_throttle)
        grp.rq_wait.waiters.append(key)
        return ThrottleVerdict(wait=True, schedule_throttle=schedule_throttle)

    def iolatency_retry(self, path: str, key: Hashable) -> bool:
        """The 4.19 woken waiter runs again: one turn of the ``__blkcg_iolatency_throttle()`` loop (v4.19).

        ``prepare_to_wait_exclusive`` puts *key* back at the tail, then
        ``iolatency_may_queue()`` (no longer ``first_block``) tries for a slot
        whoever is queued ahead: ``True`` took one (``finish_wait``), ``False``
        sleeps again, queued.
        """
        if self.handoff:
            raise KernelBug("iolatency_retry: 5.4 wake-ups hand the slot over")
        waiters = self._grp(path).rq_wait.waiters
        waiters.append(key)
        if self.iolat_acquire_inflight(path):
            waiters.remove(key)
            return True
        return False

    def iolat_cleanup(self, path: str) -> Decisions:
        """Mirror of ``iolat_cleanup_cb()`` (5.4): give back a slot nobody will use, wake the next.

        4.19 granted the woken waiter nothing, so there is nothing to give back.
        """
        if not self.handoff:
            return Decisions()
        grp = self._grp(path)
        grp.rq_wait.inflight -= 1
        return Decisions(wakes=self._wake_up(grp))

    def _wake_up(self, grp: IolatencyGrp) -> tuple[Wake, ...]:
        """``wake_up()``: 5.4 (``rq_qos_wake_function``) grants the head waiter a slot, if one is free; 4.19 dequeues it."""
        waiters = grp.rq_wait.waiters
        if waiters and (not self.handoff or self.iolat_acquire_inflight(grp.path)):
            return ((grp.path, waiters.popleft()),)
        return ()

    def _wake_up_all(self, grp: IolatencyGrp) -> tuple[Wake, ...]:
        """``wake_up_all()``: 5.4 grants slots in FIFO order until one does not fit; 4.19 dequeues everyone."""
        woken: list[Wake] = []
        waiters = grp.rq_wait.waiters
        while waiters and (not self.handoff or self.iolat_acquire_inflight(grp.path)):
            woken.append((grp.path, waiters.popleft()))
        return tuple(woken)

    # -- completion side ----------------------------------------------------

    def done_bio(self, blkcg: str, *, now_ns: int, issue_ns: int, issue_as_root: bool) -> Decisions:
        """Mirror of ``blkcg_iolatency_done_bio()``: per level, release, time, judge, wake one.

        Args:
            blkcg: the bio's cgroup (it went through ``levels`` at submission).
            now_ns: completion time.
            issue_ns: the bio's ``bi_issue`` time (its submission).
            issue_as_root: ``REQ_META``/``REQ_SWAP``.
        """
        if not self.enabled or blkcg == ROOT:
            return Decisions()
        wakes: list[Wake] = []
        events: list[ScaleEvent] = []
        for path in ancestors(blkcg)[:-1]:
            grp = self._grp(path)
            grp.rq_wait.inflight -= 1
            if grp.rq_wait.inflight < 0:  # WARN_ON_ONCE(inflight < 0)
                raise KernelBug(f"io.latency group {path!r}: inflight < 0")
            if grp.min_lat_nsec:
                self._iolatency_record_time(grp, issue_ns, now_ns, issue_as_root)
                if now_ns > grp.window_start and now_ns - grp.window_start >= grp.cur_win_nsec:
                    grp.window_start = now_ns
                    events.extend(self._iolatency_check_latencies(grp, now_ns))
            wakes.extend(self._wake_up(grp))
        return Decisions(wakes=tuple(wakes), events=tuple(events))

    def _iolatency_record_time(self, grp: IolatencyGrp, start: int, now: int, issue_as_root: bool) -> None:
        """Mirror of ``iolatency_record_time()``: root-issued IO of a throttled group charges delay instead."""
        if now <= start:
            return
        req_time = now - start
        if issue_as_root and grp.rq_depth.max_depth != UINT_MAX:
            if req_time < grp.min_lat_nsec:
                blkcg_add_delay(grp.blkg, now, grp.min_lat_nsec - req_time)
            return
        latency_stat_record_time(grp.ssd, grp.stats, req_time, grp.min_lat_nsec)

    def _iolatency_check_latencies(self, grp: IolatencyGrp, now: int) -> list[ScaleEvent]:
        """Mirror of ``iolatency_check_latencies()``: judge a window, maybe move the parent's cookie.

        The verdict itself is the version's (``blk_iolatency_rules.CHECK_LATENCIES``).
        """
        stat = LatencyStat()
        latency_stat_sum(grp.ssd, stat, grp.stats)
        grp.stats = LatencyStat()
        parent = self._parent(grp)
        if parent is None:
            return []
        lat_info = parent.child_lat
        if not grp.ssd:  # iolat_update_total_lat_avg()
            grp.lat_avg = iolat_update_total_lat_avg(grp.lat_avg, grp.cur_win_nsec, stat.mean)
        if latency_sum_ok(grp.ssd, stat, grp.min_lat_nsec) and lat_info.scale_cookie == DEFAULT_SCALE_COOKIE:
            return []
        up = CHECK_LATENCIES[self.version](grp, lat_info, stat, now)
        return [] if up is None else [self._scale_cookie_change(parent, up, by=grp.path)]

    def _scale_cookie_change(self, parent: IolatencyGrp, up: bool, *, by: str) -> ScaleEvent:
        """Mirror of ``scale_cookie_change()``: move the children's cookie by qd/16 up or qd/4 down.

        Once more than qd below the default it moves by 1, and never goes
        more than 2 x qd below it.
        """
        lat_info = parent.child_lat
        qd = self.qd
        scale = scale_amount(qd, up)
        old = lat_info.scale_cookie
        diff = DEFAULT_SCALE_COOKIE - old if old < DEFAULT_SCALE_COOKIE else 0
        if up:
            if scale + old > DEFAULT_SCALE_COOKIE:
                lat_info.scale_cookie = DEFAULT_SCALE_COOKIE
            elif diff > qd:
                lat_info.scale_cookie += 1
            else:
                lat_info.scale_cookie += scale
        elif diff > qd:
            if diff < qd << 1:
                lat_info.scale_cookie -= 1
        else:
            lat_info.scale_cookie -= scale
        return ScaleEvent(
            what="scale_cookie",
            blkcg=parent.path,
            by=by,
            direction=1 if up else -1,
            old=old,
            new=lat_info.scale_cookie,
            scale_cookie=lat_info.scale_cookie,
            scale_grp=lat_info.scale_grp,
        )

    def timer_fn(self, now_ns: int) -> list[ScaleEvent]:
        """Mirror of ``blkiolatency_timer_fn()`` (runs 1 s after a submission armed it).

        For each parent whose cookie is below default: without a ``scale_grp``
        step the cookie up; with one, release it 5 s after the last scale event.
        """
        events: list[ScaleEvent] = []
        for grp in list(self._grps.values()):
            lat_info = grp.child_lat
            if lat_info.scale_cookie >= DEFAULT_SCALE_COOKIE:
                continue
            last = lat_info.last_scale_event
            if last is not None and last >= now_ns:
                continue
            if lat_info.scale_grp is None:
                events.append(self._scale_cookie_change(grp, True, by="timer"))
            elif last is None or now_ns - last >= SCALE_GRP_IDLE_NSEC:
                old = lat_info.scale_grp
                lat_info.scale_grp = None
                events.append(
                    ScaleEvent(
                        what="scale_grp",
                        blkcg=grp.path,
                        by="timer",
                        direction=0,
                        old=0,
                        new=0,
                        scale_cookie=lat_info.scale_cookie,
                        scale_grp=old,
                    )
                )
        return events

    # -- induced delay and congestion -----------------------------------------

    def use_delay(self, path: str) -> int:
        """The group's ``blkg->use_delay`` on this queue (0 if it never did IO)."""
        blkg = self._blkgs.get(path)
        return 0 if blkg is None else blkg.use_delay

    def congested(self, path: str) -> bool:
        """``blk_cgroup_congested()`` for a task in *path* (any device, any ancestor)."""
        return self.hierarchy.blk_cgroup_congested(path)

    def blkcg_maybe_throttle_blkg(self, path: str, now_ns: int) -> int:
        """Nanoseconds a task of *path* returning to user space sleeps (<= 250 ms).

        The decision half of ``blkcg_maybe_throttle_blkg()``; see
        ``blk_cgroup.blkcg_throttle_delay_nsec``.
        """
        blkg = self._blkgs.get(path)
        return 0 if blkg is None else blkcg_throttle_delay_nsec(blkg, now_ns)

    # -- observability ------------------------------------------------------

    def _event(self, grp: IolatencyGrp, what: str, direction: int, old: int, new: int) -> ScaleEvent:
        return ScaleEvent(
            what=what,
            blkcg=grp.path,
            by=grp.path,
            direction=direction,
            old=old,
            new=new,
            max_depth=grp.rq_depth.max_depth,
            use_delay=grp.blkg.use_delay,
            scale_cookie=grp.scale_cookie,
        )

    def groups(self) -> list[str]:
        """Paths of every group on this queue, root first, in creation order."""
        return list(self._grps)

    def statistics(self, path: str) -> IolatencyStatistics:
        """A snapshot of one group (``iolatency_pd_stat`` fields plus internals)."""
        grp = self._grp(path)
        return IolatencyStatistics(
            blkcg=path,
            min_lat_nsec=grp.min_lat_nsec,
            depth=grp.rq_depth.max_depth,
            avg_lat=grp.lat_avg // NSEC_PER_USEC,
            win=grp.cur_win_nsec // NSEC_PER_MSEC,
            lat_avg=grp.lat_avg,
            cur_win_nsec=grp.cur_win_nsec,
            missed=grp.stats.missed,
            total=grp.stats.total,
            nr_samples=grp.nr_samples,
            nr_inflight=grp.rq_wait.inflight,
            nr_waiters=len(grp.rq_wait.waiters),
            use_delay=grp.blkg.use_delay,
            delay_nsec=grp.blkg.delay_nsec,
            scale_cookie=grp.scale_cookie,
            child_scale_cookie=grp.child_lat.scale_cookie,
            scale_grp=grp.child_lat.scale_grp,
        )
