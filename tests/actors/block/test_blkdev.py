"""Tests for actors/block/blkdev.py through a real emu.Engine: submit_bio, completion, io.latency sleeps."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import emu
from actors.block.bio import Bio
from actors.block.blk_iolatency import UINT_MAX
from actors.block.blk_dev_model import DeviceParams
from actors.block.blk_merge import BLK_MAX_REQUEST_COUNT
from actors.block.blkdev import BlockDevice, blk_finish_plug, blk_start_plug, blkcg_maybe_throttle_current, submit_bio
from actors.kernel_types import BlkStatus, ReqFlag, ReqOp
from emu import NSEC_PER_MSEC

MS = NSEC_PER_MSEC
PROT, NOISY = "w/prot", "w/noisy"


class FakeTask:
    """A minimal ``Current``: the task protocol blkdev relies on."""

    def __init__(self, actor: emu.Actor, pid: int, blkcg: str) -> None:
        self.actor = actor
        self.comm = actor.name
        self.pid = pid
        self.blkcg = blkcg
        self.throttle_queue: BlockDevice | None = None
        self.plug = None
        self.fatal = False
        self.slept: dict[str, int] = {"throttle": 0, "io": 0, "delay": 0}

    def fatal_signal_pending(self) -> bool:
        return self.fatal

    def account_sleep(self, kind: str, ns: int) -> None:
        self.slept[kind] += ns


class Harness:
    """An engine, one device, and helpers to submit bios and wait for them."""

    def __init__(self, **dev_kwargs: Any) -> None:
        self.engine = emu.Engine(seed=7, horizon_ns=30_000 * MS)
        self.dev = BlockDevice(self.engine, **dev_kwargs)
        self.ids = itertools.count(1)
        self.done: dict[int, Bio] = {}
        self.io_wait = emu.WaitQueue(self.engine, "bio completion")
        self.tasks: dict[str, FakeTask] = {}

    def bio(self, blkcg: str, flags: int = 0, op: ReqOp = ReqOp.READ, sector: int | None = None) -> Bio:
        def end_io(bio: Bio) -> None:
            self.done[bio.bio_id] = bio
            self.io_wait.wake(bio.bio_id)

        return Bio(bio_id=next(self.ids), op=op, flags=flags, nr_bytes=4096, blkcg=blkcg, bi_disk=self.dev,
                   bi_end_io=end_io, sector=sector)  # fmt: skip

    async def wait_io(self, current: FakeTask, bio: Bio) -> None:
        if bio.bio_id not in self.done:
            start = current.actor.now_ns
            await self.io_wait.wait(current.actor, bio.bio_id)
            current.account_sleep("io", current.actor.now_ns - start)

    def spawn(self, name: str, blkcg: str, program: Any) -> None:
        async def main(actor: emu.Actor) -> None:
            current = FakeTask(actor, len(self.tasks) + 1, blkcg)
            self.tasks[name] = current
            await program(current)

        self.engine.spawn(name, main)

    def records(self, event: str | None = None) -> list[dict]:
        return [r for r in self.engine.trace.records() if event is None or r["event"] == event]


def contended(*, noisy_target: str | None = None, qd: int = 4, **kwargs: Any) -> Harness:
    """Protected reads take 10 ms against a 2 ms target; noisy reads take 5 ms."""
    limits = {PROT: "8:0 target=2000"}
    if noisy_target is not None:
        limits[NOISY] = noisy_target

    def service_time(bio: Bio) -> int:
        return 10 * MS if bio.blkcg == PROT else 5 * MS

    return Harness(nr_requests=qd, parallelism=qd, io_latency=limits, service_time=service_time, **kwargs)


def protected_reader(h: Harness, until_ns: int):
    async def program(current: FakeTask) -> None:
        while current.actor.now_ns < until_ns:
            bio = h.bio(PROT)
            await submit_bio(current, bio)
            await h.wait_io(current, bio)

    return program


def test_submit_and_complete_trace_and_statistics() -> None:
    """A bio is queued, issued and completed with tracepoint-named records, then bi_end_io runs."""
    h = Harness(base_latency_ns=100_000, bandwidth_bytes_per_s=4096 * 10_000)

    async def program(current: FakeTask) -> None:
        bio = h.bio("a")
        await submit_bio(current, bio)
        assert current.actor.now_ns == 0  # returned without waiting for the IO
        await h.wait_io(current, bio)
        assert bio.complete_ns == 200_000 and bio.status == BlkStatus.OK

    h.spawn("t1", "a", program)
    h.engine.run()
    assert [r["event"] for r in h.records()] == ["block_bio_queue", "block_rq_issue", "block_rq_complete"]
    complete = h.records("block_rq_complete")[0]
    assert complete["ts"] == 200_000
    assert (complete["dev"], complete["bio"], complete["op"], complete["nr_sector"], complete["error"]) == (
        "8:0", 1, "READ", 8, 0,
    )  # fmt: skip
    stats = h.dev.statistics()
    assert (stats.nr_submitted, stats.nr_completed, stats.in_flight, stats.queued) == (1, 1, 0, 0)


def test_requests_beyond_nr_requests_wait_fifo_for_a_tag() -> None:
    """With 2 tags, the third bio is issued only when the first completes."""
    h = Harness(nr_requests=2, parallelism=2, service_time=lambda bio: 10 * MS)

    async def program(current: FakeTask) -> None:
        bios = [h.bio("a") for _ in range(3)]
        for bio in bios:
            await submit_bio(current, bio)
        for bio in bios:
            await h.wait_io(current, bio)

    h.spawn("t1", "a", program)
    h.engine.run()
    assert [(r["bio"], r["ts"]) for r in h.records("block_rq_issue")] == [(1, 0), (2, 0), (3, 10 * MS)]


def test_bio_error_hook_fails_a_read() -> None:
    """The injection hook turns a read into BlkStatus.IOERR, visible in the trace and in nr_errors."""
    h = Harness(bio_error=lambda bio: bio.bio_id == 2)

    async def program(current: FakeTask) -> None:
        for _ in range(2):
            bio = h.bio("a")
            await submit_bio(current, bio)
            await h.wait_io(current, bio)

    h.spawn("t1", "a", program)
    h.engine.run()
    assert [r["error"] for r in h.records("block_rq_complete")] == [0, int(BlkStatus.IOERR)]
    assert h.dev.statistics().nr_errors == 1


def test_bio_error_hook_covers_writes_and_runs_at_completion() -> None:
    """The same hook fails WRITE bios too; it is asked once per bio, at completion time and in
    completion order, and a failed request still took its full service time."""
    asked: list[tuple[int, str, int, int]] = []

    def bio_error(bio: Bio) -> bool:
        asked.append((bio.bio_id, bio.op.name, h.engine.now_ns, bio.complete_ns))
        return bio.op == ReqOp.WRITE

    h = Harness(service_time=lambda bio: 3 * MS, bio_error=bio_error)
    statuses: dict[int, BlkStatus] = {}

    async def program(current: FakeTask) -> None:
        for op in (ReqOp.READ, ReqOp.WRITE, ReqOp.READ, ReqOp.WRITE):
            bio = h.bio("a", op=op)
            await submit_bio(current, bio)
            await h.wait_io(current, bio)
            statuses[bio.bio_id] = bio.status

    h.spawn("t1", "a", program)
    h.engine.run()
    # Asked at each completion (3, 6, 9, 12 ms), before the bio's completion time was set.
    assert asked == [(1, "READ", 3 * MS, 0), (2, "WRITE", 6 * MS, 0), (3, "READ", 9 * MS, 0), (4, "WRITE", 12 * MS, 0)]
    assert statuses == {1: BlkStatus.OK, 2: BlkStatus.IOERR, 3: BlkStatus.OK, 4: BlkStatus.IOERR}
    completes = h.records("block_rq_complete")
    assert [(r["op"], r["error"], r["lat_ns"]) for r in completes] == [
        ("READ", 0, 3 * MS), ("WRITE", int(BlkStatus.IOERR), 3 * MS),
        ("READ", 0, 3 * MS), ("WRITE", int(BlkStatus.IOERR), 3 * MS),
    ]  # fmt: skip
    stats = h.dev.statistics()
    assert (stats.nr_completed, stats.nr_errors, stats.in_flight) == (4, 2, 0)


def test_jitter_is_seeded_and_deterministic() -> None:
    """Two runs with the same seed produce the same trace; jitter stays within bounds."""
    digests = []
    for _ in range(2):
        h = Harness(base_latency_ns=1_000_000, bandwidth_bytes_per_s=1 << 40, jitter_permille=200)

        async def program(current: FakeTask, h: Harness = h) -> None:
            for _ in range(20):
                bio = h.bio("a")
                await submit_bio(current, bio)
                await h.wait_io(current, bio)

        h.spawn("t1", "a", program)
        digests.append(h.engine.run().trace_digest)
        lats = [r["lat_ns"] for r in h.records("block_rq_complete")]
        assert all(800_000 <= lat <= 1_200_000 for lat in lats) and len(set(lats)) > 1
    assert digests[0] == digests[1]


@pytest.mark.parametrize("version", ["4.19", "5.4"])
def test_submitter_sleeps_in_rq_qos_wait(version: str) -> None:
    """Behaviour 14: once its depth is 1, a noisy submitter blocks inside submit_bio until a completion.

    Under both rule sets: 5.4 hands the woken submitter its slot, 4.19 lets it take one when it runs.
    """
    h = contended(iolatency=version)
    returns: list[tuple[int, int, int]] = []  # (bio, queued at, submit_bio returned at)

    async def noisy(current: FakeTask) -> None:
        while current.actor.now_ns < 3000 * MS:
            bio = h.bio(NOISY)
            await submit_bio(current, bio)
            returns.append((bio.bio_id, bio.queue_ns, current.actor.now_ns))
            await current.actor.sleep(1 * MS)

    h.spawn("prot", PROT, protected_reader(h, 3000 * MS))
    h.spawn("noisy", NOISY, noisy)
    h.engine.run()
    assert h.dev.iolatency_statistics(NOISY).depth == 1
    throttles = h.records("rq_qos_throttle")
    dones = h.records("rq_qos_throttle_done")
    assert throttles and len(dones) == len(throttles)
    first, first_done = throttles[0], dones[0]
    assert first["blkcg"] == NOISY and first["inflight"] >= first["max_depth"]
    # The task stayed inside submit_bio for the whole wait, and was woken by a completion.
    bio, queued, returned = next(r for r in returns if r[0] == first["bio"])
    assert returned - queued == first_done["waited_ns"] > 0
    completions = {r["ts"] for r in h.records("block_rq_complete")}
    assert first_done["ts"] in completions
    noisy_task = h.tasks["noisy"]
    assert noisy_task.slept["throttle"] == sum(d["waited_ns"] for d in dones)
    # Depth 1: never more than one noisy bio on the device at once.
    issued = [r for r in h.records() if r["event"] in ("block_rq_issue", "block_rq_complete") and r["blkcg"] == NOISY]
    busy = peak = 0
    for r in issued:
        if r["ts"] > 2000 * MS:
            busy += 1 if r["event"] == "block_rq_issue" else -1
            peak = max(peak, busy)
    assert peak <= 1
    # The protected group is never throttled.
    assert all(r["blkcg"] != PROT for r in throttles)
    scale = [r for r in h.records("iolatency_scale") if r["what"] == "max_depth"]
    assert [(r["old"], r["new"]) for r in scale] == [(UINT_MAX, 2), (2, 1)]


def test_fatal_signal_skips_the_throttle() -> None:
    """A task with a fatal signal pending takes an io.latency slot without sleeping in rq_qos_wait.

    (It may still sleep for a request tag: blk_mq_get_tag's wait is not killable.)
    """
    h = contended()

    async def noisy(current: FakeTask) -> None:
        while current.actor.now_ns < 2000 * MS:
            await submit_bio(current, h.bio(NOISY))
            await current.actor.sleep(1 * MS)
        current.fatal = True
        before = len(h.records("rq_qos_throttle"))
        for _ in range(5):
            await submit_bio(current, h.bio(NOISY))
        assert len(h.records("rq_qos_throttle")) == before

    h.spawn("prot", PROT, protected_reader(h, 2100 * MS))
    h.spawn("noisy", NOISY, noisy)
    h.engine.run()


def test_return_to_user_pays_delay_capped_250ms() -> None:
    """Behaviour 15: meta bios of a use_delay group charge delay; return to user sleeps min(delay, 250 ms)."""
    h = contended(noisy_target="target=50000")  # 50 ms
    paid: list[int] = []

    async def noisy(current: FakeTask) -> None:
        while h.dev.iolat.use_delay(NOISY) == 0:
            await submit_bio(current, h.bio(NOISY))
            await current.actor.sleep(1 * MS)
        assert h.dev.blk_cgroup_congested(NOISY)
        for _ in range(10):  # REQ_META: never waits, each 5 ms instead of 50 ms → 45 ms delay
            bio = h.bio(NOISY, ReqFlag.META)
            start = current.actor.now_ns
            await submit_bio(current, bio)
            assert current.actor.now_ns == start
            await h.wait_io(current, bio)
        assert h.dev.iolatency_statistics(NOISY).delay_nsec >= 250 * MS
        assert current.throttle_queue is h.dev
        start = current.actor.now_ns
        paid.append(await blkcg_maybe_throttle_current(current))
        assert current.actor.now_ns - start == paid[0]
        assert current.throttle_queue is None
        paid.append(await blkcg_maybe_throttle_current(current))  # not marked again: no sleep

    h.spawn("prot", PROT, protected_reader(h, 6000 * MS))
    h.spawn("noisy", NOISY, noisy)
    h.engine.run()
    assert paid == [250 * MS, 0]
    assert h.tasks["noisy"].slept["delay"] == 250 * MS
    rec = h.records("blkcg_maybe_throttle_current")
    assert [(r["blkcg"], r["delay_ns"]) for r in rec] == [(NOISY, 250 * MS)]


def test_io_latency_timer_runs_only_while_io_flows() -> None:
    """The 1 s timer is armed by submissions and stops once IO stops."""
    h = contended()

    async def short(current: FakeTask) -> None:
        bio = h.bio(PROT)
        await submit_bio(current, bio)
        await h.wait_io(current, bio)
        assert h.dev.statistics().timer_pending
        await current.actor.sleep(1500 * MS)
        assert not h.dev.statistics().timer_pending

    h.spawn("prot", PROT, short)
    h.engine.run()


def test_submitter_sleeps_for_a_tag_when_all_are_in_flight() -> None:
    """blk_mq_get_tag: with every one of nr_requests tags in flight, submit_bio sleeps until a completion frees one."""
    h = Harness(nr_requests=2, parallelism=2, service_time=lambda bio: 10 * MS)
    slept: list[int] = []

    async def program(current: FakeTask) -> None:
        bios = [h.bio("") for _ in range(3)]
        await submit_bio(current, bios[0])
        await submit_bio(current, bios[1])
        assert current.actor.now_ns == 0
        await submit_bio(current, bios[2])  # no tag left: sleeps until the first completes
        slept.append(current.actor.now_ns)
        await h.wait_io(current, bios[2])

    h.spawn("submitter", "", program)
    h.engine.run()
    assert slept == [10 * MS]
    assert [r["bio"] for r in h.records("block_sleeprq")] == [3]
    assert h.dev.statistics().in_flight == 0


# -- merging and plugging (blk_mq_make_request's order) -------------------------------


@pytest.mark.parametrize("contiguous", [True, False])
def test_a_merged_bio_is_never_throttled(contiguous: bool) -> None:
    """With the noisy group held to depth 1, a bio that back-merges into a plugged request skips
    rq_qos_throttle (and takes no tag); the same bio at a distant sector sleeps in the throttle."""
    h = contended()
    seen: dict[str, int] = {}

    async def noisy(current: FakeTask) -> None:
        while current.actor.now_ns < 2500 * MS:  # io.latency scales the noisy group down to depth 1
            bio = h.bio(NOISY)
            await submit_bio(current, bio)
            await current.actor.sleep(1 * MS)
        assert h.dev.iolatency_statistics(NOISY).depth == 1
        blk_start_plug(current)
        first = h.bio(NOISY, sector=80_000)
        second = h.bio(NOISY, sector=80_008 if contiguous else 9_000_000)
        await submit_bio(current, first)
        await submit_bio(current, second)
        blk_finish_plug(current)
        seen.update(first=first.bio_id, second=second.bio_id)
        await h.wait_io(current, second)

    h.spawn("prot", PROT, protected_reader(h, 3000 * MS))
    h.spawn("noisy", NOISY, noisy)
    h.engine.run()
    second_events = [r["event"] for r in h.records() if r.get("bio") == seen["second"]]
    throttled = [r for r in h.records("rq_qos_throttle") if r["bio"] == seen["second"]]
    if contiguous:
        assert second_events[:2] == ["block_bio_queue", "block_bio_backmerge"]
        assert not throttled and "block_sleeprq" not in second_events
        issue = next(r for r in h.records("block_rq_issue") if r["bio"] == seen["first"])
        assert (issue["nr_bios"], issue["nr_sector"]) == (2, 16)
        assert "block_bio_complete" in second_events  # completed with the request it joined
    else:
        assert throttled and "block_bio_backmerge" not in second_events
    assert h.dev.statistics().nr_merged == (1 if contiguous else 0)


def test_a_bio_merges_into_a_request_waiting_for_dispatch_without_a_tag() -> None:
    """Hardware full (one slot), both tags taken: a bio contiguous with the request on the dispatch
    list merges into it (blk_mq_sched_bio_merge) instead of sleeping for a tag."""
    params = DeviceParams(kind="ssd", queue_depth=1, parallelism=1, rotational=False, latency_ns=10 * MS, bandwidth=1 << 40)
    h = Harness(nr_requests=2, params=params)

    async def program(current: FakeTask) -> None:
        a, b, c = h.bio("a", sector=0), h.bio("a", sector=1000), h.bio("a", sector=1008)
        for bio in (a, b):
            await submit_bio(current, bio)
        await current.actor.sleep(1 * MS)  # the device has issued a and queued b
        await submit_bio(current, c)
        assert current.actor.now_ns == 1 * MS  # no sleep for a tag
        await h.wait_io(current, c)
        assert c.complete_ns == b.complete_ns and b.complete_ns // 1000 == 20_000  # microseconds

    h.spawn("t1", "a", program)
    h.engine.run()
    assert [r["bio"] for r in h.records("block_bio_backmerge")] == [3]
    assert not h.records("block_sleeprq")
    assert [(r["bio"], r["nr_bios"]) for r in h.records("block_rq_issue")] == [(1, 1), (2, 2)]
    stats = h.dev.statistics()
    assert (stats.nr_submitted, stats.nr_merged, stats.nr_requests_done, stats.nr_completed) == (3, 1, 2, 3)


def test_the_plug_holds_requests_until_unplug_or_sixteen() -> None:
    """Plugged requests reach the device at blk_finish_plug, or 16 at a time (BLK_MAX_REQUEST_COUNT)."""
    h = Harness(nr_requests=64, parallelism=64)
    issued_at_unplug: list[int] = []

    async def program(current: FakeTask) -> None:
        blk_start_plug(current)
        for i in range(BLK_MAX_REQUEST_COUNT + 2):
            await submit_bio(current, h.bio("a", sector=i * 1000))  # none contiguous
        await current.actor.sleep(1 * MS)
        issued_at_unplug.append(len(h.records("block_rq_issue")))
        blk_finish_plug(current)
        await current.actor.sleep(1 * MS)

    h.spawn("t1", "a", program)
    h.engine.run()
    assert issued_at_unplug == [BLK_MAX_REQUEST_COUNT]
    assert [r["depth"] for r in h.records("block_unplug")] == [BLK_MAX_REQUEST_COUNT, 2]
    assert len(h.records("block_rq_issue")) == BLK_MAX_REQUEST_COUNT + 2


def test_hardware_queue_depth_is_separate_from_nr_requests() -> None:
    """64 tags but 2 hardware slots: the third request waits on the dispatch list, not for a tag."""
    params = DeviceParams(kind="ssd", queue_depth=2, parallelism=8, rotational=False, latency_ns=1 * MS, bandwidth=1 << 40)
    h = Harness(nr_requests=64, params=params)

    async def program(current: FakeTask) -> None:
        bios = [h.bio("a", sector=i * 1000) for i in range(3)]
        for bio in bios:
            await submit_bio(current, bio)
        for bio in bios:
            await h.wait_io(current, bio)
        assert [bio.complete_ns // 1000 for bio in bios] == [1000, 1000, 2000]  # microseconds

    h.spawn("t1", "a", program)
    h.engine.run()
    assert not h.records("block_sleeprq")
