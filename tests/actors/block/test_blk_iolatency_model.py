"""Model-based test of actors/block/blk_iolatency.py: ``BlkIolatency`` beside a small reference io.latency.

A Hypothesis ``RuleBasedStateMachine`` drives the sans-IO scaler the way the
block layer does (a throttle walk per bio, leaf first; completions with chosen
latencies; the 1 s timer; giving back a slot granted to a sleeper that left),
in monotonic integer-nanosecond virtual time, under either version's rules
(``blk_iolatency_rules``). ``IolatModel`` is written from block/blk-iolatency.c
(v4.19 and v5.4) with its own data layout: a window is a list of latencies, a
wait queue a list of keys. After every step the machine checks that the two
agree, and checks the observable contract directly on what the emulator
reports, without the model:

* a normal (not issue-as-root, not dying) bio is admitted at a level only when
  that level's inflight is below the ``max_depth`` in force then;
* wake-ups take the sleepers of a group in queue order, and a newcomer queues
  whenever somebody already sleeps there; nobody sleeps while a slot is free,
  unless (4.19) a woken waiter that has not run yet will try for it;
* every scale cookie stays within ``[DEFAULT_SCALE_COOKIE - 2 qd, DEFAULT]``,
  moves only with a reported event, and by the kernel's amounts (qd/4 down,
  qd/16 up, 1 past qd below default); a parent's cookie moves on judged
  latencies at most once per 500 ms (4.19: unless the mover's target is
  tighter than the last victim's);
* ``use_delay`` is non-zero only at ``max_depth == 1``; a group whose cookie is
  back at default has unlimited depth, no ``use_delay`` and no sleepers;
* a peer whose target is at or below the victim's is never scaled down.
"""

from __future__ import annotations

import itertools

import attrs
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.block import blk_iolatency, blk_iolatency_rules
from actors.block.blk_iolatency import BlkIolatency, Decisions, ScaleEvent

MS = 1_000_000
SEC = 1_000 * MS

# Kernel constants, restated from block/blk-iolatency.c rather than imported.
DEFAULT = 1_000_000  # DEFAULT_SCALE_COOKIE
UNLIMITED = 0xFFFF_FFFF  # UINT_MAX: rq_depth.max_depth when not throttled
MIN_ADJUST_NS = 500 * MS  # BLKIOLATENCY_MIN_ADJUST_TIME
MIN_GOOD_SAMPLES = 5  # BLKIOLATENCY_MIN_GOOD_SAMPLES
SCALE_GRP_IDLE_NS = 5 * SEC  # blkiolatency_timer_fn
START_NS = SEC  # creation time of the queue and its configured groups

#: The hierarchy: "w" has no target; under it a tight and a loose target and a
#: target-less group, which has a targeted and a target-less child of its own.
TARGETS: dict[str, int | None] = {
    "w/prot": 2 * MS,
    "w/peer": 8 * MS,
    "w/noisy": None,
    "w/noisy/a": 1 * MS,
    "w/noisy/b": None,
}
#: Submitters: the configured groups, their parent, and one created on first use.
CGROUPS = ("w/prot", "w/peer", "w/noisy", "w/noisy/a", "w/noisy/b", "w/late", "w")
TARGETED = tuple(path for path, target in TARGETS.items() if target)
LATENCIES = (0, MS // 2, MS, 2 * MS, 5 * MS, 8 * MS, 9 * MS, 30 * MS)
GAPS = (0, 10 * MS, 100 * MS, 500 * MS)
DELTAS = (MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS, SEC, 5 * SEC)

#: A scale event as a tuple, in ``ScaleEvent`` field order.
Event = tuple[str, str, str, int, int, int, int | None, int | None, int, str | None]
Wake = tuple[str, int]


def target_of(path: str) -> int:
    return TARGETS.get(path) or 0


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def as_tuples(events: tuple[ScaleEvent, ...] | list[ScaleEvent]) -> list[Event]:
    return [attrs.astuple(e) for e in events]


# ------------------------------------------------------------ reference model


@attrs.define
class ModelGroup:
    """One cgroup: its limits, its copy of the parent's cookie, its slots, its windows; and, as a parent, child_lat."""

    path: str
    target: int
    window_ns: int
    cookie: int
    window_start: int
    depth: int = UNLIMITED
    use_delay: int = 0
    inflight: int = 0
    queue: list[int] = attrs.field(factory=list)
    window: list[int] = attrs.field(factory=list)  # latencies recorded this window
    pending: list[int] = attrs.field(factory=list)  # latencies judged since the last scale attempt (cur_stat)
    nr_samples: int = 0
    child_cookie: int = DEFAULT
    last_event: int | None = None
    scale_lat: int = 0
    scale_grp: str | None = None


class IolatModel:
    """Reference io.latency for one queue of depth *qd*, by the 4.19 or the 5.4 text."""

    def __init__(self, qd: int, ssd: bool, now: int, version: str) -> None:
        self.v419 = version == "4.19"
        self.qd, self.ssd = qd, ssd and not self.v419
        self.down, self.up = max(qd // 4, 1), max(qd // 16, 1)
        self.groups: dict[str, ModelGroup] = {}
        for path in TARGETS:
            self.add(path, now)

    def add(self, path: str, now: int) -> ModelGroup:
        """A group is made after its parent and starts from the parent's current cookie."""
        if path in self.groups:
            return self.groups[path]
        cookie = DEFAULT if path == "" else self.add(parent_of(path), now).child_cookie
        target = target_of(path)
        window_ns = min(max(16 * target, 100 * MS), SEC)
        self.groups[path] = ModelGroup(path, target, window_ns, cookie, now)
        return self.groups[path]

    def levels(self, path: str, now: int) -> list[str]:
        self.add(path, now)
        out = []
        while path:
            out.append(path)
            path = parent_of(path)
        return out

    def children(self, parent: str) -> list[ModelGroup]:
        return [g for g in self.groups.values() if g.path and parent_of(g.path) == parent]

    # -- slots

    def grant(self, g: ModelGroup, *, every: bool) -> list[Wake]:
        """Hand free slots to the head sleeper (or to every one that fits); 4.19 wakes it (them all) slot or not."""
        woken = []
        while g.queue and (self.v419 or g.inflight < g.depth):
            if not self.v419:
                g.inflight += 1
            woken.append((g.path, g.queue.pop(0)))
            event("wake all" if every else "wake one")
            if not every:
                break
        return woken

    def throttle(self, path: str, key: int, forced: bool) -> tuple[bool, bool]:
        """(must wait, schedule_throttle) for a bio arriving at *path*."""
        g = self.groups[path]
        if forced or (not g.queue and g.inflight < g.depth):
            g.inflight += 1
            return False, g.use_delay > 0
        g.queue.append(key)
        return True, g.use_delay > 0

    def retry(self, path: str, key: int) -> bool:
        """4.19: a woken sleeper runs, queues at the tail again and takes a slot if one is free."""
        g = self.groups[path]
        if g.inflight < g.depth:
            g.inflight += 1
            return True
        g.queue.append(key)
        return False

    def release(self, path: str) -> list[Wake]:
        g = self.groups[path]
        g.inflight -= 1
        return self.grant(g, every=False)

    # -- following the parent's cookie

    def group_event(self, g: ModelGroup, what: str, direction: int, old: int, new: int) -> Event:
        return (what, g.path, g.path, direction, old, new, g.depth, g.use_delay, g.cookie, None)

    def follow(self, path: str) -> tuple[list[Event], list[Wake]]:
        """check_scale_change: one step towards the parent's cookie."""
        g, p = self.groups[path], self.groups[parent_of(path)]
        if g.cookie == p.child_cookie:
            return [], []
        down = p.child_cookie < g.cookie
        g.cookie = p.child_cookie
        if down and g.target:
            if not p.scale_lat or g.target <= p.scale_lat:
                return [], []  # as important as the victim
            share = sum(c.nr_samples for c in self.children(p.path)) * 5 // 100
            if g.nr_samples <= (share if self.v419 else max(share, 1)):
                event("peer skipped: at most 5 % of the samples")
                return [], []
            event("a peer with a looser target scaled down")  # did at most 5 % of the IO
        if down and g.depth == 1:
            g.use_delay += 1
            return [self.group_event(g, "use_delay", -1, g.use_delay - 1, g.use_delay)], []
        if g.cookie == DEFAULT:
            old, g.depth, g.use_delay = g.depth, UNLIMITED, 0
            return [self.group_event(g, "unthrottle", 1, old, UNLIMITED)], self.grant(g, every=True)
        old, usable = g.depth, min(g.depth, self.qd)
        if down and self.v419 and usable == 1:
            return [], []  # 4.19 scale_change: only "old > 1" halves
        if down:
            g.depth = max(usable // 2, 1)
            return [self.group_event(g, "max_depth", -1, old, g.depth)], []
        if usable == 1 and g.use_delay:
            g.use_delay -= 1
            return [self.group_event(g, "use_delay", 1, g.use_delay + 1, g.use_delay)], []
        if usable == self.qd:
            return [], []
        g.depth = min(usable + self.up, self.qd)
        return [self.group_event(g, "max_depth", 1, old, g.depth)], self.grant(g, every=True)

    # -- completions and window judging

    def ok(self, g: ModelGroup, lats: list[int]) -> bool:
        if not lats:
            return True
        if self.ssd:  # p90: fewer than 10 % (at least one) at or over target
            return sum(lat >= g.target for lat in lats) < max(len(lats) // 10, 1)
        return sum(lats) // len(lats) <= g.target

    def move_cookie(self, p: ModelGroup, up: bool, by: str) -> Event:
        """scale_cookie_change: qd/16 up (clamped), qd/4 down, by 1 beyond qd below default, never 2 qd below."""
        old = p.child_cookie
        below = DEFAULT - old
        if up:
            new = DEFAULT if old + self.up > DEFAULT else old + (1 if below > self.qd else self.up)
        elif below <= self.qd:
            new = old - self.down
        else:
            new = old - 1 if below < 2 * self.qd else old
        p.child_cookie = new
        return ("scale_cookie", p.path, by, 1 if up else -1, old, new, None, None, new, p.scale_grp)

    def judge(self, g: ModelGroup, now: int) -> list[Event]:
        """iolatency_check_latencies for a window that just closed."""
        p = self.groups[parent_of(g.path)]
        lats, g.window = g.window, []
        window_ok = self.ok(g, lats)
        if window_ok and p.child_cookie == DEFAULT:
            return []
        if self.v419:
            return self.judge_one_window(g, p, lats, window_ok, now)
        g.pending += lats
        g.nr_samples = len(g.pending)
        if p.last_event is not None and now - p.last_event < MIN_ADJUST_NS:
            return []
        # Rotational: cur_stat is a sum of sums, whose mean blk_rq_stat_sum leaves at 0 (always OK).
        pending_ok = True if not self.ssd else self.ok(g, g.pending)
        events = []
        if pending_ok and window_ok:
            if len(g.pending) < MIN_GOOD_SAMPLES:
                return []
            if p.scale_grp == g.path:
                p.last_event = now
                events.append(self.move_cookie(p, True, g.path))
        elif not p.scale_lat or p.scale_lat >= g.target:
            p.last_event = now
            if p.scale_grp is None or p.scale_lat > g.target:
                p.scale_lat, p.scale_grp = g.target, g.path
            events.append(self.move_cookie(p, False, g.path))
        g.pending = []
        return events

    def judge_one_window(self, g: ModelGroup, p: ModelGroup, lats: list[int], ok: bool, now: int) -> list[Event]:
        """4.19: this window alone decides; a target tighter than the last victim's ignores the rate limit."""
        g.nr_samples = len(lats)
        if p.last_event is not None and now - p.last_event < MIN_ADJUST_NS and p.scale_lat <= g.target:
            return []
        if ok:
            if len(lats) < MIN_GOOD_SAMPLES or p.scale_grp != g.path:
                return []
            p.last_event = now
            return [self.move_cookie(p, True, g.path)]
        if p.last_event is not None and now - p.last_event < MIN_ADJUST_NS:
            event("4.19: a tighter target scaled within 500 ms")
        p.last_event = now
        if p.scale_grp is None or p.scale_lat > g.target:
            p.scale_lat, p.scale_grp = g.target, g.path
        return [self.move_cookie(p, False, g.path)]

    def done(self, levels: list[str], now: int, latency: int, as_root: bool) -> tuple[list[Event], list[Wake]]:
        """done_bio: per level, give the slot back, record, maybe judge, wake the head sleeper."""
        events: list[Event] = []
        wakes: list[Wake] = []
        for path in levels:
            g = self.groups[path]
            g.inflight -= 1
            if g.target:
                # Issue-as-root IO of a throttled group is charged as delay, not counted.
                if latency > 0 and not (as_root and g.depth != UNLIMITED):
                    g.window.append(latency)
                if now - g.window_start >= g.window_ns and now > g.window_start:
                    g.window_start = now
                    events += self.judge(g, now)
            wakes += self.grant(g, every=False)
        return events, wakes

    def timer(self, now: int) -> list[Event]:
        """blkiolatency_timer_fn: step up orphaned cookies, release an idle scale_grp."""
        events: list[Event] = []
        for p in self.groups.values():
            if p.child_cookie == DEFAULT or (p.last_event is not None and p.last_event >= now):
                continue
            if p.scale_grp is None:
                events.append(self.move_cookie(p, True, "timer"))
            elif p.last_event is None or now - p.last_event >= SCALE_GRP_IDLE_NS:
                events.append(("scale_grp", p.path, "timer", 0, 0, 0, None, None, p.child_cookie, p.scale_grp))
                p.scale_grp = None
        return events


# ------------------------------------------------------------------- machine


@attrs.define
class Bio:
    """A bio on its throttle walk: it holds a slot at ``levels[:pos]``; at ``levels[pos]`` it waits or was woken."""

    key: int
    blkcg: str
    levels: list[str]
    issue_as_root: bool
    fatal: bool
    pos: int = 0
    state: str = "walking"  # "waiting", "woken" (5.4: slot granted at levels[pos]) or "inflight" (every level)

    def holds(self, path: str, handoff: bool) -> bool:
        held = self.levels if self.state == "inflight" else self.levels[: self.pos + (handoff and self.state == "woken")]
        return path in held


KINDS = st.sampled_from(["normal", "normal", "normal", "meta", "fatal"])


class IolatencyMachine(RuleBasedStateMachine):
    """BlkIolatency beside IolatModel, with the contract checked on what the emulator reports."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START_NS
        self.keys = itertools.count(1)
        self.bios: dict[int, Bio] = {}
        self.queues: dict[str, list[int]] = {}  # sleepers per group, in the order they queued
        self.last_judged_move: dict[str, int] = {}  # parent -> time of its last latency-driven cookie event
        self.victim: dict[str, str] = {}  # parent -> the last scale_grp seen (its target is scale_lat)
        self.step_events: list[ScaleEvent] = []

    @initialize(
        qd=st.sampled_from([1, 2, 4, 16, 64]),
        rotational=st.booleans(),
        version=st.sampled_from(["4.19", "5.4"]),
        queue_depth=st.sampled_from([None, 1, 4, 32]),
    )
    def create(self, qd: int, rotational: bool, version: str, queue_depth: int | None) -> None:
        self.handoff = version == "5.4"
        # 4.19 blk_queue_depth(): the driver's queue_depth if it set one.
        self.qd = qd if self.handoff or queue_depth is None else queue_depth
        self.iolat = BlkIolatency(
            nr_requests=qd, rotational=rotational, limits=TARGETS, now_ns=self.now, version=version,
            queue_depth=queue_depth,
        )  # fmt: skip
        self.model = IolatModel(self.qd, not rotational, self.now, version)
        self.cookies = self.cookie_snapshot()

    # -- helpers

    def in_state(self, state: str) -> list[int]:
        return [k for k, b in self.bios.items() if b.state == state]

    def cookie_snapshot(self) -> dict[str, tuple[int, int]]:
        return {
            path: (s.scale_cookie, s.child_scale_cookie)
            for path in self.iolat.groups()
            for s in [self.iolat.statistics(path)]
        }

    def scale_lat(self, parent: str) -> int:
        """The victim's target as the contract sees it: scale_lat follows every scale_grp ever set."""
        grp = self.iolat.statistics(parent).scale_grp
        if grp is not None:
            self.victim[parent] = grp
        return target_of(self.victim.get(parent, ""))

    def apply(self, decisions: Decisions, events: list[Event], wakes: list[Wake]) -> None:
        """Compare a call's decisions with the model's, then hand the granted slots to the sleepers."""
        assert as_tuples(decisions.events) == events
        self.step_events += decisions.events
        for scale in decisions.events:
            event(f"{scale.what} {scale.direction:+d}" + (" (timer)" if scale.by == "timer" else ""))
            scale_lat = target_of(self.victim.get(scale.blkcg, ""))
            if scale.what == "scale_cookie" and scale.scale_grp is not None:
                self.victim[scale.blkcg] = scale.scale_grp  # scale_grp (and scale_lat) only change here
            last = self.last_judged_move.get(scale.blkcg)
            if scale.what == "scale_cookie" and scale.by != "timer":
                bypass = not self.handoff and target_of(scale.by) < scale_lat  # 4.19: a tighter target may
                assert last is None or self.now - last >= MIN_ADJUST_NS or bypass, "cookie moved twice within 500 ms"
                self.last_judged_move[scale.blkcg] = self.now
            elif scale.what == "scale_cookie":
                assert scale.scale_grp is None, "the timer stepped a cookie that a group owns"
            elif scale.what == "scale_grp":
                assert last is not None and self.now - last >= SCALE_GRP_IDLE_NS, "scale_grp released early"
        assert list(decisions.wakes) == wakes
        for path, key in decisions.wakes:
            queue = self.queues.get(path, [])
            assert queue[:1] == [key], f"{path}: woke {key}, queue was {queue}"
            queue.pop(0)
            if queue:
                event("woken with others still queued")
            bio = self.bios[key]
            assert (bio.state, bio.levels[bio.pos]) == ("waiting", path)
            bio.state = "woken"
        for path in {path for path, _ in decisions.wakes if self.handoff}:
            stat = self.iolat.statistics(path)
            assert stat.nr_inflight <= stat.depth, f"{path}: woke a sleeper past max_depth"

    def walk(self, bio: Bio) -> None:
        """The throttle walk from ``bio.pos`` on: follow the parent's cookie, then take a slot or queue."""
        while bio.pos < len(bio.levels):
            path = bio.levels[bio.pos]
            before = self.iolat.statistics(path)
            scale_lat = self.scale_lat(parent_of(path))
            decisions = self.iolat.check_scale_change(path, self.now)
            after = self.iolat.statistics(path)
            if after.scale_cookie < before.scale_cookie and target_of(path) and target_of(path) <= scale_lat:
                event("exempt peer followed a cookie down")
                assert (after.depth, after.use_delay) == (before.depth, before.use_delay), f"{path} is exempt"
            self.apply(decisions, *self.model.follow(path))
            forced = bio.issue_as_root or bio.fatal
            verdict = self.iolat.iolatency_throttle(
                path, bio.key, issue_as_root=bio.issue_as_root, fatal_signal_pending=bio.fatal
            )
            assert (verdict.wait, verdict.schedule_throttle) == self.model.throttle(path, bio.key, forced)
            queue = self.queues.setdefault(path, [])
            if not forced:
                assert verdict.wait or not queue, f"{path}: a newcomer overtook a sleeper"
                assert verdict.wait or after.nr_inflight < after.depth, f"{path}: admitted past max_depth"
            if verdict.wait:
                queue.append(bio.key)
                bio.state = "waiting"
                return
            bio.pos += 1
        bio.state = "inflight"

    # -- rules

    @rule(blkcg=st.sampled_from(CGROUPS), kinds=st.lists(KINDS, min_size=1, max_size=3))
    def submit_some(self, blkcg: str, kinds: list[str]) -> None:
        """Bios of one group arrive together and stay in flight (or queue)."""
        for kind in kinds:
            self.submit(blkcg, kind)

    def submit(self, blkcg: str, kind: str) -> None:
        levels = self.iolat.levels(blkcg, now_ns=self.now)
        assert levels == self.model.levels(blkcg, self.now)
        bio = Bio(next(self.keys), blkcg, levels, issue_as_root=kind == "meta", fatal=kind == "fatal")
        self.bios[bio.key] = bio
        self.walk(bio)

    @rule(blkcg=st.sampled_from(CGROUPS), latency=st.sampled_from(LATENCIES), gap=st.sampled_from(GAPS))
    def io(self, blkcg: str, latency: int, gap: int) -> None:
        """After *gap*, one bio submitted and, if nothing throttles it, completed after *latency*."""
        self.now += gap
        self.submit(blkcg, "normal")
        key = max(self.bios)
        if self.bios[key].state == "inflight":
            self.now += latency
            self.finish(key, latency)

    @rule(blkcg=st.sampled_from(TARGETED), latency=st.sampled_from(LATENCIES), n=st.sampled_from([1, 3, 6, 12]))
    def window(self, blkcg: str, latency: int, n: int) -> None:
        """A targeted group does *n* IOs of one latency, evenly over one window (so the window closes)."""
        for _ in range(n):
            self.io(blkcg, latency, self.model.groups[blkcg].window_ns // n)

    @precondition(lambda self: self.in_state("woken"))
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        """A woken sleeper runs again and goes on to the next level (4.19: if it gets the slot now)."""
        bio = self.bios[data.draw(st.sampled_from(self.in_state("woken")), label="bio")]
        if not self.handoff:
            path = bio.levels[bio.pos]
            got = self.iolat.iolatency_retry(path, bio.key)
            assert got == self.model.retry(path, bio.key)
            if not got:
                event("4.19: the woken waiter lost its slot and queued again")
                bio.state = "waiting"
                self.queues.setdefault(path, []).append(bio.key)
                return
        bio.pos += 1
        self.walk(bio)

    @precondition(lambda self: self.in_state("inflight"))
    @rule(data=st.data(), latency=st.sampled_from(LATENCIES))
    def complete(self, data: st.DataObject, latency: int) -> None:
        self.finish(data.draw(st.sampled_from(self.in_state("inflight")), label="bio"), latency)

    def finish(self, key: int, latency: int) -> None:
        bio = self.bios.pop(key)
        decisions = self.iolat.done_bio(
            bio.blkcg, now_ns=self.now, issue_ns=self.now - latency, issue_as_root=bio.issue_as_root
        )
        self.apply(decisions, *self.model.done(bio.levels, self.now, latency, bio.issue_as_root))

    @precondition(lambda self: self.handoff and self.in_state("woken"))
    @rule(data=st.data())
    def sleeper_gone(self, data: st.DataObject) -> None:
        """A woken sleeper is gone before it runs: iolat_cleanup gives back each slot it holds (5.4)."""
        bio = self.bios.pop(data.draw(st.sampled_from(self.in_state("woken")), label="bio"))
        for path in reversed(bio.levels[: bio.pos + 1]):
            self.apply(self.iolat.iolat_cleanup(path), [], self.model.release(path))

    @rule(delta=st.sampled_from(DELTAS), run_timer=st.booleans())
    def advance(self, delta: int, run_timer: bool) -> None:
        self.now += delta
        if run_timer:
            self.apply(Decisions(events=tuple(self.iolat.timer_fn(self.now))), self.model.timer(self.now), [])

    # -- invariants

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.iolat.groups() == list(self.model.groups)
        for path, g in self.model.groups.items():
            s = self.iolat.statistics(path)
            assert (s.min_lat_nsec, s.cur_win_nsec) == (g.target, g.window_ns)
            slots = (s.depth, s.use_delay, s.nr_inflight, s.nr_waiters)
            assert slots == (g.depth, g.use_delay, g.inflight, len(g.queue))
            assert (s.scale_cookie, s.child_scale_cookie, s.scale_grp) == (g.cookie, g.child_cookie, g.scale_grp)
            assert s.nr_samples == g.nr_samples
            if self.model.ssd:
                assert (s.missed, s.total) == (sum(lat >= g.target for lat in g.window), len(g.window))

    @invariant()
    def slots_and_sleepers(self) -> None:
        for path in self.iolat.groups():
            s = self.iolat.statistics(path)
            assert s.nr_inflight == sum(b.holds(path, self.handoff) for b in self.bios.values())
            assert s.nr_waiters == len(self.queues.get(path, []))
            assert s.depth == UNLIMITED or 1 <= s.depth <= self.qd
            if s.nr_waiters and s.nr_inflight < s.depth:
                woken = [b for b in self.bios.values() if b.state == "woken" and b.levels[b.pos] == path]
                assert not self.handoff and woken, f"{path}: a sleeper is left behind with a slot free"
            assert not s.use_delay or s.depth == 1, f"{path}: use_delay at max_depth {s.depth}"
            if s.scale_cookie == DEFAULT:
                assert (s.depth, s.use_delay, s.nr_waiters) == (UNLIMITED, 0, 0), f"{path}: throttled at default"

    @invariant()
    def cookies_move_only_by_the_kernels_amounts(self) -> None:
        floor = DEFAULT - 2 * self.qd
        down, up = max(self.qd // 4, 1), max(self.qd // 16, 1)
        for scale in self.step_events:
            if scale.what == "scale_cookie":
                # Within qd of default: qd/4 down, qd/16 up (clamped); further out: by 1, and no lower than 2 qd.
                below = DEFAULT - scale.old
                if scale.direction < 0:
                    expected = -down if below <= self.qd else -1 if below < 2 * self.qd else 0
                else:
                    expected = min(below, up) if below <= self.qd else 1
                assert scale.new - scale.old == expected, f"{scale.blkcg}: cookie step {scale.new - scale.old}"
        reported = {e.blkcg: e.new for e in self.step_events if e.what == "scale_cookie"}
        cookies = self.cookie_snapshot()
        for path, (own, child) in cookies.items():
            assert floor <= own <= DEFAULT and floor <= child <= DEFAULT
            if child != self.cookies.get(path, (DEFAULT, DEFAULT))[1]:
                assert reported.get(path) == child, f"{path}: cookie moved without a scale event"
        self.cookies = cookies
        self.step_events = []


def test_model_restates_the_module_constants() -> None:
    """The constants the model restates from the kernel are the ones the emulator uses."""
    assert (blk_iolatency.DEFAULT_SCALE_COOKIE, blk_iolatency.UINT_MAX) == (DEFAULT, UNLIMITED)
    assert (blk_iolatency_rules.BLKIOLATENCY_MIN_ADJUST_TIME, blk_iolatency.SCALE_GRP_IDLE_NSEC) == (
        MIN_ADJUST_NS,
        SCALE_GRP_IDLE_NS,
    )
    assert blk_iolatency_rules.BLKIOLATENCY_MIN_GOOD_SAMPLES == MIN_GOOD_SAMPLES


TestIolatencyMachine = IolatencyMachine.TestCase
TestIolatencyMachine.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
