"""Tests for actors/block/blk_throttle.py: io.max budgets, held bios, the pending timer and kthrotld."""

from __future__ import annotations

import itertools

import pytest

import emu
from actors.block.bio import Bio
from actors.block.blk_throttle import JIFFY_NS, THROTL_SLICE, BlkThrottle, parse_io_max
from actors.block.blkdev import BlockDevice, blk_throtl_dispatch_work_fn, submit_bio
from actors.kernel_types import ReqOp
from emu import NSEC_PER_MSEC, NSEC_PER_SEC

MS = NSEC_PER_MSEC


class FakeTask:
    """A minimal ``Current`` (see actors/block/blkdev.py)."""

    def __init__(self, actor: emu.Actor, pid: int, blkcg: str) -> None:
        self.actor, self.comm, self.pid, self.blkcg = actor, actor.name, pid, blkcg
        self.throttle_queue = None
        self.plug = None

    def fatal_signal_pending(self) -> bool:
        return False

    def account_sleep(self, kind: str, ns: int) -> None:
        pass


class NullLog:
    """A trace log that keeps nothing."""

    def info(self, event: str, **fields: object) -> None:
        pass


class Harness:
    """One device with io.max limits, the kthrotld worker, and submitters that record completion times."""

    def __init__(self, limits: dict[str, str]) -> None:
        self.engine = emu.Engine(seed=3, horizon_ns=60 * NSEC_PER_SEC)
        io_max = {path: parse_io_max(text) for path, text in limits.items()}
        self.dev = BlockDevice(self.engine, io_max=io_max, base_latency_ns=100_000)
        self.ids = itertools.count(1)
        self.completed: dict[int, int] = {}
        self.returned: dict[int, int] = {}

        async def kthrotld(actor: emu.Actor) -> None:
            await blk_throtl_dispatch_work_fn(FakeTask(actor, 2, ""), self.dev)

        self.engine.spawn("kthrotld", kthrotld, daemon=True)

    def submitter(self, name: str, blkcg: str, n: int, op: ReqOp = ReqOp.READ, nr_bytes: int = 4096) -> None:
        done = emu.WaitQueue(self.engine, f"{name} completions")
        mine: list[int] = []

        def end_io(bio: Bio) -> None:
            self.completed[bio.bio_id] = self.engine.now_ns
            if all(i in self.completed for i in mine):
                done.wake(name)

        async def main(actor: emu.Actor) -> None:
            current = FakeTask(actor, 10, blkcg)
            for _ in range(n):
                bio = Bio(bio_id=next(self.ids), op=op, nr_bytes=nr_bytes, blkcg=blkcg, bi_disk=self.dev, bi_end_io=end_io)
                mine.append(bio.bio_id)
                await submit_bio(current, bio)
                self.returned[bio.bio_id] = actor.now_ns
            if not all(i in self.completed for i in mine):
                await done.wait(actor, name)  # a daemon device and worker do not keep the run alive

        self.engine.spawn(name, main)

    def run(self) -> None:
        self.engine.run()


def test_riops_spreads_reads_over_the_slice_and_never_sleeps_the_submitter() -> None:
    """riops=10: one read per 100 ms slice after the first; submit_bio returns at once for every bio."""
    h = Harness({"batch": "8:0 riops=10"})
    h.submitter("batch", "batch", 20)
    h.run()
    assert set(h.returned.values()) == {0}  # the submitter is never put to sleep
    done = sorted(h.completed.values())
    assert len(done) == 20
    assert done[0] < MS  # the first read fits the fresh slice's budget
    assert 1.8 * NSEC_PER_SEC <= done[-1] <= 2.1 * NSEC_PER_SEC  # 19 more at 10/s
    assert all(t % JIFFY_NS < MS for t in done[1:])  # dispatched on timer ticks (+ service time)
    stats = h.dev.throtl.statistics()
    assert (stats.nr_queued, stats.queued_now) == (19, 0)
    assert h.dev.statistics().nr_submitted == 20  # traced once each: when they pass


def test_rbps_waits_for_the_bytes_beyond_the_budget() -> None:
    """rbps=1 MiB/s and 256 KiB reads: four per second, the budget refilled by slice trimming."""
    h = Harness({"batch": f"8:0 rbps={1024 * 1024}"})
    h.submitter("batch", "batch", 8, nr_bytes=256 * 1024)
    h.run()
    done = sorted(h.completed.values())
    assert 1.6 * NSEC_PER_SEC <= done[-1] <= 2.1 * NSEC_PER_SEC


def test_limits_are_per_direction_and_per_group() -> None:
    """Writes under riops only, and an unlimited sibling group, pass straight through."""
    h = Harness({"batch": "8:0 riops=10"})
    h.submitter("writer", "batch", 10, op=ReqOp.WRITE)
    h.submitter("other", "service", 10)
    h.run()
    assert max(h.completed.values()) < 10 * MS
    assert h.dev.throtl.statistics().nr_queued == 0


def test_a_parent_limit_holds_its_children() -> None:
    """A limit on "w" throttles bios of "w/a" and "w/b" together: 20 reads at riops=10 take ~2 s."""
    h = Harness({"w": "8:0 riops=10"})
    h.submitter("a", "w/a", 10)
    h.submitter("b", "w/b", 10)
    h.run()
    assert 1.8 * NSEC_PER_SEC <= max(h.completed.values()) <= 2.1 * NSEC_PER_SEC


def test_a_bio_behind_a_queued_one_waits_even_if_it_would_fit() -> None:
    """FIFO per group and direction: once one read is held, later reads queue behind it."""
    engine = emu.Engine(seed=1, horizon_ns=NSEC_PER_SEC)
    throtl = BlkThrottle(engine, dev="8:0", limits={"g": parse_io_max("8:0 rbps=409600")}, log=NullLog())
    big = Bio(bio_id=1, op=ReqOp.READ, nr_bytes=1024 * 1024, blkcg="g")
    small = Bio(bio_id=2, op=ReqOp.READ, nr_bytes=512, blkcg="g")
    assert throtl.blk_throtl_bio(big) is True
    assert throtl.blk_throtl_bio(small) is True
    assert throtl.statistics().queued_now == 2


def test_other_devices_limits_and_all_max_lines_are_ignored() -> None:
    engine = emu.Engine(seed=1, horizon_ns=NSEC_PER_SEC)
    limits = {"a": parse_io_max("8:16 riops=1"), "b": parse_io_max("8:0 riops=max")}
    throtl = BlkThrottle(engine, dev="8:0", limits=limits, log=NullLog())
    assert not throtl.active
    assert throtl.blk_throtl_bio(Bio(bio_id=1, op=ReqOp.READ, nr_bytes=4096, blkcg="a")) is False


@pytest.mark.parametrize("text", ["riops=10", "8:0 riops=0", "8:0 iops=5", "8:0 rbps=1.5", "8:0 riops"])
def test_bad_io_max_lines_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_io_max(text)


def test_io_max_prints_as_the_kernel_does() -> None:
    assert str(parse_io_max("8:0 wiops=7 rbps=1024")) == "8:0 rbps=1024 wbps=max riops=max wiops=7"
    assert THROTL_SLICE * JIFFY_NS == 100 * MS
