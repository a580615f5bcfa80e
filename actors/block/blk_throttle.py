"""cgroup v2 ``io.max``: the settings and the throttle that enforces them.

Mirrors ``block/blk-throttle.c`` as of v5.10-v6.1 without
``CONFIG_BLK_DEV_THROTTLING_LOW`` (Debian's kernels): ``tg_set_limit()`` (the
``io.max`` syntax), ``blk_throtl_bio()``, ``tg_may_dispatch()`` with
``tg_with_in_bps_limit()`` / ``tg_with_in_iops_limit()``, the slice
bookkeeping (``throtl_start_new_slice``, ``throtl_extend_slice``,
``throtl_trim_slice``), ``throtl_charge_bio()``, ``tg_update_disptime()``,
``throtl_pending_timer_fn()`` with ``throtl_select_dispatch()`` /
``throtl_dispatch_tg()`` and ``blk_throtl_dispatch_work_fn()``.

Theory of operation
-------------------

Unlike io.latency, io.max never puts the submitter to sleep. ``submit_bio``
asks ``blk_throtl_bio`` first, before merging and before ``rq_qos_throttle``.
Level by level from the bio's cgroup up, a group either lets the bio pass
(charging its bytes and one IO to the current *slice*) or, when the bio
would exceed the group's budget or the group already has bios queued in
that direction, keeps it on the group's queue. ``submit_bio`` then returns
at once: the submitter goes on (typically to ``lock_page`` on the page the
bio will fill, and sleeps there).

A group's budget over a slice of ``throtl_slice`` jiffies (100 ms) that has
run ``elapsed`` jiffies is ``limit * roundup(elapsed + 1, throtl_slice) / HZ``
bytes (or IOs); a queued group computes the jiffies until its first bio
fits (``disptime``). The device's pending timer fires at the earliest
``disptime``: it moves bios up one level at a time (at most 8 per group and
32 per round, 3/4 of them reads), and bios that leave the top level go to
the ``kthrotld`` worker, which submits them again (``BIO_THROTTLED``: they
pass the throttle) under a plug, from its own context: any io.latency sleep
or tag wait after that is the worker's, not the original submitter's::

    submitter: submit_bio ─ blk_throtl_bio ─ fits? ──yes──▶ merge / rq_qos / tag ─▶ device
                                            └─no── queued on its group (returns)
    pending timer (jiffies) ── dispatch up to the top ─▶ kthrotld: submit_bio again

Emulation notes:
    * Time is in jiffies at ``HZ = 250`` (Debian's ``CONFIG_HZ_250``): the
      timer and every wait are whole 4 ms ticks, as in the kernel.
    * One pending timer for the device instead of one per service queue;
      all levels are dispatched in the same callback, deepest first, which
      is what the kernel's per-level timers do when a child's dispatch
      makes its parent dispatchable at once.
    * Bios a group dispatches from several children are FIFO, not
      round-robin per child (``throtl_qnode``).
    * No bio splitting: a bio's bytes are its pages; no ``io.low``,
      no idle-time or latency-target logic (``THROTTLING_LOW``), no
      carry-over of budget on a limit change (6.2+): limits are fixed for
      the run.
    * Only the cgroup v2 ``io.max`` file; no v1 ``blkio.throttle.*``.
    * The kernel accepts ``0x``/octal spellings through ``kstrtoull(..., 0)``;
      only decimal is accepted here.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

import emu
from actors.block.bio import Bio
from actors.block.blk_cgroup import ancestors
from actors.kernel_types import ReqOp
from emu import NSEC_PER_SEC

_DEV = re.compile(r"^\d+:\d+$")
_DIGITS = re.compile(r"^\d+$")
_U64_MAX = (1 << 64) - 1
#: The keys of ``io.max``, in the order the kernel prints them.
IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")


@attrs.frozen(kw_only=True)
class IoMax:
    """One group's ``io.max`` limits on one device; ``None`` = ``max`` (no limit)."""

    dev: str
    rbps: int | None = None
    wbps: int | None = None
    riops: int | None = None
    wiops: int | None = None

    def __str__(self) -> str:
        """The line ``cat io.max`` prints (``tg_prfill_limit``): every key, ``max`` where unlimited."""
        values = " ".join(f"{key}={'max' if getattr(self, key) is None else getattr(self, key)}" for key in IO_MAX_KEYS)
        return f"{self.dev} {values}"

    @property
    def limited(self) -> bool:
        """Whether any limit is set (a group all ``max`` is not throttled)."""
        return any(getattr(self, key) is not None for key in IO_MAX_KEYS)


def parse_io_max(text: str) -> IoMax:
    """Parse what one writes to ``io.max``: ``"8:0 rbps=1048576 riops=max"``.

    Mirror of ``tg_set_limit()`` (block/blk-throttle.c, v5.10): the device
    first (``blkg_conf_prep``), then each space-separated ``key=value``; a
    key not given keeps its default, ``max``.

    Raises:
        ValueError: no ``MAJ:MIN``, an unknown key, a value that is not a
            positive decimal integer or ``max``, or one above 2^64-1.
    """
    dev, _, body = text.strip().partition(" ")
    if not _DEV.match(dev):
        raise ValueError(f'expected "MAJ:MIN key=value ...", e.g. "8:0 rbps=1048576 riops=100", got {text!r}')
    limits: dict[str, int | None] = {}
    for tok in body.split():
        key, sep, val = tok.partition("=")
        if not sep or key not in IO_MAX_KEYS:
            raise ValueError(f"unknown io.max token {tok!r}; expected key=value with key one of {', '.join(IO_MAX_KEYS)}")
        if val == "max":
            limits[key] = None
        elif _DIGITS.match(val) and 0 < int(val) <= _U64_MAX:
            limits[key] = int(val)
        else:
            raise ValueError(f"io.max {key}: expected a positive integer or max, got {val!r}")
    return IoMax(dev=dev, **limits)


#: ``CONFIG_HZ`` of Debian's amd64 kernels (``CONFIG_HZ_250=y``): one jiffy is 4 ms.
HZ = 250
JIFFY_NS = NSEC_PER_SEC // HZ
#: ``DFL_THROTL_SLICE_HD``: the slice without ``CONFIG_BLK_DEV_THROTTLING_LOW``, for every device.
THROTL_SLICE = HZ // 10
#: ``THROTL_GRP_QUANTUM``: bios one group dispatches in one round (3/4 of them reads).
THROTL_GRP_QUANTUM = 8
#: ``THROTL_QUANTUM``: bios dispatched from all groups in one round.
THROTL_QUANTUM = 32
_READ, _WRITE = int(ReqOp.READ), int(ReqOp.WRITE)


def _roundup(x: int, y: int) -> int:
    return -(-x // y) * y


@attrs.define(eq=False)
class ThrotlGrp:
    """``struct throtl_grp``: one cgroup's limits, slice state and queued bios; indexed by ``REQ_OP`` (0 read, 1 write)."""

    path: str
    parent: ThrotlGrp | None
    bps: tuple[int | None, int | None] = (None, None)
    iops: tuple[int | None, int | None] = (None, None)
    has_rules: list[bool] = attrs.field(factory=lambda: [False, False])
    bytes_disp: list[int] = attrs.field(factory=lambda: [0, 0])
    io_disp: list[int] = attrs.field(factory=lambda: [0, 0])
    slice_start: list[int] = attrs.field(factory=lambda: [-1, -1])  # before jiffy 0: the first bio starts a slice
    slice_end: list[int] = attrs.field(factory=lambda: [-1, -1])
    queued: tuple[deque[Bio], deque[Bio]] = attrs.field(factory=lambda: (deque(), deque()))
    disptime: int = 0
    pending_seq: int | None = None  # THROTL_TG_PENDING: its place among equal disptimes

    def limited(self, rw: int) -> bool:
        return self.bps[rw] is not None or self.iops[rw] is not None


@attrs.frozen(kw_only=True)
class ThrotlStatistics:
    """``nr_queued`` bios ever held back, ``wait_ns`` their total time held, ``queued_now`` still held."""

    nr_queued: int
    wait_ns: int
    queued_now: int


class BlkThrottle:
    """``struct throtl_data`` of one request queue: its groups, pending timer and dispatch list.

    Args:
        engine: for the time and the pending timer (an engine callback).
        dev: ``"MAJ:MIN"``; limits for another device are ignored.
        limits: cgroup path → its ``io.max`` setting.
        log: where the throttle's trace records go (the device actor's log).
    """

    def __init__(self, engine: emu.Engine, *, dev: str, limits: Mapping[str, IoMax], log: Any) -> None:
        self.engine = engine
        self.dev = dev
        self.log = log
        self.tgs: dict[str, ThrotlGrp] = {}
        for path, io_max in sorted(limits.items()):
            if io_max.dev == dev and io_max.limited:
                tg = self._lookup_create(path)
                tg.bps, tg.iops = (io_max.rbps, io_max.wbps), (io_max.riops, io_max.wiops)
        for tg in self.tgs.values():
            node: ThrotlGrp | None = tg
            while node is not None:
                for rw in (_READ, _WRITE):
                    tg.has_rules[rw] = tg.has_rules[rw] or node.limited(rw)
                node = node.parent
        self.dispatched: deque[Bio] = deque()  # td->service_queue.queued: ready for kthrotld
        self.work = emu.WaitQueue(engine, f"kthrotld {dev}")
        self._held: dict[int, int] = {}  # bio_id → when it was first held back (ns)
        self._seq = 0
        self._timer_gen = 0
        self._nr_queued = self._wait_ns = 0

    @property
    def active(self) -> bool:
        """Whether any group on this device has a limit (else ``blk_throtl_bio`` never holds a bio)."""
        return bool(self.tgs)

    def _lookup_create(self, path: str) -> ThrotlGrp:
        tg = self.tgs.get(path)
        if tg is None:
            up = [a for a in ancestors(path)[1:] if a]
            parent = self._lookup_create(up[0]) if up else None
            tg = self.tgs[path] = ThrotlGrp(path=path, parent=parent)
        return tg

    def _tg_of(self, blkcg: str) -> ThrotlGrp | None:
        """The bio's group, or its nearest ancestor that has one (groups without limits anywhere have none)."""
        for path in ancestors(blkcg):
            if path in self.tgs:
                return self.tgs[path]
        return None

    @property
    def jiffies(self) -> int:
        return self.engine.now_ns // JIFFY_NS

    # -- slices (throtl_start_new_slice, throtl_extend_slice, throtl_trim_slice) ---------

    def _slice_used(self, tg: ThrotlGrp, rw: int, j: int) -> bool:
        return not tg.slice_start[rw] <= j <= tg.slice_end[rw]

    def _start_new_slice(self, tg: ThrotlGrp, rw: int, j: int, *, credit_from: int | None = None) -> None:
        tg.bytes_disp[rw] = tg.io_disp[rw] = 0
        if credit_from is None:
            tg.slice_start[rw] = j
        elif credit_from >= tg.slice_start[rw]:  # throtl_start_new_slice_with_credit()
            tg.slice_start[rw] = credit_from
        tg.slice_end[rw] = j + THROTL_SLICE

    def _extend_slice(self, tg: ThrotlGrp, rw: int, jiffy_end: int) -> None:
        tg.slice_end[rw] = _roundup(jiffy_end, THROTL_SLICE)

    def _trim_slice(self, tg: ThrotlGrp, rw: int, j: int) -> None:
        """``throtl_trim_slice()``: forget the budget of whole slices gone by (an unlimited direction trims all)."""
        if self._slice_used(tg, rw, j):
            return
        tg.slice_end[rw] = _roundup(j + THROTL_SLICE, THROTL_SLICE)
        nr_slices = (j - tg.slice_start[rw]) // THROTL_SLICE
        if not nr_slices:
            return
        span = THROTL_SLICE * nr_slices
        bps, iops = tg.bps[rw], tg.iops[rw]
        bytes_trim = tg.bytes_disp[rw] if bps is None else bps * span // HZ
        io_trim = tg.io_disp[rw] if iops is None else iops * span // HZ
        if not bytes_trim and not io_trim:
            return
        tg.bytes_disp[rw] = max(0, tg.bytes_disp[rw] - bytes_trim)
        tg.io_disp[rw] = max(0, tg.io_disp[rw] - io_trim)
        tg.slice_start[rw] += span

    # -- budgets (tg_with_in_bps_limit, tg_with_in_iops_limit, tg_may_dispatch) ----------

    def _within_bps(self, tg: ThrotlGrp, bio: Bio, rw: int, j: int) -> tuple[bool, int]:
        bps = tg.bps[rw]
        if bps is None:
            return True, 0
        elapsed = j - tg.slice_start[rw]
        rnd = _roundup(elapsed or THROTL_SLICE, THROTL_SLICE)  # a slice just started counts as one
        allowed = bps * rnd // HZ
        if tg.bytes_disp[rw] + bio.nr_bytes <= allowed:
            return True, 0
        wait = max(1, (tg.bytes_disp[rw] + bio.nr_bytes - allowed) * HZ // bps)
        return False, wait + rnd - elapsed

    def _within_iops(self, tg: ThrotlGrp, rw: int, j: int) -> tuple[bool, int]:
        iops = tg.iops[rw]
        if iops is None:
            return True, 0
        elapsed = j - tg.slice_start[rw]
        rnd = _roundup(elapsed + 1, THROTL_SLICE)  # the wait must be nonzero
        if tg.io_disp[rw] + 1 <= iops * rnd // HZ:
            return True, 0
        return False, rnd - elapsed

    def _may_dispatch(self, tg: ThrotlGrp, bio: Bio, rw: int, j: int) -> tuple[bool, int]:
        """``tg_may_dispatch()``: whether *bio* fits now, else the jiffies until it may."""
        if not tg.limited(rw):
            return True, 0
        if self._slice_used(tg, rw, j):
            self._start_new_slice(tg, rw, j)
        elif tg.slice_end[rw] < j + THROTL_SLICE:
            self._extend_slice(tg, rw, j + THROTL_SLICE)
        ok, bps_wait = self._within_bps(tg, bio, rw, j)
        iops_wait = 0
        if ok:
            ok, iops_wait = self._within_iops(tg, rw, j)
            if ok:
                return True, 0
        wait = max(bps_wait, iops_wait)
        if tg.slice_end[rw] < j + wait:
            self._extend_slice(tg, rw, j + wait)
        return False, wait

    def _charge(self, tg: ThrotlGrp, bio: Bio, rw: int) -> None:
        tg.bytes_disp[rw] += bio.nr_bytes
        tg.io_disp[rw] += 1

    # -- submission --------------------------------------------------------------------

    def blk_throtl_bio(self, bio: Bio) -> bool:
        """Mirror of ``blk_throtl_bio()`` (v5.10): ``True`` when *bio* is held back (the submitter goes on).

        A bio that passes every level is charged at each and marked
        ``BIO_THROTTLED``, as is one that leaves the throttle later: neither
        is held again.
        """
        if bio.throttled:
            return False
        rw = int(bio.op)
        tg = self._tg_of(bio.blkcg)
        if tg is None or not tg.has_rules[rw]:
            return False
        j = self.jiffies
        while not tg.queued[rw]:
            fits, _wait = self._may_dispatch(tg, bio, rw, j)
            if not fits:
                break
            self._charge(tg, bio, rw)
            self._trim_slice(tg, rw, j)
            if tg.parent is None:
                bio.throttled = True
                return False
            tg = tg.parent
        self._held[bio.bio_id] = self.engine.now_ns
        self._nr_queued += 1
        self.log.info("throtl_bio_queued", dev=self.dev, bio=bio.bio_id, op=bio.op.name, blkcg=tg.path,
                      bytes_disp=tg.bytes_disp[rw], io_disp=tg.io_disp[rw], queued=len(tg.queued[rw]) + 1)  # fmt: skip
        if self._add_bio_tg(tg, bio, rw, j):
            self._schedule_next_dispatch(j, force=True)
        return True

    def _add_bio_tg(self, tg: ThrotlGrp, bio: Bio, rw: int, j: int) -> bool:
        """``throtl_add_bio_tg()``: ``True`` when *tg* had nothing queued that way (``THROTL_TG_WAS_EMPTY``).

        Such a group gets a new ``disptime`` (``tg_update_disptime``) and its
        place among the pending groups; the caller arms the timer if it must.
        """
        was_empty = not tg.queued[rw]
        tg.queued[rw].append(bio)
        if was_empty:
            self._update_disptime(tg, j)
        return was_empty

    def _update_disptime(self, tg: ThrotlGrp, j: int) -> None:
        """``tg_update_disptime()``: the earliest jiffy either direction's first bio fits."""
        waits = [self._may_dispatch(tg, q[0], rw, j)[1] for rw, q in enumerate(tg.queued) if q]
        tg.disptime = j + min(waits) if waits else j + (1 << 62)
        self._seq += 1  # throtl_dequeue_tg + throtl_enqueue_tg: last among equal disptimes
        tg.pending_seq = self._seq

    def _first_pending(self) -> ThrotlGrp | None:
        pending = [tg for tg in self.tgs.values() if tg.pending_seq is not None]
        return min(pending, key=lambda tg: (tg.disptime, tg.pending_seq), default=None)

    def _schedule_next_dispatch(self, j: int, *, force: bool) -> bool:
        """``throtl_schedule_next_dispatch()``: ``True`` when the timer is armed or nothing is pending."""
        first = self._first_pending()
        if first is None:
            return True
        if force or first.disptime > j:
            self._mod_timer(first.disptime, j)
            return True
        return False

    def _mod_timer(self, expires: int, j: int) -> None:
        """``mod_timer(&sq->pending_timer, expires)``: an expiry already due fires on the next tick."""
        self._timer_gen += 1
        self.engine.call_at(max(expires, j + 1) * JIFFY_NS, self._pending_timer_fn, self._timer_gen)

    # -- dispatch (throtl_pending_timer_fn) -------------------------------------------

    def _pending_timer_fn(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # re-armed since (mod_timer replaces the expiry)
        j = self.jiffies
        while True:
            self._select_dispatch(j)
            if self._schedule_next_dispatch(j, force=False):
                break
        if self.dispatched:
            self.work.wake("idle")  # queue_work(kthrotld_workqueue, &td->dispatch_work)

    def _select_dispatch(self, j: int) -> int:
        """``throtl_select_dispatch()``: groups whose time has come, earliest first, at most 32 bios."""
        nr_disp = 0
        while nr_disp < THROTL_QUANTUM:
            tg = self._first_pending()
            if tg is None or tg.disptime > j:
                break
            tg.pending_seq = None  # throtl_dequeue_tg()
            nr_disp += self._dispatch_tg(tg, j)
            if tg.queued[_READ] or tg.queued[_WRITE]:
                self._update_disptime(tg, j)
        return nr_disp

    def _dispatch_tg(self, tg: ThrotlGrp, j: int) -> int:
        """``throtl_dispatch_tg()``: up to 6 reads then 2 writes that fit."""
        nr = 0
        for rw, quota in ((_READ, THROTL_GRP_QUANTUM * 3 // 4), (_WRITE, THROTL_GRP_QUANTUM // 4)):
            done = 0
            queue = tg.queued[rw]
            while queue and done < quota and self._may_dispatch(tg, queue[0], rw, j)[0]:
                self._dispatch_one_bio(tg, rw, j)
                done += 1
            nr += done
        return nr

    def _dispatch_one_bio(self, tg: ThrotlGrp, rw: int, j: int) -> None:
        """``tg_dispatch_one_bio()``: charge, then up one level, or out to kthrotld from the top."""
        bio = tg.queued[rw].popleft()
        self._charge(tg, bio, rw)
        parent = tg.parent
        if parent is not None:
            if self._slice_used(parent, rw, j):
                self._start_new_slice(parent, rw, j, credit_from=tg.slice_start[rw])
            self._add_bio_tg(parent, bio, rw, j)  # due in this same callback if it has room
        else:
            bio.throttled = True
            held_ns = self.engine.now_ns - self._held.pop(bio.bio_id)
            self._wait_ns += held_ns
            self.dispatched.append(bio)
            self.log.info("throtl_dispatch", dev=self.dev, bio=bio.bio_id, op=bio.op.name, blkcg=bio.blkcg,
                          held_ns=held_ns)  # fmt: skip
        self._trim_slice(tg, rw, j)

    def take_dispatched(self) -> list[Bio]:
        """What ``blk_throtl_dispatch_work_fn`` pops: every bio that left the top level, in order."""
        bios = list(self.dispatched)
        self.dispatched.clear()
        return bios

    def statistics(self) -> ThrotlStatistics:
        return ThrotlStatistics(nr_queued=self._nr_queued, wait_ns=self._wait_ns, queued_now=len(self._held))
